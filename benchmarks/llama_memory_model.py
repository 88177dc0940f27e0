"""The planner's memory model against the peak memory the proxy really uses on CPU.

    python benchmarks/llama_memory_model.py

Each case runs in a fresh process: RSS growth from just before the model is built (after a
warm-up of torch's thread pools and kernels) to the peak over three training steps, against
the Llama planner's memory_per_device (workloads/llama31/plan.py) at fp32. The model counts
tensors (weights, gradients, AdamW state, saved activations, logits); what it leaves out
(autograd's transient buffers in backward, allocator slack) shows as a negative error.
"""
from __future__ import annotations

import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from memory_probe import measure_peak_memory  # noqa: E402  (the tests' probe, one copy)

BASE = ["model=llama31_8b", "tracking.enabled=false", "model.proxy.seq_len=512",
        "model.proxy.micro_batch_size=8", "model.proxy.global_batch_size=8",
        "model.proxy.eval_samples=64", "model.proxy.eval_every_samples=800",
        "dataset.train_tokens=300000", "dataset.validation_tokens=40000"]
CASES = {"proxy seq 512 x 8": [],
         "wider (dim 256, vocab 4096)": ["model.proxy.vocab_size=4096", "model.proxy.dim=256",
                                         "model.proxy.ffn_dim=896"],
         "recompute": ["model.proxy.recompute=true"]}


def main() -> None:
    root = tempfile.mkdtemp(prefix="llama_memory_")
    print(f"{'case':<30}{'measured MiB':>14}{'modelled MiB':>14}{'error':>9}")
    for name, extra in CASES.items():
        r = measure_peak_memory(BASE + extra, root)
        print(f"{name:<30}{r['measured_bytes'] / 2**20:>14.1f}"
              f"{r['modelled_bytes'] / 2**20:>14.1f}{r['error']:>+9.1%}")


if __name__ == "__main__":
    main()
