"""The `pinchpoint` console script. `pinchpoint plan` plans one point or a grid at full scale;
`pinchpoint report` right after a sweep reports that sweep; `pinchpoint data fetch NAME` fetches a
real dataset."""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Optional

PLAN_EPILOG = """examples:
  pinchpoint plan model=llama31_405b model.scale=full +gpu=gb200 parallel.tp=4 parallel.pp=8 \\
      parallel.cp=2 parallel.dp_shard=8 plan.precision=fp8 plan.virtual_stages=8
  pinchpoint plan model=llama31_405b model.scale=full +gpu=gb200 parallel.world_size=2304 \\
      parallel.dp_shard=-1 parallel.tp=1,2,4,8 parallel.pp=1,2,4,8,16 parallel.cp=1,2,4 \\
      --sort time_to_train_min --plot parallel.tp
Overrides are Hydra's, as for python train.py -m ... plan_only=true: key=a,b,c and
key=range(start,stop,step) sweep, +group=option adds, ~key deletes,
hydra.searchpath=[file://DIR] adds config folders (an out-of-tree workload's conf/). Every point
is validated as train.py validates it; a point it refuses is marked invalid with its message.
A single point that does not fit (or is invalid) exits with status 2."""


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="pinchpoint", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    add_plan_parser(sub)
    add_data_parser(sub)
    rep = sub.add_parser("report", help="table, CSV and plots of a sweep from MLflow",
                         description="Table (terminal + CSV) and plots (PNG + HTML) of a sweep, "
                                     "attached to its parent MLflow run. Default: the latest "
                                     "sweep in the store.")
    rep.add_argument("--experiment", help="MLflow experiment (default: the latest sweep's)")
    rep.add_argument("--parent", help="a sweep's parent run id")
    rep.add_argument("--all-runs", action="store_true",
                     help="every run of --experiment, not only its latest sweep (a resumed "
                          "Optuna study is always reported whole)")
    rep.add_argument("--x", help="the swept axis for the plot's x (default: the sweep's)")
    rep.add_argument("--by", action="append",
                     help="the alternatives, one line each (repeatable; default: the other "
                          "swept settings)")
    rep.add_argument("--metric", help="default: the metric the sweep compared (a crossover "
                     "sweep's), else time_to_train_s")
    rep.add_argument("--direction", choices=["minimize", "maximize"],
                     help="which value wins (default: maximize for throughput, else minimize)")
    rep.add_argument("--tracking-uri", default="sqlite:///outputs/mlflow.db")
    rep.add_argument("--out", help="folder for the files (default outputs/reports/...)")
    rep.add_argument("--no-log", action="store_true", help="do not attach to the parent run")
    rep.add_argument("--plan", metavar="CSV",
                     help="draw a plan sweep (the CSV `pinchpoint plan` wrote) like a measured "
                          "one: time-to-train and the pinch per point vs --x")
    args = parser.parse_args(argv)
    if args.command in ("plan", "data"):
        return args.func(args)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return report(args)


