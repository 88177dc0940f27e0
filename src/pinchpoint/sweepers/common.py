"""What both sweepers share: compose and validate points before launching, read back what each
point recorded, and write to the sweep's parent MLflow run."""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf

from pinchpoint.sweepers.space import SweepError

log = logging.getLogger(__name__)
DEFAULT_VALIDATOR = "pinchpoint.runner.validation.validate"
AUTO = "auto"   # hydra.sweeper.validator default: pinchpoint's validator for pinchpoint's app only


def is_pinchpoint_app(config: DictConfig) -> bool:
    """Is this train.py's config (typed by pinchpoint's run schema) rather than another Hydra
    app that borrowed the sweeper? pinchpoint's checks and defaults apply to its own app only."""
    kind = OmegaConf.get_type(config)
    return bool(kind) and getattr(kind, "__module__", "").startswith("pinchpoint.")


def validator_for(validator: Optional[str], config: DictConfig) -> Optional[str]:
    if validator == AUTO:
        return DEFAULT_VALIDATOR if is_pinchpoint_app(config) else None
    return validator or None


# Metrics that exist only for a run that reached its quality target.
NEEDS_TARGET = frozenset({"time_to_train_s"})


@dataclass
class PointResult:
    """One launched point as recorded: status success|aborted|failed, metrics, bottleneck."""
    overrides: list[str]
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    bottleneck: Optional[str] = None
    run_id: Optional[str] = None
    error: Optional[str] = None

    def value(self, metric: str, direction: str) -> float:
        """The objective; the worst value (inf or -inf) for a failed run, and for a time to
        train that was not reached. A run stopped short of the target (``aborted``: max_steps,
        a time limit) still measured its throughput, phase shares and bytes: those count (as
        in ``pinchpoint report``), so a sweep of short runs can compare steady-state speed."""
        worst = math.inf if direction == "minimize" else -math.inf
        if self.status == "failed" or (metric in NEEDS_TARGET and self.status != "success"):
            return worst
        v = self.metrics.get(metric)
        return worst if v is None or math.isnan(v) else float(v)


class LaunchingSweeper(Sweeper):
    """A Hydra sweeper that hands its points to whatever launcher the config selects, and
    closes the sweep's MLflow parent run when the sweep stops early (see closing_parent)."""

    launched = False

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def launch(self, batch: Sequence[Sequence[str]], job_idx: int) -> list:
        self.launched = True
        return launch(self.launcher, batch, job_idx)

    @contextlib.contextmanager
    def closing_parent(self):
        """A sweep refused before any point ran leaves no parent run (it is deleted); one that
        stops after points ran closes its parent FAILED, with the summary of what ran. Hydra
        calls on_multirun_end only when the sweep returns, so neither is left RUNNING."""
        try:
            yield
        except BaseException as err:
            if OmegaConf.select(self.config, "tracking.enabled", default=False):
                self._close_parent(err)
            raise

    def _close_parent(self, err: BaseException) -> None:
        from pinchpoint.tracking.points import discard_sweep, fail_sweep

        uri, sweep_dir = self.config.tracking.uri, str(self.config.hydra.sweep.dir)
        try:
            if not self.launched:
                discard_sweep(uri, sweep_dir)
                return
            self.hydra_context.callbacks.on_multirun_end(config=self.config)
            fail_sweep(uri, sweep_dir, [f"sweep stopped: {error_text(err)}"])
        except Exception as close_err:  # the sweep's own error is the one to show
            log.warning("could not close the sweep's MLflow parent run: %s", close_err)


class PointChecker:
    """Composes each point's config as the launcher will, then runs the pre-flight validator."""

    def __init__(self, hydra_context, config: DictConfig, validator: Optional[str]):
        self.loader = hydra_context.config_loader
        self.config = config
        self.validator: Optional[Callable[[DictConfig], None]] = None
        validator = validator_for(validator, config)
        if validator:
            from hydra.utils import get_method
            self.validator = get_method(validator)
        self.preflight = None   # pinchpoint's own validator has a fast path (preflight.py)
        if validator == DEFAULT_VALIDATOR:
            from pinchpoint.sweepers.preflight import Preflight
            self.preflight = Preflight(self)

    def compose(self, overrides: Sequence[str]) -> DictConfig:
        try:
            return self.loader.load_sweep_config(master_config=self.config,
                                                 sweep_overrides=list(overrides))
        except Exception as err:  # Hydra's own message says which override and what exists
            raise SweepError(f"point {' '.join(overrides)} does not compose: {err}") from err

    def task_config(self, overrides: Sequence[str]) -> DictConfig:
        """The point's config as its task function will see it (without Hydra's node)."""
        from omegaconf import open_dict, read_write

        cfg = self.compose(overrides)
        with read_write(cfg), open_dict(cfg):
            cfg.pop("hydra", None)
        return cfg

    def problem(self, overrides: Sequence[str]):
        """None when the point can run, else the ConfigError (naming the field) it raises."""
        from pinchpoint.errors import ConfigError

        if self.validator is None:
            self.compose(overrides)
            return None
        if self.preflight is not None:
            try:
                self.preflight.check(overrides)
            except ConfigError as err:
                return err
            return None
        cfg = self.task_config(overrides)
        try:
            self.validator(cfg)
        except ConfigError as err:
            return err
        return None

    def require_all(self, points: Sequence[Sequence[str]]) -> None:
        """Fail before any job runs when any point is invalid."""
        for overrides in points:
            err = self.problem(overrides)
            if err is not None:
                raise SweepError(f"point {' '.join(overrides)} is invalid: {err}") from err


