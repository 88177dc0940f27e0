"""How fast a 1,000-point full-scale plan runs: `pinchpoint plan` over Llama 3.1 405B x 5 GPU
presets x dp_shard x tp x pp x cp (1,000 points) as a user runs it (a fresh process, wall and
CPU time), the same grid in-process, and, side by side, composing + planning points one at a
time through Hydra (what a per-point pre-flight costs; measured on 20 points).

    python benchmarks/plan_grid_speed.py
"""
from __future__ import annotations

import os
import resource
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
    from pinchpoint.plan import grid
    grid.compose_base(["plan_only=true"])           # Hydra's import and first compose
    start, cpu = time.perf_counter(), time.process_time()
    _, points = grid.plan_grid(GRID)
    return time.perf_counter() - start, time.process_time() - cpu, len(points)


def one_at_a_time(n: int = 20) -> float:
    """Compose each point with Hydra, then plan it (per-point pre-flight)."""
    from pinchpoint.plan import grid, plan_point
    from pinchpoint.plan.grid import View
    start = time.process_time()
    for i in range(n):
        tp = (1, 2, 4, 8)[i % 4]
        cfg = grid.compose_base(["plan_only=true", "model=llama31_405b", "model.scale=full",
                                 "+gpu=gb200", f"parallel.tp={tp}", "parallel.pp=8",
                                 "parallel.dp_shard=16", "plan.precision=fp8"])
        plan_point(View(cfg))
    return (time.process_time() - start) / n


def main() -> int:
    wall, cpu, summary = cli_run()
    print(f"pinchpoint plan, 1,000 points, fresh process: {wall:.2f} s wall, {cpu:.2f} s CPU"
          f"\n  ({summary.strip()})")
    g_wall, g_cpu, n = in_process()
    print(f"plan_grid in-process ({n} points, one Hydra compose): {g_wall:.2f} s wall, "
          f"{g_cpu:.2f} s CPU = {1e3 * g_cpu / n:.2f} ms CPU per point")
    per = one_at_a_time()
    print(f"compose + plan one point at a time: {per * 1e3:.0f} ms CPU per point -> "
          f"{per * 1000:.0f} s CPU for 1,000 points (measured on 20)")
    print(f"grid / one-at-a-time CPU per point: 1 : {per * n / g_cpu:.0f}")
    print(f"load average (1 min) while measuring: {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