def add_plan_parser(sub) -> None:
    p = sub.add_parser("plan", help="full-scale pre-flight of one point or a grid",
                       description="Plan one point or a whole grid at full scale in one process "
                       "(sweepers/plan_grid.py: the pre-flight and validation of python train.py "
                       "-m ... plan_only=true), print a sortable table, write it as CSV, "
                       "optionally draw the sweep (PNG).", epilog=PLAN_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="Hydra overrides; a,b,c or "
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
    p.add_argument("--config-dir", metavar="DIR", help="the folder with train.yaml (default: "
                   "the conf/ beside train.py in this package's source tree, else ./conf)")
    p.set_defaults(func=plan)


def add_data_parser(sub) -> None:
    d = sub.add_parser("data", help="fetch the real MLPerf datasets (MLCommons R2 bucket)",
                       description="The datasets the references train on, fetched as the "
                       "MLCommons R2 downloader does (pinchpoint/data/fetch.py).")
    dsub = d.add_subparsers(dest="data_command", required=True)
    f = dsub.add_parser("fetch", help="download a set, resuming, md5-verifying every file",
                        description="Download a known set (or a workload's group of them; "
                        "`pinchpoint data list`) into the storage tier's datasets folder: "
                        "resumed .part files, every md5 verified before a file gets its name. "
                        "Members-only sets read CF_ACCESS_TOKEN or CF_ACCESS_CLIENT_ID/SECRET.")
    f.add_argument("name", help="a name from `pinchpoint data list` (with --metadata: any name, "
                   "the folder's)")
    f.add_argument("--to", metavar="DIR", help="the set's folder (a group: the folder above "
                   "its sets; default: <datasets>/<the set's folder>, <datasets> = "
                   "$PINCHPOINT_LOCAL_ROOT/datasets or outputs/storage/local/datasets)")
    f.add_argument("--metadata", metavar="URL_OR_FILE", help="the set's <name>.uri (URL or "
                   "local file, <name>.md5 beside it) instead of the known one")
    f.add_argument("--jobs", type=int, help="parallel connections (default 4, at most one "
                   "per file)")
    f.set_defaults(func=data_fetch)
    ls = dsub.add_parser("list", help="the known sets: metadata URL, folder, what to set next")
    ls.set_defaults(func=data_list)


def data_fetch(args) -> int:
    from pinchpoint.data.fetch import fetch_known
    from pinchpoint.errors import DataError

    if args.jobs is not None and args.jobs < 1:
        print("pinchpoint data fetch: --jobs must be >= 1", file=sys.stderr)
        return 2
    try:
        reports = fetch_known(args.name, args.to, args.metadata, args.jobs, progress=lambda r:
                              print(f"  {r.status} {r.rel}" + (f" ({r.bytes:,} bytes)" if
                                                               r.bytes else ""), file=sys.stderr))
    except DataError as e:
        print(f"pinchpoint data fetch: {e}", file=sys.stderr)
        return 2
    for r in reports:
        print(r.text())
    return 0 if all(r.ok for r in reports) else 1


def data_list(args) -> int:
    from pinchpoint.data.fetch import list_text

    print(list_text())
    return 0


def plan(args) -> int:
    from pinchpoint.errors import ConfigError
    from pinchpoint.plan import grid, table
    from pinchpoint.sweepers.plan_grid import plan_grid, single
    from pinchpoint.sweepers.space import SweepError

    if args.from_csv:
        return _redraw(args)
    start = time.perf_counter()
    try:
        _, points = plan_grid(args.overrides, args.config_dir)
        rows = table.sort_rows([pt.row for pt in points], args.sort)
    except (ConfigError, SweepError) as err:
        print(f"pinchpoint plan: {err}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start
    print(table.format_table(rows, args.top))
    path = table.write_csv(rows, table.default_csv() if not args.csv else Path(args.csv))
    print(f"\n{grid.summary(points, elapsed)}; table: {path}")
    if args.plot:
        from pinchpoint.analysis.plan_report import draw
        if _plotted(lambda: draw(rows, args.plot, args.by, path.with_suffix(".png"))):
            return 2
    if len(points) == 1:
        return single(points[0])
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


def report(args) -> int:
    if args.plan:
        return plan_report(args)
    from pinchpoint.analysis.crossover import approx
    from pinchpoint.analysis.report import make
    from pinchpoint.analysis.runs import ReportError

    try:
        r = make(args.tracking_uri, args.experiment, args.parent, args.x, args.by, args.metric,
                 args.direction, args.out, not args.no_log, args.all_runs)
    except ReportError as err:
        print(f"pinchpoint report: {err}", file=sys.stderr)
        return 2
    where = {"sweep": f"sweep {r.source.parent_id}", "all": "all runs",
             "study": f"Optuna study {r.source.parent_tags.get('optuna.study_name')} over "
                      f"{len(r.source.sweeps)} sweeps"}[r.source.scope]
    print(f"{r.source.experiment} ({where}): {len(r.source.runs)} runs, {r.metric} vs {r.x}"
          + (f" by {', '.join(r.by)}" if r.by else ""))
    print(r.text)
    for c in r.crossovers:
        print(f"crossover: {c['below']} -> {c['above']} between {r.x}={c['low']} and "
              f"{c['high']} (~{approx(c['x_estimate'])})")
    if not r.crossovers:
        print("crossover: none in the measured range")
    print("files: " + ", ".join(r.files))
    if r.logged:
        print(f"attached to MLflow run {r.source.parent_id} "
              f"(artifacts/{r.source.artifact_dir})")
    return 0


def plan_report(args) -> int:
    from pinchpoint.analysis.plan_report import main_from_csv, read_csv, swept

    axes = swept(read_csv(args.plan))
    if not (args.x or axes):
        print("pinchpoint report: --plan CSV has no swept axis; give --x", file=sys.stderr)
        return 2
    r = main_from_csv(args.plan, args.x or axes[0], args.by)
    print(r.text)
    print(f"files: {r.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
