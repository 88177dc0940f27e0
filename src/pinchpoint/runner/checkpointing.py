"""The runner's checkpoints: what is saved with a workload's state (loop position, RNG, phase
totals, the MLflow run and MLPerf log to continue), finding the checkpoint to resume from, and
the progress marker that makes ``steps_redone`` exact after a crash."""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from pinchpoint.errors import ConfigError
from pinchpoint.runner import loop
from pinchpoint.storage.checkpoint import CheckpointManager, CheckpointWrite
from pinchpoint.storage.tier import StorageTier
from pinchpoint.workloads.base import Workload

log = logging.getLogger(__name__)


@dataclass
class Resume:
    step: int
    meta: dict                 # the manifest: loop state, attempt, mlflow run id, log offset
    source: CheckpointManager   # or S3CheckpointManager (the object tier's): same interface
    imported: bool = False     # from another run (checkpoint.resume_from): a new MLflow run
    load_seconds: float = 0.0
    load_bytes: int = 0


def find_resume(own: Optional[CheckpointManager], tier: StorageTier,
                resume_from: Optional[str]) -> Optional[Resume]:
    """This run's newest valid checkpoint; else, when asked, another run's
    (checkpoint.resume_from). Every rank reads the same manifests on the tier."""
    found = own.latest() if own is not None else None
    if found is not None:
        _require_mlperf_log(found, own)
        return Resume(found["step"], found, own)
    if not resume_from:
        return None
    source = tier.checkpoint_source(resume_from)
    found = source.latest()
    if found is None:
        raise ConfigError("checkpoint.resume_from", resume_from,
                          f"a run key or folder holding a valid checkpoint "
                          f"({source.where} has none)")
    _require_mlperf_log(found, source)
    return Resume(found["step"], found, source, imported=True)


def _require_mlperf_log(manifest: dict, source) -> None:
    """A resume continues the first attempt's MLPerf log (its run_start is the clock's zero).
    Without it the run would train to the end and then fail with 'run_start not recorded', so
    refuse now, before any step, and say how to go on."""
    path = manifest.get("mlperf_log")
    if not path or os.path.exists(path):
        return
    raise ConfigError("checkpoint", f"step {manifest['step']} in {source.where}",
                      f"a checkpoint whose MLPerf log is present; {path} is gone (its run_start "
                      f"is this run's time-to-train origin). Restore that file to resume from "
                      f"step {manifest['step']}, or delete {source.where} to start afresh")


def restore(resume: Resume, workload: Workload, phases) -> loop.LoopState:
    """Load the workload's state (any layout: DCP reshards) and the runner's; every rank."""
    started = time.perf_counter()
    template = {"workload": workload.state_dict(), "rng": loop.rng_state()}
    read = resume.source.load(template, resume.step)
    workload.load_state_dict(template["workload"])
    loop.set_rng_state(template["rng"])
    resume.load_seconds, resume.load_bytes = time.perf_counter() - started, read.nbytes
    phases.totals.update(resume.meta["phase_totals"])
    phases.step_times = list(resume.meta.get("step_times", []))
    state = dict(resume.meta["loop"])
    state["evals"] = [tuple(e) for e in state["evals"]]
    return loop.LoopState(**state)


@dataclass
class Saver:
    """Saves a checkpoint every ``checkpoint.interval`` steps (collective: every rank)."""
    manager: CheckpointManager
    workload: Workload
    is_main: bool
    meta: Any                  # () -> dict: the runner's state at save time
    writes: list = field(default_factory=list)

    def __call__(self, state: loop.LoopState) -> Optional[CheckpointWrite]:
        import torch
        payload = {"workload": self.workload.state_dict(), "rng": loop.rng_state()}
        meta = {"loop": state.to_dict(), "torch_version": torch.__version__, **self.meta()}
        write = self.manager.save(payload, meta, state.step, self.is_main)
        if write is not None:
            self.writes.append(write)
        return write


class ProgressMarker:
    """How far the run got, written after every step (rank 0, only when checkpointing), so a
    resume knows exactly how many steps it redoes (steps reached - checkpointed step)."""

    def __init__(self, manager: Optional[CheckpointManager], is_main: bool):
        self.path = os.path.join(manager.dir, "progress.json") if manager else None
        self.enabled = manager is not None and is_main

    def write(self, step: int) -> None:
        if not self.enabled:
            return
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path + ".tmp", "w") as f:
            json.dump({"step": step}, f)
        os.replace(self.path + ".tmp", self.path)  # a kill -9 leaves the old or the new one

    def read(self) -> int:
        try:
            with open(self.path) as f:
                return int(json.load(f)["step"])
        except (OSError, ValueError, KeyError, TypeError):
            return -1
