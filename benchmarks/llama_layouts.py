"""Tokens/s of the Llama 3.1 8B proxy per parallel layout, side by side in one run.

    python benchmarks/llama_layouts.py [--steps 12]

Every layout trains the same proxy (same seed, same global batch) on ranks spawned here over
gloo; the first 3 steps (warm-up) are not timed. Layouts that need more ranks than cores
oversubscribe the CPU: on a 2-core machine the multi-rank figures measure the cost of the
collectives and the pipeline schedule, not a speed-up. The loss column shows they train the
same numbers.
"""
from __future__ import annotations

import argparse
import os
import tempfile

from pinchpoint.workloads.llama31 import harness

LAYOUTS = {"single": [], "fsdp2": ["parallel=fsdp2"], "tp2": ["parallel=tp2"],
           "pp2 (1f1b)": ["parallel=pp2"],
           "pp2 (gpipe)": ["parallel=pp2", "model.pipeline_schedule=gpipe"],
           "tp2pp2": ["parallel=tp2pp2"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=15)
    args = parser.parse_args()
    base = ["model=llama31_8b", "tracking.enabled=false"]
    root = tempfile.mkdtemp(prefix="llama_layouts_")
    results = {"single": harness.run_layout(base, root, args.steps)}
    two = [k for k, v in LAYOUTS.items() if v and not k.startswith("tp2pp2")]
    for name, r in zip(two, harness.run_layouts([(base + LAYOUTS[k], None) for k in two],
                                                root, args.steps)):
        results[name] = r
    results["tp2pp2"] = harness.run_layout(base + LAYOUTS["tp2pp2"], root, args.steps)
    single = results["single"]["tokens_per_s"]
    print(f"Llama 3.1 8B proxy, {args.steps} steps (first 3 untimed), {os.cpu_count()} cores")
    print(f"{'layout':<14}{'ranks':>6}{'tokens/s':>11}{'vs single':>11}{'final loss':>12}")
    for name, r in results.items():
        ranks = 1 if name == "single" else 4 if name == "tp2pp2" else 2
        print(f"{name:<14}{ranks:>6}{r['tokens_per_s']:>11.0f}"
              f"{r['tokens_per_s'] / single:>10.2f}x{r['losses'][-1]:>12.5f}")


if __name__ == "__main__":
    main()
