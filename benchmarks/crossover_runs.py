"""Adaptive crossover search vs a dense grid: same crossover, how many runs each?

Both searches run through Hydra on tests/sweep_app/app.py, a fast task with a known answer
(alternative a costs x, b a flat value, so the winner flips at x = flat), side by side for several
flip positions: the dense grid with the grid sweeper over every (x, alternative), the crossover
sweeper with its coarse grid + bisection. Run counts are the jobs each actually launched.

    python benchmarks/crossover_runs.py [--values 17] [--coarse 3]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "tests" / "sweep_app" / "app.py"
sys.path.insert(0, str(ROOT / "src"))
from pinchpoint.analysis.crossover import crossovers, winner  # noqa: E402


def hydra_run(args: list[str], out: Path) -> Path:
    cmd = [sys.executable, str(APP), "-m", *args, f"output_root={out}", "tracking.enabled=false"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=APP.parent)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return sorted((out / "sweeps").iterdir())[-1]


def dense(xs: list[int], flat: int, out: Path) -> tuple[list[tuple], int]:
    sweep = hydra_run(["hydra/sweeper=basic", "x=" + ",".join(map(str, xs)), "alt=a,b",
                       f"flat={flat}"], out)
    results = [json.loads(p.read_text()) for p in sweep.glob("*/result.json")]
    table = {(r["x"], r["alt"]): r["time_to_train_s"] for r in results}
    labels = [winner({f"alt={a}": table[(x, a)] for a in "ab"}) for x in xs]
    return [(c.low, c.high) for c in crossovers(xs, labels)], len(results)


def adaptive(xs: list[int], flat: int, coarse: int, out: Path) -> tuple[list[tuple], int]:
    sweep = hydra_run(["hydra/sweeper=crossover", f"x=choice({','.join(map(str, xs))})",
                       "alt=a,b", "hydra.sweeper.axis=x", f"hydra.sweeper.coarse={coarse}",
                       "hydra.sweeper.validator=null",
                       f"flat={flat}"], out)
    summary = json.loads((sweep / "crossover.json").read_text())
    runs = len([p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()])
    assert runs == summary["runs"]
    return [(c["low"], c["high"]) for c in summary["crossovers"]], runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--values", type=int, default=17, help="dense grid points along x")
    ap.add_argument("--coarse", type=int, default=3)
    args = ap.parse_args()
    xs = [500 * (i + 1) for i in range(args.values)]
    flats = [xs[1] + 200, xs[len(xs) // 3] + 200, xs[len(xs) // 2] + 200, xs[-2] + 200]
    print(f"dense grid: {len(xs)} x values x 2 alternatives; crossover: coarse={args.coarse}")
    print(f"{'flip at':>8} {'dense answer':>14} {'dense runs':>10} {'adaptive answer':>16} "
          f"{'adaptive runs':>13} {'fraction':>8}  same?")
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for i, flat in enumerate(flats):
            d_ans, d_runs = dense(xs, flat, Path(tmp) / f"dense{i}")
            a_ans, a_runs = adaptive(xs, flat, args.coarse, Path(tmp) / f"adaptive{i}")
            worst = max(worst, a_runs / d_runs)
            print(f"{flat:>8} {str(d_ans):>14} {d_runs:>10} {str(a_ans):>16} {a_runs:>13} "
                  f"{a_runs / d_runs:>8.0%}  {'yes' if d_ans == a_ans else 'NO'}")
    print(f"largest fraction of the dense grid's runs: {worst:.0%} (goal <= 40%)")


if __name__ == "__main__":
    main()
