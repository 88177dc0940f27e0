"""Sweep points as MLflow knows them: find a point's runs by its run key (sweep resume), and
record what only the submitting side knows (Slurm facts, job logs, a job killed from outside).

A point's identity is the ``pinchpoint.run_key`` tag (runner/run_key.py: a hash of the resolved
config minus paths and tracking), so a point matches across sweep folders, launchers and clusters.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

from pinchpoint.tracking.store import absolute_uri, retrying, sqlite_path
from pinchpoint.tracking.sweep_folder import PARENT_FILE, SWEPT_FILE, parent_run_id


@dataclass
class Decision:
    run: bool
    reason: str
    run_id: Optional[str] = None


def _client(uri: str):
    from mlflow.tracking import MlflowClient
    return MlflowClient(tracking_uri=absolute_uri(uri))


def _store_missing(uri: str) -> bool:
    path = sqlite_path(absolute_uri(uri))
    return path is not None and not os.path.exists(path)   # asking would create it


def point_runs(uri: str, experiment: str, key: str) -> list:
    """Runs of this point (newest first); [] when the store or experiment does not exist."""
    if _store_missing(uri):
        return []
    client = _client(uri)
    exp = retrying(lambda: client.get_experiment_by_name(experiment))
    if exp is None:
        return []
    return retrying(lambda: client.search_runs(
        [exp.experiment_id], f"tags.`pinchpoint.run_key` = '{key}'",
        order_by=["attributes.start_time DESC"], max_results=100))


def runs_by_key(uri: str, experiment: str, keys: set[str]) -> dict[str, list]:
    """``point_runs`` for many keys at once (newest first per key): a few keys are asked one
    by one, more in one paged search of the experiment's keyed runs (1,000 points: one query,
    not a thousand)."""
    if len(keys) <= 8:
        return {k: point_runs(uri, experiment, k) for k in keys}
    if _store_missing(uri):
        return {}
    client = _client(uri)
    exp = retrying(lambda: client.get_experiment_by_name(experiment))
    if exp is None:
        return {}
    found: dict[str, list] = {}
    token = None
    while True:
        page = retrying(lambda: client.search_runs(
            [exp.experiment_id], "tags.`pinchpoint.run_key` LIKE '%'",
            order_by=["attributes.start_time DESC"], max_results=1000, page_token=token))
        for run in page:
            key = run.data.tags.get("pinchpoint.run_key")
            if key in keys:
                found.setdefault(key, []).append(run)
        token = page.token
        if not token:
            return found


def decide(runs: list) -> Decision:
    """Skip a point that succeeded; rerun one that failed, aborted, never ended, or never ran."""
    for r in runs:
        if r.info.status == "FINISHED" and r.data.tags.get("status") == "success":
            ttt = r.data.metrics.get("time_to_train_s")
            took = f", time_to_train_s {ttt:.1f}" if ttt is not None else ""
            return Decision(False, f"succeeded in run {r.info.run_id[:8]}{took}", r.info.run_id)
    if not runs:
        return Decision(True, "missing (no run with this config)")
    last = runs[0]
    status = last.data.tags.get("status")
    if last.info.status == "RUNNING":
        why = "unfinished (MLflow run still RUNNING: crashed, killed or in progress)"
    elif status == "aborted":
        why = "aborted (stopped at the epoch limit before the target)"
    else:
        why = f"{status or last.info.status.lower()}"
        failure = last.data.tags.get("failure")
        why += f" ({failure})" if failure else ""
    return Decision(True, f"{why} in run {last.info.run_id[:8]}", last.info.run_id)


def find_point_run(uri: str, experiment: str, key: str, array_job_id: str,
                   array_task_id: str) -> Optional[Any]:
    """The run a Slurm array task worked on: the one it created (Slurm tags match) or, when it
    resumed an older run from a checkpoint, the most recent run of the point."""
    runs = point_runs(uri, experiment, key)
    for r in runs:
        t = r.data.tags
        if (t.get("slurm_array_job_id"), t.get("slurm_array_task_id")) == \
                (array_job_id, array_task_id):
            return r
    return runs[0] if runs else None


def record_slurm(uri: str, run_id: str, tags: dict[str, Any], metrics: dict[str, float],
                 logs: list[str], failure: Optional[str]) -> None:
    """Attach the submitting side's facts to a point's run; close it FAILED when its job ended
    without the run doing so (cancelled, killed at the time limit, node failure)."""
    import time

    from mlflow.entities import Metric, RunTag

    client = _client(uri)
    now = int(time.time() * 1000)
    retrying(lambda: client.log_batch(
        run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None],
        tags=[RunTag(k, str(v)) for k, v in tags.items()]))
    for path in logs:
        if os.path.exists(path):
            retrying(lambda: client.log_artifact(run_id, path, "slurm"))
    if failure and retrying(lambda: client.get_run(run_id)).info.status == "RUNNING":
        retrying(lambda: client.log_batch(run_id, tags=[RunTag("status", "failed"),
                                                        RunTag("failure", failure)]))
        retrying(lambda: client.set_terminated(run_id, "FAILED"))


def tag_sweep(uri: str, parent_run_id: str, tags: dict[str, Any]) -> None:
    from mlflow.entities import RunTag

    client = _client(uri)
    retrying(lambda: client.log_batch(parent_run_id,
                                      tags=[RunTag(k, str(v)) for k, v in tags.items()]))


def discard_sweep(uri: str, sweep_dir: str) -> None:
    """Undo what on_multirun_start made for a sweep refused before launching anything: its
    parent run (deleted, so no empty RUNNING sweep is left behind) and its bookkeeping files."""
    parent = parent_run_id(sweep_dir)
    if parent:
        client = _client(uri)
        # Ended first: a deleted run keeps its status, and 'mlflow gc' or a search with
        # ViewType.ALL would still show it RUNNING.
        retrying(lambda: client.set_terminated(parent, "KILLED"))
        retrying(lambda: client.delete_run(parent))
    for name in (PARENT_FILE, SWEPT_FILE, "multirun.yaml"):
        try:
            os.remove(os.path.join(sweep_dir, name))
        except FileNotFoundError:
            pass
    try:
        os.rmdir(sweep_dir)
    except OSError:
        pass   # not empty: something else lives there


def fail_sweep(uri: str, sweep_dir: str, failed: list[str]) -> None:
    """Close a sweep's parent FAILED, naming its failed points (some may have no MLflow run:
    cancelled while queued, or crashed before tracking started)."""
    from mlflow.entities import RunTag

    parent = parent_run_id(sweep_dir)
    if not parent:
        return
    client = _client(uri)
    retrying(lambda: client.log_batch(parent, tags=[
        RunTag("pinchpoint.failed_points", "; ".join(failed)[:5000])]))
    retrying(lambda: client.set_terminated(parent, "FAILED"))
