"""``pinchpoint plan OVERRIDES...``: plan one point or a whole grid at full scale in one
process, print a sortable table, write it as CSV, optionally draw the sweep (PNG)."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pinchpoint.errors import ConfigError

EPILOG = """examples:
  pinchpoint plan model=llama31_405b model.scale=full +gpu=gb200 parallel.tp=4 parallel.pp=8 \\
      parallel.cp=2 parallel.dp_shard=8 plan.precision=fp8 plan.virtual_stages=8
  pinchpoint plan model=llama31_405b model.scale=full +gpu=gb200 parallel.world_size=2560 \\
      parallel.dp_shard=-1 parallel.tp=1,2,4,8 parallel.pp=1,2,4,8,16 parallel.cp=1,2,4 \\
      --sort time_to_train_min --plot parallel.tp
A single point that does not fit (or is invalid) exits with status 2."""


def add_parser(sub) -> None:
    p = sub.add_parser("plan", help="full-scale pre-flight of one point or a grid",
                       description=__doc__, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="Hydra-style overrides; a,b,c or "
                   "range(start,stop,step) sweeps")
    p.add_argument("--sort", help="column to sort by (e.g. time_to_train_min)")
    p.add_argument("--csv", help="CSV path (default outputs/plans/plan_<time>.csv)")
    p.add_argument("--top", type=int, default=40, help="rows to print (all go to the CSV)")
    p.add_argument("--plot", metavar="AXIS", help="draw time-to-train and the dominant term "
                   "against this swept axis (PNG next to the CSV)")
    p.add_argument("--by", action="append", help="one line per value of these axes "
                   "(repeatable or comma-separated; default: the other swept axes)")
    p.add_argument("--from-csv", metavar="CSV", help="draw (--plot) a plan written before "
                   "instead of planning again")
    p.set_defaults(func=main)


def main(args) -> int:
    from pinchpoint.plan import grid, table

    if args.from_csv:
        return _redraw(args)
    start = time.perf_counter()
    try:
        axes, points = grid.plan_grid(args.overrides)
        rows = table.sort_rows([pt.row for pt in points], args.sort)
    except ConfigError as err:
        print(f"pinchpoint plan: {err}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start
    print(table.format_table(rows, args.top))
    path = table.write_csv(rows, table.default_csv() if not args.csv else Path(args.csv))
    print(f"\n{grid.summary(rows, elapsed)}; table: {path}")
    if args.plot:
        from pinchpoint.analysis.plan_report import draw
        if _plotted(lambda: draw(rows, args.plot, args.by, path.with_suffix(".png"))):
            return 2
    if len(points) == 1:
        return _single(points[0])
    return 0


def _single(point) -> int:
    if point.error:
        print(f"pinchpoint plan: {point.error}", file=sys.stderr)
        return 2
    p = point.plan
    t = p["time_to_train"]
    print("\ntime-to-train = steps x step + evals + init in the clock:")
    print(f"  {t['steps']:,.1f} steps ({t['samples_to_converge']:,.0f} samples, {t['rcp']}, "
          f"ruleset {t['ruleset']}) x {t['step_s']:.4f} s = {t['train_s'] / 60:,.2f} min")
    print(f"  + {t['evaluations']} evals x {t['eval_each_s']:.2f} s = {t['eval_s'] / 60:,.2f} min"
          f"  + init {t['init_s'] / 60:.2f} min  = {t['time_to_train_min']:,.2f} min")
    terms = ", ".join(f"{k} {v:.4f}" for k, v in p["terms_s"].items() if v > 0)
    print(f"step terms (s): {terms}; dominant: {p['dominant']}")
    if not p["fits"]:
        print(f"pinchpoint plan: does not fit: needs {p['memory_needed_gib']:.1f} GiB per device,"
              f" {p['gpu']} has {p['memory_usable_gib']:.1f} GiB usable", file=sys.stderr)
        return 2
    return 0


def _redraw(args) -> int:
    from pinchpoint.analysis.plan_report import main_from_csv
    if not args.plot:
        print("pinchpoint plan: --from-csv needs --plot AXIS", file=sys.stderr)
        return 2
    return _plotted(lambda: main_from_csv(args.from_csv, args.plot, args.by))


def _plotted(draw) -> int:
    """Draw and print the plot's summary; 2 with one line when it cannot be drawn."""
    try:
        report = draw()
    except (OSError, ValueError) as err:
        print(f"pinchpoint plan: {err}", file=sys.stderr)
        return 2
    print(report.text)
    print(f"plot: {report.png}")
    return 0
