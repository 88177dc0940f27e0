"""`pinchpoint report`: table, CSV and plots of a sweep, attached to its parent MLflow run."""
from __future__ import annotations

import html
import json
import logging
import os
from dataclasses import dataclass
from typing import Optional

from pinchpoint.analysis import collectives, plots, table
from pinchpoint.analysis.runs import ReportError, Source, load, swept_keys

log = logging.getLogger(__name__)


@dataclass
class Report:
    source: Source
    x: str
    by: list[str]
    metric: str
    table: list[dict]
    text: str
    crossovers: list[dict]
    files: list[str]
    logged: bool


def _sweep_metric(tags: dict, metric: Optional[str],
                  direction: Optional[str]) -> tuple[str, Optional[str]]:
    """The metric (and direction) to compare: as asked, else what the crossover sweeper
    compared (a sweep of short runs compares throughput: its time_to_train_s is all inf), else
    time_to_train_s."""
    if metric:
        return metric, direction
    swept = tags.get("crossover.metric")
    if swept and swept != "bottleneck":
        return swept, direction or tags.get("crossover.direction")
    return "time_to_train_s", direction


def make(uri: str = "sqlite:///outputs/mlflow.db", experiment: Optional[str] = None,
         parent: Optional[str] = None, x: Optional[str] = None, by: Optional[list[str]] = None,
         metric: Optional[str] = None, direction: Optional[str] = None,
         out: Optional[str] = None, log_artifacts: bool = True,
         all_runs: bool = False) -> Report:
    src = load(uri, experiment, parent, all_runs)
    swept = swept_keys(src.runs)
    declared = src.parent_tags.get("pinchpoint.axes", "").split(",")  # the sweep's own order
    swept.sort(key=lambda k: declared.index(k) if k in declared else len(declared))
    x = x or src.parent_tags.get("pinchpoint.x") or _first_numeric(src, swept) or \
        (swept[0] if swept else None)
    if x is None:
        raise ReportError("the runs differ in nothing that was swept: name the axis with --x")
    if by is None:
        tagged = src.parent_tags.get("pinchpoint.by")
        by = [tagged] if tagged and tagged != "dominant_phase" else \
            [k for k in swept if k not in (x, "seed")]
    for key in [x, *by]:
        if all(r.get(key) is None for r in src.runs):
            raise ReportError(f"{key!r} is not a setting of these runs; swept here: "
                              f"{', '.join(swept) or 'nothing'}")
    metric, direction = _sweep_metric(src.parent_tags, metric, direction)
    if not any(metric in r.metrics for r in src.runs) and metric != "time_to_train_s":
        known = sorted({m for r in src.runs for m in r.metrics})
        raise ReportError(f"--metric {metric!r} was not recorded; recorded: {', '.join(known)}")
    direction = direction or ("maximize" if "throughput" in metric or "auroc" in metric
                              else "minimize")
    pts = table.points(src.runs, x, by, metric)
    rows = table.rows(pts, x, metric)
    text = table.format_table(rows)
    numeric = all(isinstance(p.x, (int, float)) for p in pts)
    marks = plots.find_crossovers(pts, direction, plots.is_log(pts)) if numeric else []
    out = out or os.path.join("outputs", "reports", f"{src.experiment}_"
                              f"{(src.parent_id or 'none')[:8]}_{src.scope}")
    os.makedirs(out, exist_ok=True)
    title = f"{src.experiment}: {plots.label(metric)} vs {x}" + \
        (f" by {', '.join(by)}" if by else "")
    found = [{**m.crossover.to_dict(), "x_estimate": m.x} for m in marks]
    moves = [{"by": alt, **c.to_dict()} for alt, c in plots.phase_changes(pts)] if numeric \
        else []
    if moves:
        text += "\nwhere each one's dominant phase changes:\n" + "\n".join(
            f"  {m['by']}: {m['below']} -> {m['above']} between {m['low']} and {m['high']}"
            for m in moves)
    files = [table.write_csv(rows, os.path.join(out, "report.csv")),
             _write(os.path.join(out, "report.txt"), text + "\n"),
             _write(os.path.join(out, "crossovers.json"), json.dumps(
                 {"axis": x, "by": by, "metric": metric, "direction": direction,
                  "crossovers": found, "phase_changes": moves, "sweeps": src.sweeps},
                 indent=1, default=str)),
             plots.save_png(pts, x, metric, marks, title, os.path.join(out, "report.png"))]
    comm = collectives.save_png(pts, f"{src.experiment}: collectives per step by kind",
                                os.path.join(out, "collectives.png"))
    files += [comm] if comm else []
    # The interactive page stays local: it loads plotly.min.js from beside it (one copy per
    # folder, not 4.8 MB per page), which MLflow's artifact viewer cannot serve to it.
    page = plots.save_html(pts, x, metric, marks, title,
                           f"<pre>{html.escape(text)}</pre>", os.path.join(out, "report.html"))
    logged = _log(src, files) if log_artifacts else False
    files += [page] if page else []
    return Report(src, x, by, metric, rows, text, found, files, logged)


def _first_numeric(src: Source, swept: list[str]) -> Optional[str]:
    from pinchpoint.analysis.runs import number
    for key in swept:
        if all(number(r.get(key)) is not None for r in src.runs):
            return key
    return None


def _write(path: str, text: str) -> str:
    with open(path, "w") as f:
        f.write(text)
    return path


def _log(src: Source, files: list[str]) -> bool:
    if src.parent_id is None:
        log.warning("no sweep parent run to attach the report to")
        return False
    from mlflow.tracking import MlflowClient

    from pinchpoint.tracking.store import retrying
    client = MlflowClient(src.uri)
    for path in files:
        retrying(lambda: client.log_artifact(src.parent_id, path, src.artifact_dir))
    return True
