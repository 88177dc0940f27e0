"""Tokens/s of the Llama 3.1 8B proxy per parallel layout, side by side in one run, and where the
time goes: the communication fraction and bytes per step per kind of every collective, torch's
own included (FSDP2, TP, PP through ``profile.trace_torch_collectives()``), beside the analytic
volume (tests/test_comm_trace.py derives it).

    python benchmarks/llama_layouts.py [--steps 15]

Every layout trains the same proxy (same seed, same global batch) on ranks started as the
runner starts them (tests/harness.py), with the runner's phase marks; the first 3 steps
(warm-up) are neither timed nor traced. Layouts that need more ranks than cores oversubscribe
the CPU: on a 2-core machine the multi-rank figures measure the cost of the collectives and the
pipeline schedule, not a speed-up. The loss column shows they train the same numbers.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import harness  # noqa: E402  (the test harness: ranks started the runner's way)
import test_comm_trace as volumes  # noqa: E402

from pinchpoint.workloads.llama31.model import LlamaArgs  # noqa: E402

LAYOUTS = {"single": [], "fsdp2": ["parallel=fsdp2"], "tp2": ["parallel=tp2"],
           "pp2 (1f1b)": ["parallel=pp2"],
           "pp2 (gpipe)": ["parallel=pp2", "model.pipeline_schedule=gpipe"],
           "tp2pp2": ["parallel=tp2pp2"]}
ANALYTIC = {"fsdp2": "fsdp2", "tp2": "tp2", "pp2 (1f1b)": "pp2", "pp2 (gpipe)": "pp2",
            "tp2pp2": "tp2pp2"}
WARMUP = 3


def traced_body(cfg, ctx, steps: int) -> dict:
    """Train ``steps`` steps with the runner's phase marks; the steps after the warm-up run
    inside the collective trace, and only they are counted."""
    w = harness.ready(cfg, ctx)
    phases, profile = w.inputs.phases, w.inputs.collectives
    batches = iter(w.batches(0))
    losses: list[float] = []

    def step() -> None:
        batch = next(batches)
        phases.mark("data_wait")
        loss = w.forward_backward(batch)
        phases.mark("forward_backward")
        w.optimizer_step()
        phases.mark("optimizer")
        phases.end_step(len(losses))
        losses.append(float(loss))

    phases.begin()
    for _ in range(WARMUP):
        step()
    before = dict(phases.totals)
    profile.stats.clear()
    start = time.perf_counter()
    with profile.trace_torch_collectives():
        for _ in range(steps - WARMUP):
            step()
    seconds = time.perf_counter() - start
    w.close()
    timed = steps - WARMUP
    loop = {k: phases.totals[k] - before[k] for k in before}
    return {"losses": losses, "seconds": seconds,
            "tokens_per_s": timed * w.sizes().global_batch_size * shape_of(cfg).seq / seconds,
            "communication_fraction": loop["communication"] / sum(loop.values()),
            "per_step": profile.per_step(timed), "shape": shape_of(cfg)}


def shape_of(cfg) -> "volumes.Shape":
    a, p = cfg.model[cfg.model.scale], cfg.parallel
    dp = (p.dp_shard or 1) * (p.dp_replicate or 1)
    args = LlamaArgs(dim=a.dim, n_layers=a.n_layers, n_heads=a.n_heads, n_kv_heads=a.n_kv_heads,
                     ffn_dim=a.ffn_dim, vocab_size=a.vocab_size, max_seq_len=a.max_seq_len)
    return volumes.Shape(args, a.seq_len, a.micro_batch_size,
                         a.global_batch_size // (dp * a.micro_batch_size))


def run_all(steps: int) -> dict:
    base = ["model=llama31_8b", "tracking.enabled=false"]
    root = tempfile.mkdtemp(prefix="llama_layouts_")
    results = {"single": harness.run_layout(base, root, steps, traced_body)}
    two = [k for k, v in LAYOUTS.items() if v and k != "tp2pp2"]
    for name, r in zip(two, harness.run_layouts([(base + LAYOUTS[k], traced_body)
                                                 for k in two], root, steps)):
        results[name] = r
    results["tp2pp2"] = harness.run_layout(base + LAYOUTS["tp2pp2"], root, steps, traced_body)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=15)
    args = parser.parse_args()
    results = run_all(args.steps)
    single = results["single"]["tokens_per_s"]
    print(f"Llama 3.1 8B proxy, {args.steps} steps (first {WARMUP} untimed), "
          f"{os.cpu_count()} cores")
    print(f"{'layout':<14}{'ranks':>6}{'tokens/s':>11}{'vs single':>11}{'final loss':>12}"
          f"{'comm fraction':>15}")
    for name, r in results.items():
        ranks = 1 if name == "single" else 4 if name == "tp2pp2" else 2
        print(f"{name:<14}{ranks:>6}{r['tokens_per_s']:>11.0f}"
              f"{r['tokens_per_s'] / single:>10.2f}x{r['losses'][-1]:>12.5f}"
              f"{r['communication_fraction']:>15.3f}")
    print("\nbytes per step on rank 0 (pipeline stage 0), measured vs analytic; kinds without an "
          "analytic volume are the loss and gradient-norm all-reduces")
    for name, layout in ANALYTIC.items():
        expected = volumes.analytic_bytes(layout, results[name]["shape"], stage=0)
        per_step = results[name]["per_step"]
        kinds = [k[5:-15] for k, v in per_step.items() if k.endswith("_bytes_per_step") and v]
        for kind in sorted(set(kinds) | set(expected)):
            got = per_step.get(f"comm_{kind}_bytes_per_step", 0.0)
            calls = per_step.get(f"comm_{kind}_calls_per_step", 0.0)
            want = expected.get(kind)
            ratio = f"{got / want:8.3f}" if want else "       -"
            print(f"  {name:<13}{kind:<16}{got:>13,.0f}{want or 0:>13,.0f}{ratio}"
                  f"   {calls:5.1f} calls")


if __name__ == "__main__":
    main()
