"""How fast a 1,000-point full-scale plan runs: `pinchpoint plan` over Llama 3.1 405B x 5 GPU
presets x dp_shard x tp x pp x cp (1,000 points) as a user runs it (a fresh process, wall and
CPU time, median of --repeat runs; the target is under 5 s wall), the same grid in-process, and,
side by side, composing + validating + planning points one at a time through Hydra (what
`python train.py ... plan_only=true` does per point; measured on 20 points).

Every point goes through the sweepers' pre-flight (sweepers/plan_grid.py: each distinct group
choice composed once, typed copies, the validation train.py runs), as `-m plan_only=true` does.

    python benchmarks/plan_grid_speed.py [--repeat 3]
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

GRID = ["model=llama31_405b", "model.scale=full", "+gpu=gb200,h100,b200,mi355x,gb300",
        "parallel.dp_shard=8,16,32,64,128", "parallel.tp=1,2,4,8", "parallel.pp=1,2,4,8,16",
        "parallel.cp=1,2", "plan.precision=fp8"]


def cli_run() -> tuple[float, float, str]:
    with tempfile.TemporaryDirectory() as tmp:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pinchpoint.cli", "plan", *GRID,
                               "--top", "3", "--csv", f"{tmp}/plan.csv"], cwd=ROOT,
                              capture_output=True, text=True, check=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    summary = [line for line in proc.stdout.splitlines() if "points planned" in line][0]
    return wall, cpu, summary


def in_process() -> tuple[float, float, int]:
    from pinchpoint.sweepers.plan_grid import plan_grid
    plan_grid(["model=llama31_405b", "model.scale=full"])   # imports (Hydra, torch), a compose
    start, cpu = time.perf_counter(), time.process_time()
    _, points = plan_grid(GRID)
    return time.perf_counter() - start, time.process_time() - cpu, len(points)


def one_at_a_time(n: int = 20) -> float:
    """Compose each point with Hydra, validate it and plan it (train.py's plan_only path)."""
    from hydra import compose, initialize_config_dir

    from pinchpoint.workloads import plan_point
    from pinchpoint.runner.validation import validate
    start = time.process_time()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for i in range(n):
            tp = (1, 2, 4, 8)[i % 4]
            cfg = compose("train", ["plan_only=true", "model=llama31_405b", "model.scale=full",
                                    "+gpu=gb200", f"parallel.tp={tp}", "parallel.pp=8",
                                    "parallel.dp_shard=16", "plan.precision=fp8"])
            validate(cfg)
            plan_point(cfg)
    return (time.process_time() - start) / n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"load average (1 min) before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    runs = [cli_run() for _ in range(args.repeat)]
    wall = statistics.median(r[0] for r in runs)
    cpu = statistics.median(r[1] for r in runs)
    print(f"pinchpoint plan, 1,000 points, fresh process: {wall:.2f} s wall (median of "
          f"{len(runs)}: {', '.join(f'{r[0]:.2f}' for r in runs)}), {cpu:.2f} s CPU; target "
          f"< 5 s: {'met' if wall < 5 else 'MISSED'}\n  ({runs[-1][2].strip()})")
    g_wall, g_cpu, n = in_process()
    print(f"plan_grid in-process ({n} points, each distinct group choice composed once): "
          f"{g_wall:.2f} s wall, {g_cpu:.2f} s CPU = {1e3 * g_cpu / n:.2f} ms CPU per point")
    per = one_at_a_time()
    print(f"compose + validate + plan one point at a time: {per * 1e3:.0f} ms CPU per point -> "
          f"{per * 1000:.0f} s CPU for 1,000 points (measured on 20)")
    print(f"grid / one-at-a-time CPU per point: 1 : {per * n / g_cpu:.0f}")
    print(f"load average (1 min) after: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
