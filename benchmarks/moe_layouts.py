"""Tokens/s, communication share and all-to-all bytes per step of the GPT-OSS proxy per
parallel layout, beside the dense Llama 3.1 8B proxy's table, side by side in one run.

    python benchmarks/moe_layouts.py [--steps 10] [--model gpt_oss_20b|deepseek_v3_671b]

Every layout trains the same proxy (same seed, same global batch of 16 x 128 tokens) on ranks
spawned the way the runner spawns them (gloo). Columns: tokens/s over all steps; the share of
that time inside profiled collectives; all-to-all bytes per step as the collective profile
counts them (what each rank hands to all_to_all_single, its own rows included) and the off-rank
part (rows that leave the rank: tokens x top_k sent away x hidden x 4 bytes, both directions,
forward and backward); all-gather + reduce-scatter bytes (FSDP), all-reduce bytes (replicas).
Layouts with more ranks than cores oversubscribe the CPU: on a 2-core machine the multi-rank
rows measure the cost of the collectives, not a speed-up. The loss column shows every layout
trains the same numbers.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import harness  # noqa: E402  (tests/harness.py: ranks started as the runner starts them)

MOE = {1: {"single": []},
       2: {"ep2": ["parallel=ep2"], "fsdp2": ["parallel=fsdp2"],
           "ep2 x fsdp2": ["parallel=ep2fsdp2"]},
       4: {"ep4": ["parallel=ep4"]}}
DENSE = {1: {"single": []}, 2: {"fsdp2": ["parallel=fsdp2"]}}


def measured(cfg, ctx, steps: int) -> dict:
    w = harness.ready(cfg, ctx)
    r = harness.train_steps(w, steps, warmup=0)          # time every step
    per_step = r["collectives"]
    comm = sum(v for k, v in per_step.items() if k.endswith("_seconds_per_step")) * steps
    a = getattr(cfg.model, cfg.model.scale)
    return {"losses": r["losses"], "tokens_per_s": r["samples_per_s"] * a.seq_len,
            "communication_share": comm / r["seconds"],
            "all_to_all_bytes": per_step["comm_all_to_all_bytes_per_step"],
            "offrank_bytes": w.inputs.measurements.get("moe_all_to_all_offrank_bytes_per_step",
                                                       0.0),
            "fsdp_bytes": per_step["comm_all_gather_bytes_per_step"] +
            per_step["comm_reduce_scatter_bytes_per_step"],
            "all_reduce_bytes": per_step["comm_all_reduce_bytes_per_step"]}


def table(title: str, base: list[str], layouts: dict, steps: int, root: str) -> None:
    rows = {}
    for world, named in layouts.items():
        jobs = [(base + o, measured) for o in named.values()]
        rows.update(zip(named, harness.run_layouts(jobs, root, steps)))
    single = rows["single"]["tokens_per_s"]
    print(f"\n{title}, {steps} steps, {os.cpu_count()} cores")
    print(f"{'layout':<13}{'tokens/s':>9}{'vs single':>10}{'comm share':>11}{'a2a MB/step':>12}"
          f"{'off-rank MB':>12}{'fsdp MB':>9}{'allreduce MB':>13}{'final loss':>11}")
    for name, r in rows.items():
        print(f"{name:<13}{r['tokens_per_s']:>9.0f}{r['tokens_per_s'] / single:>9.2f}x"
              f"{r['communication_share']:>10.0%}{r['all_to_all_bytes'] / 1e6:>12.2f}"
              f"{r['offrank_bytes'] / 1e6:>12.2f}{r['fsdp_bytes'] / 1e6:>9.2f}"
              f"{r['all_reduce_bytes'] / 1e6:>13.2f}{r['losses'][-1]:>11.5f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--model", default="gpt_oss_20b")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="moe_layouts_")
    data = ["tracking.enabled=false", "model.proxy.micro_batch_size=4"]
    table(f"{args.model} proxy", [f"model={args.model}", *data], MOE, args.steps, root)
    table("llama31_8b proxy (dense)", ["model=llama31_8b", *data], DENSE, args.steps, root)


if __name__ == "__main__":
    main()
