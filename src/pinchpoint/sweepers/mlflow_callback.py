"""Hydra callback: a multirun becomes one MLflow parent run with a child per point
(``hydra.callbacks.mlflow_sweep._target_`` in conf/train.yaml names this class).

on_multirun_start creates the store (once, before any job can race on it) and the parent run,
named after the sweep and its axes, with the sweep's settings as params and its question as
description, and writes its id into the sweep folder, where every job (basic launcher, submitit
local or Slurm) finds it (tracking/sweep_folder.py). on_multirun_end writes the comparison into
the parent's description (analysis/summary.py: table of points, best point, crossovers, report
images) and closes it, FAILED if any child failed. A sweep that stops early closes it itself
(sweepers/common.py).
"""
from __future__ import annotations

import json
import logging
import os
import re
from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from pinchpoint.analysis.summary import describe, question
from pinchpoint.tracking.store import absolute_uri, ensure_experiment, ensure_store, retrying
from pinchpoint.tracking.sweep_folder import PARENT_FILE, SWEPT_FILE, parent_run_id

log = logging.getLogger(__name__)
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


def _dry_run(config: DictConfig) -> bool:
    """hydra.sweeper.dry_run=true (pinchpoint_grid) lists points and launches none: no parent."""
    return bool(OmegaConf.select(config, "hydra.sweeper.dry_run", default=False))


def sweep_name(config: DictConfig) -> str:
    """The named experiment (+sweep=NAME), else the MLflow experiment."""
    choices = OmegaConf.select(config, "hydra.runtime.choices", default={}) or {}
    return str(choices.get("sweep") or config.tracking.experiment)


def sweep_file(config: DictConfig) -> Optional[str]:
    """sweeps/NAME.yaml as found on the config search path (for its question)."""
    name = (OmegaConf.select(config, "hydra.runtime.choices", default={}) or {}).get("sweep")
    for source in OmegaConf.select(config, "hydra.runtime.config_sources", default=[]) or []:
        if name and source.get("schema") == "file":
            path = os.path.join(source["path"], "sweep", f"{name}.yaml")
            if os.path.exists(path):
                return path
    return None


def sweep_params(config: DictConfig, axes: list[str]) -> dict[str, str]:
    """What defines the sweep, as the parent's params: its sweeper, each axis's values as
    written, and the settings fixed on the command line."""
    choices = OmegaConf.select(config, "hydra.runtime.choices", default={}) or {}
    params = {"sweep.name": sweep_name(config),
              "sweep.sweeper": str(choices.get("hydra/sweeper", "basic")),
              "sweep.launcher": str(choices.get("hydra/launcher", "basic")),
              "sweep.axes": ", ".join(axes)}
    written = dict(OmegaConf.select(config, "hydra.sweeper.params") or {})
    for override in config.hydra.overrides.task:
        key, _, value = override.partition("=")
        written[key.lstrip("+~")] = value
    for key, value in written.items():
        prefix = "sweep.axis." if key in axes else "sweep.fixed."
        params[prefix + re.sub(r"[^\w\-. /]", "_", key)] = str(value)[:500]
    return params


class MlflowSweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not config.tracking.enabled or _dry_run(config):
            return
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient


        uri = absolute_uri(config.tracking.uri)
        ensure_store(uri)
        exp_id = ensure_experiment(uri, config.tracking.experiment, config.tracking.artifact_root)
        sweep_dir = config.hydra.sweep.dir
        overrides = " ".join(config.hydra.overrides.task)
        axes = swept_keys(config)
        ask = question(sweep_file(config))
        client = MlflowClient(uri)
        run = retrying(lambda: client.create_run(
            exp_id, run_name=f"{sweep_name(config)}: {' × '.join(axes) or 'one point'}",
            tags={"pinchpoint.kind": "sweep", "pinchpoint.sweep_dir": os.path.abspath(sweep_dir),
                  "pinchpoint.overrides": overrides, "pinchpoint.axes": ",".join(axes),
                  **({"pinchpoint.question": ask} if ask else {}),
                  "mlflow.note.content": (f"**Question:** {ask}\n\n" if ask else "") +
                  "_Sweep running: the table of points appears here when it ends._"}))
        params = [Param(k, v) for k, v in sweep_params(config, axes).items()]
        retrying(lambda: client.log_batch(run.info.run_id, params=params))
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
        uri = absolute_uri(config.tracking.uri)
        client = MlflowClient(uri)
        parent = client.get_run(run_id)
        if parent.info.status != "RUNNING":
            return   # already closed (a sweep that stopped early closes its parent first)
        children = client.search_runs([parent.info.experiment_id],
                                      f"tags.mlflow.parentRunId = '{run_id}'")
        failed = [c for c in children if c.info.status != "FINISHED"]
        client.log_metric(run_id, "points", len(children))
        client.log_metric(run_id, "points_failed", len(failed))
        self._describe(config, uri, run_id, client)
        retrying(lambda: client.set_terminated(run_id, "FAILED" if failed else "FINISHED"))

    @staticmethod
    def _describe(config: DictConfig, uri: str, run_id: str, client) -> None:
        """The comparison in the parent's description; a report that cannot be drawn must not
        keep the sweep from closing."""
        parent = client.get_run(run_id)
        axes = [a for a in parent.data.tags.get("pinchpoint.axes", "").split(",") if a]
        try:
            note = describe(uri, run_id, axes, parent.data.tags.get("pinchpoint.question"),
                            str(config.hydra.sweep.dir), client)
        except Exception as err:
            log.warning("sweep summary not written to the parent run: %s", err)
            return
        retrying(lambda: client.set_tag(run_id, "mlflow.note.content", note))