# --- reading results -------------------------------------------------------------------------
def read_results(returns: Sequence[Any]) -> list[PointResult]:
    """What each job recorded: its MLflow run, else its phase_summary.json, else its return
    value."""
    return [read_result(r) for r in returns]


def read_result(ret) -> PointResult:
    from hydra.core.utils import JobStatus

    overrides = list(ret.overrides or [])
    if ret.status != JobStatus.COMPLETED:
        found = _from_mlflow(ret)
        error = error_text(ret._return_value)
        if found is not None:
            found.status, found.error = "failed", error
            return found
        return PointResult(overrides, "failed", error=error)
    for reader in (_from_mlflow, _from_summary_file):
        found = reader(ret)
        if found is not None:
            return found
    return _from_return_value(overrides, ret.return_value)


def error_text(err: BaseException) -> str:
    """``RuntimeError: cfg.error is True``: what a user needs from a failed job in one line."""
    text = " ".join(line.strip() for line in str(err).strip().splitlines())
    return f"{type(err).__name__}: {text}"[:1000]


def _output_dir(ret) -> Optional[str]:
    return OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir", default=None) \
        if ret.hydra_cfg is not None else None


def _from_mlflow(ret) -> Optional[PointResult]:
    cfg = ret.cfg
    out = _output_dir(ret)
    if cfg is None or out is None or not OmegaConf.select(cfg, "tracking.enabled", default=False):
        return None
    from pinchpoint.tracking.store import absolute_uri, retrying

    client = _client(absolute_uri(cfg.tracking.uri))
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    if exp is None:
        return None
    path = os.path.abspath(out).replace("'", "\\'")
    runs = retrying(lambda: client.search_runs([exp.experiment_id],
                                               f"tags.output_dir = '{path}'", max_results=1))
    if not runs:
        return None
    run = runs[0]
    from pinchpoint.metric_names import flat_metrics  # MLflow's grouped names, flat
    return PointResult(list(ret.overrides or []), run.data.tags.get("status", "failed"),
                       flat_metrics(run.data.metrics), run.data.tags.get("bottleneck"),
                       run.info.run_id)


@functools.lru_cache(maxsize=4)
def _client(uri: str):
    """One client per store for the whole sweep (a new one per point costs a store check)."""
    from mlflow.tracking import MlflowClient
    return MlflowClient(uri)


def _from_summary_file(ret) -> Optional[PointResult]:
    out = _output_dir(ret)
    path = os.path.join(out, "phase_summary.json") if out else None
    if not path or not os.path.exists(path):
        return None
    with open(path) as f:
        summary = json.load(f)
    return _from_mapping(list(ret.overrides or []), summary)


def _from_mapping(overrides: list[str], data: dict) -> PointResult:
    metrics = {k: float(v) for k, v in data.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return PointResult(overrides, str(data.get("status", "success")), metrics,
                       data.get("bottleneck"))


def _from_return_value(overrides: list[str], value: Any) -> PointResult:
    """A task that records nothing: a dict of metrics, or one number (time_to_train_s)."""
    if isinstance(value, dict) or OmegaConf.is_dict(value):
        return _from_mapping(overrides, dict(value))
    try:
        number = float(value)
    except (TypeError, ValueError):
        return PointResult(overrides, "failed", error=f"return value {value!r} is not a number")
    status = "success" if math.isfinite(number) else "aborted"
    return PointResult(overrides, status, {"time_to_train_s": number, "return_value": number})


# --- the parent run ---------------------------------------------------------------------------
class ParentRun:
    """The sweep's MLflow parent run (made by MlflowSweepCallback); a no-op without tracking."""

    def __init__(self, config: DictConfig):
        from pinchpoint.tracking.sweep_folder import parent_run_id

        self.run_id = None
        self.client = None
        if OmegaConf.select(config, "tracking.enabled", default=False):
            self.run_id = parent_run_id(config.hydra.sweep.dir)
        if self.run_id:
            from mlflow.tracking import MlflowClient

            from pinchpoint.tracking.store import absolute_uri
            self.client = MlflowClient(absolute_uri(config.tracking.uri))

    def set_tags(self, tags: dict[str, Any]) -> None:
        if self.client is None:
            return
        from pinchpoint.tracking.store import retrying
        for k, v in tags.items():
            retrying(lambda: self.client.set_tag(self.run_id, k, str(v)[:5000]))

    def log_metrics(self, metrics: dict[str, float]) -> None:
        if self.client is None:
            return
        from pinchpoint.tracking.store import retrying
        for k, v in metrics.items():
            retrying(lambda: self.client.log_metric(self.run_id, k, float(v)))

    def log_artifact(self, path: str, artifact_path: Optional[str] = None) -> None:
        if self.client is None or not os.path.exists(path):
            return
        from pinchpoint.tracking.store import retrying
        retrying(lambda: self.client.log_artifact(self.run_id, path, artifact_path))


def launch(launcher, batch: Sequence[Sequence[str]], job_idx: int) -> list:
    """Hand a batch to whatever launcher is configured (basic, submitit local, Slurm)."""
    log.info("launching %d job(s): %s", len(batch), "; ".join(" ".join(b) for b in batch))
    return list(launcher.launch([list(b) for b in batch], initial_job_idx=job_idx))
