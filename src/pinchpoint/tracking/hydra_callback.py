"""Hydra callback: a multirun becomes one MLflow parent run with a child per point.

on_multirun_start creates the store (once, before any job can race on it) and the parent run,
and writes its id into the sweep folder, where every job (basic launcher, submitit local or
Slurm) finds it. on_multirun_end closes the parent as FAILED if any child failed.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from pinchpoint.tracking.store import absolute_uri, ensure_experiment, ensure_store, retrying

log = logging.getLogger(__name__)
PARENT_FILE = "mlflow_parent_run_id"
SWEPT_FILE = "swept_keys.json"
_SWEEP_FUNCTIONS = ("range(", "choice(", "interval(", "glob(", "tag(")


def swept_keys(config: DictConfig) -> list[str]:
    """Keys that vary across the sweep: comma lists and sweep functions on the command line,
    plus a search space under hydra.sweeper.params (Optuna/crossover sweepers)."""
    keys = []
    for override in config.hydra.overrides.task:
        key, _, value = override.lstrip("+~").partition("=")
        if "," in value or value.startswith(_SWEEP_FUNCTIONS):
            keys.append(key)
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    return keys + [k for k in params if k not in keys]


def read_swept_keys(sweep_dir: Optional[str]) -> Optional[list[str]]:
    path = os.path.join(sweep_dir, SWEPT_FILE) if sweep_dir else None
    if not path or not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _dry_run(config: DictConfig) -> bool:
    """hydra.sweeper.dry_run=true (pinchpoint_grid) lists points and launches none: no parent."""
    return bool(OmegaConf.select(config, "hydra.sweeper.dry_run", default=False))


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
        if not config.tracking.enabled or _dry_run(config):
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
        with open(os.path.join(sweep_dir, SWEPT_FILE), "w") as f:
            json.dump(swept_keys(config), f)
        log.info("MLflow parent run %s (experiment %s)", run.info.run_id,
                 config.tracking.experiment)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not config.tracking.enabled or _dry_run(config):
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
