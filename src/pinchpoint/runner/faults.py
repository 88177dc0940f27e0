"""Fault hooks for tests and recovery measurements (``fault=KIND:N``):

- ``raise_at_step:N``: raise on the last rank at step N, so a failure must travel to rank 0 and
  the launcher to be seen.
- ``kill_at_step:N``: SIGKILL the run's own process group at step N (every rank, the launcher
  too): a node dying mid-run, with no chance to clean up. Before dying, rank 0 writes
  ``killed.json`` (wall time, step) into the run's output folder, so a driver that reruns the
  command can measure seconds from kill to training resumed (``recovery_seconds``).
- ``requeue_at_step:N``: what submitit does when Slurm signals a time limit or preemption and
  the job was requeued: mark the process as requeued (``REQUEUED`` in its environment, which
  sweepers/slurm_launcher.py's checkpoint hook sets on a real cluster) and exit. The run's MLflow run
  stays RUNNING, tagged ``status=requeued``, until the next attempt continues it.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Optional

from pinchpoint.errors import ConfigError
from pinchpoint.parallel.context import RankContext

KINDS = ("raise_at_step", "kill_at_step", "requeue_at_step")
KILL_RECORD = "killed.json"
REQUEUED = "PINCHPOINT_REQUEUED"   # set in a Slurm task whose job has just been requeued


def parse(spec: Optional[str]) -> tuple[Optional[str], Optional[int]]:
    """``"kill_at_step:7"`` -> ("kill_at_step", 7); None -> (None, None)."""
    if not spec:
        return None, None
    kind, _, at = spec.partition(":")
    if kind not in KINDS or not at.isdigit() or int(at) < 1:
        raise ConfigError("fault", spec, "raise_at_step:N, kill_at_step:N or requeue_at_step:N "
                          "with N >= 1")
    return kind, int(at)


class Fault:
    def __init__(self, spec: Optional[str], ctx: RankContext, output_dir: Optional[str] = None):
        self.spec, self.rank, self.output_dir = spec, ctx.rank, output_dir
        self.kind, at = parse(spec)
        # raise: only the last rank, so the failure has to travel; kill: rank 0 kills the group
        # (all ranks and the launcher share it), the others leave it to rank 0.
        acting = ctx.world_size - 1 if self.kind == "raise_at_step" else 0
        self.step = at if ctx.rank == acting else None

    def check(self, step: int) -> None:
        if self.step is None or step != self.step:
            return
        if self.kind == "raise_at_step":
            raise RuntimeError(f"injected fault on rank {self.rank} at step {step} "
                               f"(fault={self.spec})")
        if self.kind == "requeue_at_step":
            os.environ[REQUEUED] = "1"
            sys.exit(-1)   # as submitit's signal handler does after `scontrol requeue`
        self._kill(step)

    def _kill(self, step: int) -> None:
        if self.output_dir:
            os.makedirs(self.output_dir, exist_ok=True)
            with open(os.path.join(self.output_dir, KILL_RECORD), "w") as f:
                json.dump({"killed_at": time.time(), "step": step, "fault": self.spec}, f)
                f.flush()
                os.fsync(f.fileno())
        os.killpg(os.getpgid(0), signal.SIGKILL)


def read_kill(output_dir: str) -> Optional[dict]:
    """The kill record a ``kill_at_step`` fault left in a run's output folder, if any."""
    try:
        with open(os.path.join(output_dir, KILL_RECORD)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
