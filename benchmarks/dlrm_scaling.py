"""DLRM-DCNv2 proxy throughput per parallel layout, side by side in one run:
python benchmarks/dlrm_scaling.py [--steps N] [--batch B] [--layouts single,ddp2,ep2,ep4,ep8]

Each layout trains the same global batch for the same steps through train.py (ranks spawned as
users get them); samples/s excludes the one closing eval. On a 2-core laptop more ranks than
cores oversubscribe the CPU: the table shows that cost honestly, with the communication share.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(layout: str, out: Path, steps: int, batch: int) -> dict:
    args = [sys.executable, str(ROOT / "train.py"), f"parallel={layout}",
            f"train.max_steps={steps}", "train.evals_per_epoch=1", f"dataset.batch_size={batch}",
            "tracking.system_metrics=false", "train.progress_every_s=1000",
            f"output_root={out}", f"hydra.run.dir={out}/runs/{layout}"]
    started = time.perf_counter()
    subprocess.run(args, cwd=ROOT, check=True, capture_output=True, text=True)
    s = json.loads((out / "runs" / layout / "phase_summary.json").read_text())
    s["wall_s"] = time.perf_counter() - started
    return s


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--layouts", default="single,ddp2,ep2,ep4,ep8")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "outputs"
        run("single", out, 2, args.batch)  # generate the dataset once, outside the timings
        for layout in args.layouts.split(","):
            s = run(layout, out, args.steps, args.batch)
            train_s = s["train_loop_seconds"] - s["phase_eval_s"]
            rows.append((layout, s["world_size"], s["samples"] / train_s,
                         s["communication_fraction"], s["comm_all_to_all_bytes_per_step"],
                         s["comm_all_reduce_bytes_per_step"], s["data_wait_fraction"],
                         s["bottleneck"], s["wall_s"]))
    base = rows[0][2]
    print(f"\nDLRM-DCNv2 proxy, global batch {args.batch}, {args.steps} steps per layout")
    print(f"{'layout':<8}{'ranks':>6}{'samples/s':>12}{'vs first':>9}{'comm %':>8}"
          f"{'a2a B/step':>12}{'allreduce B/step':>18}{'data_wait %':>12}  bottleneck   wall s")
    for name, world, rate, comm, a2a, ar, dw, bottleneck, wall in rows:
        print(f"{name:<8}{world:>6}{rate:>12,.0f}{rate / base:>8.2f}x{comm:>8.1%}{a2a:>12,.0f}"
              f"{ar:>18,.0f}{dw:>12.1%}  {bottleneck:<12}{wall:>6.0f}")


if __name__ == "__main__":
    main()
