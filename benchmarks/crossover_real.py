"""Adaptive crossover search vs a dense grid on real pinchpoint training runs.

For a named sweep (sweeps/NAME.yaml: its sizes, tier and tracking settings) and one ordered axis,
the dense grid runs every axis value (x every alternative) through `python train.py -m` (the
crossover sweeper with as many coarse points as values: one round, the whole grid, the same
launcher and labels) and labels each value: the dominant phase (``--by dominant_phase``) or the
alternative with the best ``--metric``. The adaptive search (pinchpoint.sweepers.crossover.search: coarse points, then
bisection where the label changes) is then run twice on the same physics:

- replayed on the dense grid's own runs: it asks for points and reads their measured labels, so
  its answer differs from the grid's only through the search itself;
- live (``--live``): the Hydra crossover sweeper launches its own fresh runs, so its answer also
  carries run-to-run noise (and the machine's load, printed beside every figure).

Prints both answers and the run counts (the goal: adaptive <= 40 % of the grid's runs) and writes
the dense grid's report (CSV + PNG via `pinchpoint report`) to --results.

    launchers/object_store_up.sh
    python benchmarks/crossover_real.py --sweep ckpt_interval_storage --axis checkpoint.interval \
        --values 1-17 --by dominant_phase --set storage=object --live \
        --results sweeps/results/ckpt_interval_crossover
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from pinchpoint.analysis.crossover import crossovers  # noqa: E402
from pinchpoint.sweepers.crossover import search  # noqa: E402

PHASE = "dominant_phase"
QUIET = ["tracking.system_metrics=false"]


def load() -> str:
    return "load average " + ", ".join(f"{x:.1f}" for x in os.getloadavg())


def parse_values(text: str) -> list[int]:
    """'1-17' -> 1..17; '32,64,128' -> those."""
    if "-" in text and "," not in text:
        lo, hi = (int(v) for v in text.split("-"))
        return list(range(lo, hi + 1))
    return [int(v) for v in text.split(",")]


def train(args: list[str], out: Path) -> Path:
    """One `train.py -m` sweep; returns its sweep folder."""
    cmd = [sys.executable, str(ROOT / "train.py"), "-m", *args, f"output_root={out}"]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}\n{proc.stderr[-4000:]}")
    return sorted((out / "sweeps").iterdir())[-1]


def crossover_sweep(common: list[str], axis: str, xs: list[int], by: str, alts: list[str],
                    metric: str, direction: str, coarse: int, out: Path) -> dict:
    """One crossover-sweeper run; coarse = len(xs) makes its first round the whole dense grid
    (same launcher, same labelling), smaller coarse is the adaptive search. Its crossover.json."""
    args = [*common, "sweeper=crossover", f"hydra.sweeper.axis={axis}", f"hydra.sweeper.by={by}",
            f"hydra.sweeper.metric={metric}", f"hydra.sweeper.direction={direction}",
            f"hydra.sweeper.coarse={coarse}"]
    params = {axis: f'"choice({",".join(map(str, xs))})"'}
    if by != PHASE:
        params[by] = f'"{",".join(alts)}"'
    args.append("hydra.sweeper.params={" + ",".join(f"{k}:{v}" for k, v in params.items()) + "}")
    return json.loads((train(args, out) / "crossover.json").read_text())


def dense(common: list[str], axis: str, xs: list[int], by: str, alts: list[str],
          metric: str, direction: str, out: Path) -> tuple[list, int, dict]:
    summary = crossover_sweep(common, axis, xs, by, alts, metric, direction, len(xs), out)
    labels = {x: summary["labels"][str(x)] for x in xs}
    return crossovers(xs, [labels[x] for x in xs]), summary["runs"], labels


def replay(xs: list[int], labels: dict, coarse: int, alts: list[str]) -> tuple[list, int]:
    """The adaptive search answered from the dense grid's measured labels."""
    state = search(len(xs), coarse, lambda idx: {i: labels[xs[i]] for i in idx})
    seen = sorted(state.labels)
    return crossovers([xs[i] for i in seen], [state.labels[i] for i in seen]), \
        len(seen) * max(1, len(alts))


