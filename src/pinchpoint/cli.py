"""The `pinchpoint` console script. `pinchpoint report` right after a sweep reports that sweep."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional

from pinchpoint.plan.cli import add_parser as add_plan_parser


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="pinchpoint", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    add_plan_parser(sub)  # `pinchpoint plan` (pinchpoint/plan/cli.py)
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
    if args.command == "plan":
        return args.func(args)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return report(args)


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
