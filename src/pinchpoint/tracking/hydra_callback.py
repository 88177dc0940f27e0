"""Hydra callback: a multirun becomes one MLflow parent run with a child per point.

on_multirun_start creates the store (once, before any job can race on it) and the parent run,
and writes its id into the sweep folder, where every job (basic launcher, submitit local or
Slurm) finds it. on_multirun_end closes the parent as FAILED if any child failed.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from pinchpoint.tracking.store import absolute_uri, ensure_experiment, ensure_store, retrying

log = logging.getLogger(__name__)
PARENT_FILE = "mlflow_parent_run_id"


def parent_run_id(sweep_dir: Optional[str]) -> Optional[str]:
    if not sweep_dir:
        return None
    path = os.path.join(sweep_dir, PARENT_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return f.read().strip() or None


class MlflowSweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not config.tracking.enabled:
            return
        from mlflow.tracking import MlflowClient

        uri = absolute_uri(config.tracking.uri)
        ensure_store(uri)
        exp_id = ensure_experiment(uri, config.tracking.experiment, config.tracking.artifact_root)
        sweep_dir = config.hydra.sweep.dir
        overrides = " ".join(config.hydra.overrides.task)
        client = MlflowClient(uri)
        run = retrying(lambda: client.create_run(
            exp_id, run_name=f"sweep {config.tracking.experiment}: {overrides}".strip(),
            tags={"pinchpoint.kind": "sweep", "pinchpoint.sweep_dir": os.path.abspath(sweep_dir),
                  "pinchpoint.overrides": overrides}))
        os.makedirs(sweep_dir, exist_ok=True)
        with open(os.path.join(sweep_dir, PARENT_FILE), "w") as f:
            f.write(run.info.run_id)
        log.info("MLflow parent run %s (experiment %s)", run.info.run_id,
                 config.tracking.experiment)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not config.tracking.enabled:
            return
        from mlflow.tracking import MlflowClient

        run_id = parent_run_id(config.hydra.sweep.dir)
        if run_id is None:
            return
        client = MlflowClient(absolute_uri(config.tracking.uri))
        parent = client.get_run(run_id)
        children = client.search_runs([parent.info.experiment_id],
                                      f"tags.mlflow.parentRunId = '{run_id}'")
        failed = [c for c in children if c.info.status != "FINISHED"]
        client.log_metric(run_id, "points", len(children))
        client.log_metric(run_id, "points_failed", len(failed))
        retrying(lambda: client.set_terminated(run_id, "FAILED" if failed else "FINISHED"))