def live(common: list[str], axis: str, xs: list[int], by: str, alts: list[str], metric: str,
         direction: str, coarse: int, out: Path) -> tuple[list, int]:
    summary = crossover_sweep(common, axis, xs, by, alts, metric, direction, coarse, out)
    found = [(c["low"], c["high"], c["below"], c["above"]) for c in summary["crossovers"]]
    return found, summary["runs"]


def report(out: Path, experiment: str, axis: str, metric: str, results: Path) -> None:
    cmd = ["pinchpoint", "report", "--tracking-uri", f"sqlite:///{out}/mlflow.db",
           "--experiment", experiment, "--x", axis, "--metric", metric, "--out", str(results),
           "--no-log"]
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, text=True)
    for extra in results.glob("*.html"):   # the interactive page is local-only (plotly beside it)
        extra.unlink()
    for extra in results.glob("plotly*.js"):
        extra.unlink()


def describe(found) -> str:
    return "; ".join(f"{c[2]} -> {c[3]} between {c[0]} and {c[1]}" for c in found) or "none"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweep", required=True, help="sweeps/NAME.yaml supplies sizes and tier")
    ap.add_argument("--axis", required=True)
    ap.add_argument("--values", required=True, help="'1-17' or '32,64,...' (the dense grid)")
    ap.add_argument("--by", default=PHASE, help="alternatives key, or dominant_phase")
    ap.add_argument("--alts", default="", help="the alternatives, comma separated")
    ap.add_argument("--metric", default="time_to_train_s")
    ap.add_argument("--direction", default="minimize")
    ap.add_argument("--coarse", type=int, default=3)
    ap.add_argument("--set", action="append", default=[], help="extra fixed override")
    ap.add_argument("--live", action="store_true", help="also run the crossover sweeper itself")
    ap.add_argument("--results", type=Path, help="write the dense grid's report here")
    ap.add_argument("--report-metric", default="throughput_samples_per_s",
                    help="the report plot's y (fixed-length runs have no time-to-train)")
    ap.add_argument("--out", type=Path, help="output_root (default: a temporary folder)")
    a = ap.parse_args()
    xs, alts = parse_values(a.values), [v for v in a.alts.split(",") if v]
    # The sweep file's settings (sizes, tier, tracking); its own axes are replaced by ours.
    common = [f"+sweep={a.sweep}", *QUIET, *a.set]
    with tempfile.TemporaryDirectory() as tmp:
        out = a.out or Path(tmp)
        print(f"{a.sweep}: {a.axis} over {xs}, by {a.by} {alts or ''}; {load()}")
        t0 = time.time()
        d_found, d_runs, labels = dense(common, a.axis, xs, a.by, alts, a.metric,
                                           a.direction, out / "dense")
        t1 = time.time()
        print(f"dense grid: {d_runs} runs in {t1 - t0:.0f} s ({load()})")
        print("  labels: " + ", ".join(f"{x}:{labels[x]}" for x in xs))
        print(f"  crossover: {describe([(c.low, c.high, c.below, c.above) for c in d_found])}")
        r_found, r_runs = replay(xs, labels, a.coarse, alts)
        print(f"adaptive, replayed on the same runs: {r_runs} runs "
              f"({r_runs / d_runs:.0%} of the grid): "
              f"{describe([(c.low, c.high, c.below, c.above) for c in r_found])}; "
              f"same as the grid: {[(c.low, c.high) for c in r_found] == [(c.low, c.high) for c in d_found]}")
        if a.live:
            l_found, l_runs = live(common, a.axis, xs, a.by, alts, a.metric, a.direction,
                                   a.coarse, out / "adaptive")
            print(f"adaptive, live crossover sweeper: {l_runs} runs ({l_runs / d_runs:.0%} of "
                  f"the grid) in {time.time() - t1:.0f} s ({load()}): {describe(l_found)}")
        if a.results:
            a.results.mkdir(parents=True, exist_ok=True)
            report(out / "dense", a.sweep, a.axis, a.report_metric, a.results)
            print(f"report: {a.results}/report.csv, report.png")


if __name__ == "__main__":
    main()
