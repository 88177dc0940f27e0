"""Create the MLflow store once, safely, before any fan-out.

A fresh sqlite store is corrupted when several processes run its schema migrations at once, so
creation (and experiment creation) happens under an exclusive file lock beside the database;
later writers only open it. sqlite writes retry on 'database is locked' (see ``retrying``).
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from typing import Callable, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def sqlite_path(uri: str) -> str | None:
    return uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else None


def absolute_uri(uri: str) -> str:
    """sqlite:///relative/path -> sqlite:////abs/path (jobs may run from another cwd)."""
    path = sqlite_path(uri)
    if path is None or os.path.isabs(path):
        return uri
    return "sqlite:///" + os.path.abspath(path)


@contextlib.contextmanager
def store_lock(uri: str):
    path = sqlite_path(uri)
    if path is None:  # a tracking server serialises for us
        yield
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def retrying(fn: Callable[[], T], attempts: int = 8, first_delay: float = 0.2) -> T:
    """Retry an MLflow call on transient sqlite lock errors, with backoff."""
    delay = first_delay
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as err:  # MlflowException wraps sqlalchemy OperationalError
            if "locked" not in str(err).lower() or attempt == attempts - 1:
                raise
            log.debug("store busy (%s); retrying in %.1f s", err, delay)
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def ensure_store(uri: str) -> None:
    """Create the store's schema (once) under the lock."""
    from mlflow.tracking import MlflowClient

    for name in ("mlflow", "alembic"):  # MLflow configures its own chatty INFO logger
        logging.getLogger(name).setLevel(logging.WARNING)
    with store_lock(uri):
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)


def ensure_experiment(uri: str, name: str, artifact_root: str) -> str:
    """Experiment id for ``name``, created (with its artifact folder) if missing."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    with store_lock(uri):
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        if ":/" in artifact_root:   # a URI: s3://..., mlflow-artifacts:/ (a tracking server)
            location = artifact_root.rstrip("/") + "/" + name
        else:
            location = "file://" + os.path.join(os.path.abspath(artifact_root), name)
        exp_id = client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_KIND)
        client.set_experiment_tag(exp_id, "mlflow.note.content",
                                  f"pinchpoint runs of `{name}`: time_to_train_s, phase "
                                  "fractions and bottleneck per run; sweeps are parent runs.")
        return exp_id
