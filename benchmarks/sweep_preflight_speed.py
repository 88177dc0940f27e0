"""How fast a sweeper checks every point before launching any (sweepers/preflight.py).

1. As a user runs it: ``python train.py -m 'dataset.batch_size=range(64,64064,64)'
   hydra.sweeper.dry_run=true`` (1,000 points: compose, validate, run key, resume lookup) in a
   fresh process, wall and CPU time.
2. Side by side in one process, alternating point by point: the fast path (one compose per
   distinct group choice, typed copies) against composing and validating each point in full
   with Hydra (what every point cost before), per point, medians with the spread.

    python benchmarks/sweep_preflight_speed.py [--pairs 30]
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
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def dry_run_1000() -> tuple[float, float, str]:
    with tempfile.TemporaryDirectory() as tmp:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "train.py", "-m",
                               "dataset.batch_size=range(64,64064,64)",
                               "hydra.sweeper.dry_run=true", f"output_root={tmp}"], cwd=ROOT,
                              capture_output=True, text=True, check=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    line = next(x for x in (proc.stdout + proc.stderr).splitlines() if "sweep:" in x)
    return wall, cpu, line.split("] ", 1)[-1]


def side_by_side(pairs: int) -> tuple[list[float], list[float]]:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from pinchpoint.runner.validation import validate
    from pinchpoint.workloads.registry import setup
    from pinchpoint.runner.run_key import run_key
    from pinchpoint.sweepers.common import DEFAULT_VALIDATOR, PointChecker

    setup()
    fast, full = [], []
    with tempfile.TemporaryDirectory() as tmp, \
            initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        master = compose("train", [f"output_root={tmp}"], return_hydra_config=True)
        context = types.SimpleNamespace(config_loader=GlobalHydra.instance().config_loader())
        checker = PointChecker(context, master, DEFAULT_VALIDATOR)
        checker.preflight.check([f"output_root={tmp}", "dataset.batch_size=64"])  # warm both
        for i in range(pairs):
            point = [f"output_root={tmp}", f"dataset.batch_size={64 * (i + 2)}"]
            start = time.perf_counter()
            checker.preflight.check(point)
            fast.append(time.perf_counter() - start)
            start = time.perf_counter()
            cfg = checker.task_config(point)
            validate(cfg)
            run_key(cfg)
            full.append(time.perf_counter() - start)
    return fast, full


def spread(xs: list[float]) -> str:
    q = statistics.quantiles(xs, n=4)
    return f"{statistics.median(xs) * 1e3:.2f} ms (IQR {q[0] * 1e3:.2f}-{q[2] * 1e3:.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=30)
    args = parser.parse_args()
    print(f"load average: {os.getloadavg()[0]:.1f}")
    wall, cpu, line = dry_run_1000()
    print(f"1,000-point dry run (fresh process): {wall:.1f} s wall, {cpu:.1f} s CPU -- {line}")
    fast, full = side_by_side(args.pairs)
    ratio = statistics.median(full) / statistics.median(fast)
    print(f"per point, alternating x{args.pairs}: fast path {spread(fast)}, "
          f"full compose + validate {spread(full)}; {ratio:.0f}x")
    print(f"1,000 points at those medians: fast {statistics.median(fast) * 1e3:.1f} s, "
          f"full {statistics.median(full) * 1e3:.0f} s")


if __name__ == "__main__":
    main()
