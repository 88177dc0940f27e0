"""The sweep's MLflow parent run as a one-click comparison: its description (MLflow's note)
holds the sweep's question, its axes, a table of points (time_to_train_s, status, bottleneck,
phase shares), the best point, the crossovers found and the report's images."""
from __future__ import annotations

import logging
import math
import os
import re
from typing import Optional
from urllib.parse import quote

from pinchpoint.analysis.runs import ReportError, RunRecord, _record
from pinchpoint.metric_names import PHASES

log = logging.getLogger(__name__)
MAX_ROWS = 60     # a longer sweep: the table is in the report's CSV


def question(sweep_file: Optional[str]) -> Optional[str]:
    """The ``# Question: ...`` header of a sweep file (up to its command lines)."""
    if not sweep_file or not os.path.exists(sweep_file):
        return None
    lines, inside = [], False
    with open(sweep_file) as f:
        for line in f:
            text = line.strip()
            if not inside and text.startswith("# Question:"):
                inside, text = True, text[len("# Question:"):]
            elif not inside:
                continue
            elif not text.startswith("#") or re.match(r"#\s+(python|pinchpoint) ", text):
                break
            lines.append(text.lstrip("#").strip())
    return " ".join(x for x in lines if x) or None


def describe(uri: str, parent_id: str, axes: list[str], ask: Optional[str], sweep_dir: str,
             client=None) -> str:
    """The parent's markdown note; attaches the report (PNG, CSV) to the parent as it goes."""
    from mlflow.tracking import MlflowClient

    client = client or MlflowClient(uri)
    parent = client.get_run(parent_id)
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{parent_id}'",
                                  order_by=["attributes.start_time ASC"], max_results=5000)
    runs = [_record(c) for c in children]
    axes = axes or []
    parts = [f"**Question:** {ask}" if ask else None,
             f"**Axes:** {', '.join(f'`{a}`' for a in axes) or '(none)'} — "
             f"{len(runs)} run(s), {_statuses(runs)}",
             _best(runs, axes), *_report(uri, parent_id, parent.data.tags, sweep_dir),
             _table(runs, axes)]
    return "\n\n".join(p for p in parts if p)


def _statuses(runs: list[RunRecord]) -> str:
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.status] = counts.get(r.status, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none recorded"


def _point(r: RunRecord, axes: list[str]) -> str:
    return ", ".join(f"{a}={r.get(a)}" for a in axes) or r.name


def _best(runs: list[RunRecord], axes: list[str]) -> Optional[str]:
    done = [r for r in runs if r.status == "success" and
            math.isfinite(r.metrics.get("time_to_train_s", math.inf))]
    if not done:
        return "**Best point:** none reached its quality target."
    best = min(done, key=lambda r: r.metrics["time_to_train_s"])
    return (f"**Best point:** {_point(best, axes)} — time_to_train_s "
            f"{best.metrics['time_to_train_s']:.2f}, bottleneck {best.tags.get('bottleneck', '?')}"
            f" (run `{best.run_id[:8]}`)")


def _report(uri: str, parent_id: str, tags: dict, sweep_dir: str) -> list[str]:
    """Crossovers and images from `pinchpoint report` (also run by hand later)."""
    from pinchpoint.analysis.report import make

    found = [f"**Crossovers (sweeper):** {tags['crossover.summary']}"] \
        if tags.get("crossover.summary") else []
    try:
        rep = make(uri, parent=parent_id, out=os.path.join(sweep_dir, "report"))
    except ReportError as err:
        return found + [f"_No report: {err}_"]
    if not found:
        found = ["**Crossovers:** " + ("; ".join(
            f"{c['below']} → {c['above']} between {rep.x}={c['low']} and {c['high']}"
            for c in rep.crossovers) or f"none along {rep.x} in the measured range")]
    images = [f"![{name}]({_artifact_url(parent_id, f'{folder}/{name}')})"
              for folder, name in (("report", "report.png"),
                                   ("optuna", "optimization_history.png"))
              if _has_artifact(uri, parent_id, folder, name)]
    return found + images


def _has_artifact(uri: str, run_id: str, folder: str, name: str) -> bool:
    from mlflow.tracking import MlflowClient
    return any(os.path.basename(a.path) == name
               for a in MlflowClient(uri).list_artifacts(run_id, folder))


def _artifact_url(run_id: str, path: str) -> str:
    """The MLflow UI's own artifact route, relative, so it works behind any host name."""
    return f"get-artifact?path={quote(path, safe='')}&run_uuid={run_id}"


def _table(runs: list[RunRecord], axes: list[str]) -> str:
    phases = [p for p in PHASES if any(r.metrics.get(f"{p}_fraction") for r in runs)]
    head = ["point", "status", "time_to_train_s", "bottleneck", *phases]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ordered = sorted(runs, key=lambda r: (r.status != "success",
                                          r.metrics.get("time_to_train_s", math.inf)))
    for r in ordered[:MAX_ROWS]:
        ttt = r.metrics.get("time_to_train_s")
        shown = "-" if ttt is None else f"{ttt:.2f}" if r.status == "success" else \
            f"not reached ({ttt:.0f} s run)"   # a run's length is not a time-to-train
        cells = [_point(r, axes), r.status, shown,
                 r.tags.get("bottleneck", "-"),
                 *(_share(r.metrics.get(f"{p}_fraction")) for p in phases)]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    if len(runs) > MAX_ROWS:
        lines.append(f"\n({len(runs) - MAX_ROWS} more in report/report.csv)")
    return "**Points** (fastest first; phase shares of the training loop):\n\n" + \
        "\n".join(lines)


def _share(v: Optional[float]) -> str:
    return "-" if v is None or math.isnan(v) else f"{v:.0%}"
