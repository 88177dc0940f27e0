"""One MLflow run for one sweep point: params, tags, metrics, artifacts, system metrics, resume.

Only rank 0 of a run talks to MLflow. A resumed run (after a crash or a requeue) continues the
same MLflow run id, and metric steps at or below what was already recorded are not re-logged, so
a metric history never holds a step twice.
"""
from __future__ import annotations

import atexit
import logging
import os
from typing import Any, Optional

from pinchpoint.tracking.store import absolute_uri, ensure_experiment, ensure_store, retrying

log = logging.getLogger(__name__)
# "requeued": Slurm requeued the job (submitit exits after marking it); the next attempt continues
# this run, so between attempts it stays RUNNING rather than reading FAILED.
TERMINAL = {"success": "FINISHED", "aborted": "FINISHED", "failed": "FAILED", "killed": "KILLED",
            "requeued": "RUNNING"}


class RunTracker:
    def __init__(self, uri: str, artifact_root: str, experiment: str, system_metrics: bool,
                 system_metrics_interval_s: float):
        self.uri = absolute_uri(uri)
        self.artifact_root = artifact_root
        self.experiment = experiment
        self.system_metrics = system_metrics
        self.interval = system_metrics_interval_s
        self.run_id: Optional[str] = None
        self.resumed = False
        self.step_floor = -1  # metrics at steps <= this were logged by an earlier attempt

    def start(self, run_name: str, tags: dict[str, str], parent_run_id: Optional[str] = None,
              resume_run_id: Optional[str] = None) -> str:
        import mlflow

        for name in ("mlflow", "alembic"):  # MLflow configures its own chatty INFO logger
            logging.getLogger(name).setLevel(logging.WARNING)
        ensure_store(self.uri)
        mlflow.set_tracking_uri(self.uri)
        exp_id = ensure_experiment(self.uri, self.experiment, self.artifact_root)
        if self.system_metrics:
            from mlflow.system_metrics import (set_system_metrics_samples_before_logging,
                                               set_system_metrics_sampling_interval)
            set_system_metrics_sampling_interval(self.interval)
            set_system_metrics_samples_before_logging(1)
        if mlflow.active_run() is not None:  # a previous job in this process left one open
            mlflow.end_run()
        if resume_run_id and self._exists(resume_run_id):
            self.resumed = True
            run = retrying(lambda: mlflow.start_run(run_id=resume_run_id,
                                                    log_system_metrics=self.system_metrics))
            # The id first: last_step() reads this run's history (with the id unset it read an
            # empty one, and a requeued attempt logged its redone evals a second time).
            self.run_id = run.info.run_id
            self.step_floor = self.last_step()
            self._adopt(run, parent_run_id)
        else:
            run = retrying(lambda: mlflow.start_run(
                experiment_id=exp_id, run_name=run_name, parent_run_id=parent_run_id,
                tags={k: str(v) for k, v in tags.items()},  # a REST store takes str only
                log_system_metrics=self.system_metrics))
        self.run_id = run.info.run_id
        # MLflow's own atexit hook would close a run abandoned by an exception as FINISHED;
        # ours runs first (atexit is LIFO) and closes it as FAILED instead.
        atexit.register(self._abandoned)
        return self.run_id

    @staticmethod
    def _adopt(run, parent_run_id: Optional[str]) -> None:
        """A point resumed by another sweep hangs under that sweep's parent from now on; the
        parent it had is kept in a tag."""
        import mlflow
        earlier = run.data.tags.get("mlflow.parentRunId")
        if parent_run_id and earlier != parent_run_id:
            tags = {"mlflow.parentRunId": parent_run_id}
            if earlier:
                tags["pinchpoint.earlier_parent"] = earlier
            retrying(lambda: mlflow.set_tags(tags))

    def _abandoned(self) -> None:
        if self.run_id is not None:
            try:
                self.set_tags({"status": "failed"})
                self.end("failed")
            except Exception:
                pass

    def _exists(self, run_id: str) -> bool:
        from mlflow.tracking import MlflowClient
        try:
            MlflowClient(self.uri).get_run(run_id)
            return True
        except Exception:
            return False

    def last_step(self, metric: str = "train_loss") -> int:
        from mlflow.tracking import MlflowClient
        history = retrying(lambda: MlflowClient(self.uri).get_metric_history(self.run_id, metric))
        return max((m.step for m in history), default=-1)

    def log_params(self, params: dict[str, Any]) -> None:
        import mlflow
        if self.resumed:
            return  # already recorded by the first attempt (params are immutable)
        items = {k: str(v)[:6000] for k, v in params.items()}
        keys = list(items)
        for i in range(0, len(keys), 100):
            chunk = {k: items[k] for k in keys[i:i + 100]}
            retrying(lambda: mlflow.log_params(chunk))

    def set_tags(self, tags: dict[str, Any]) -> None:
        import mlflow
        retrying(lambda: mlflow.set_tags({k: str(v) for k, v in tags.items()}))

    def log_metrics(self, metrics: dict[str, float], step: Optional[int] = None) -> None:
        import mlflow
        if step is not None and step <= self.step_floor:
            return
        clean = {k: float(v) for k, v in metrics.items() if v is not None}
        retrying(lambda: mlflow.log_metrics(clean, step=step))

    def log_artifact(self, path: str, artifact_path: Optional[str] = None) -> None:
        import mlflow
        if os.path.exists(path):
            retrying(lambda: mlflow.log_artifact(path, artifact_path))

    def end(self, status: str) -> None:
        import mlflow
        if self.run_id is None:
            return
        retrying(lambda: mlflow.end_run(TERMINAL.get(status, "FAILED")))
        self.last_run_id, self.run_id = self.run_id, None
