"""Peak memory of a few training steps against the planner's memory model, measured in a fresh
process (peak RSS is per process). Used by tests/test_plan.py and benchmarks/llama_memory_model.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def measure_peak_memory(overrides: list[str], output_root: str, steps: int = 3) -> dict:
    """RSS growth from just before the model is built to the peak over ``steps`` training
    steps, beside the planner's fp32 estimate for the worst pipeline stage."""
    code = ("import json, sys; sys.path.insert(0, sys.argv[4]); from memory_probe import "
            "_peak_body; print('RESULT', json.dumps(_peak_body(json.loads(sys.argv[1]), "
            "sys.argv[2], int(sys.argv[3]))))")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(overrides), output_root,
                           str(steps), HERE], capture_output=True, text=True, check=True)
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def _peak_body(overrides: list[str], output_root: str, steps: int) -> dict:
    import resource

    import psutil
    import torch
    from omegaconf import OmegaConf

    from harness import make_workload
    from conftest import compose
    from pinchpoint.runner.validation import validate
    from pinchpoint.parallel.context import RankContext
    from pinchpoint.workloads.llama31 import plan
    cfg = compose(overrides, output_root)
    validate(cfg)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    w = make_workload(cfg, RankContext())
    w.prepare_data()
    w.open_data()
    batch = torch.from_numpy(w.train.batch(range(w.arch.global_batch_size)))  # before baseline
    _warm_up(batch)   # thread pools, kernels, autograd engine: runtime cost, not the model's
    base = psutil.Process().memory_info().rss
    # Reset the kernel's peak-RSS mark so the peak of data generation above is not counted.
    reset = _reset_peak_rss()
    w.build()
    for _ in range(steps):
        w.forward_backward(batch)
        w.optimizer_step()
    peak = _peak_rss() if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    lay = plan.layout_from(cfg)
    lay.precision = "fp32"
    model = plan.memory_per_device(OmegaConf.to_object(cfg.model[cfg.model.scale]), lay)
    worst = model["worst_stage"]
    return {"measured_bytes": peak - base, "modelled_bytes": worst["total_bytes"],
            "modelled": {k: v for k, v in worst.items() if k.endswith("_bytes")},
            "error": worst["total_bytes"] / (peak - base) - 1}


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5\n")  # resets VmHWM (Linux >= 4.0)
        return True
    except OSError:
        return False


def _peak_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM missing from /proc/self/status")


def _warm_up(batch) -> None:
    import torch
    import torch.nn.functional as F

    from pinchpoint.workloads.llama31.model import Llama, LlamaArgs
    tiny = Llama(LlamaArgs(dim=16, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=32,
                           vocab_size=int(batch.max()) + 1, max_seq_len=batch.shape[1]))
    opt = torch.optim.AdamW(tiny.parameters())
    for _ in range(2):
        x = batch[:1, :8]
        F.cross_entropy(tiny(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten()).backward()
        opt.step()
