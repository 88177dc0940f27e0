"""Checkpoints of every workload through torch.distributed.checkpoint (DCP), atomic and verified.

Layout under ``<tier>/checkpoints/<run_key>/``: ``step_00000120/`` (every rank's shard files
and DCP's ``.metadata``) beside ``step_00000120.json``, the manifest: the runner's small state
(loop position, attempt, MLflow run id, MLPerf log offset) and the size and sha256 of every
file of the step. Crash safety: ranks write into ``step_N.tmp/``; rank 0 renames it into place
once the collective save has returned (every shard is on disk), then publishes the manifest,
last. A step is valid when its manifest exists and every file matches it, so a kill -9 at any
instant leaves either a valid checkpoint or debris that is ignored and cleaned up. DCP keys
tensors by name and global shape, so a load reshards into any layout or world size.
"""
from __future__ import annotations

import contextlib
import errno
import glob
import json
import logging
import os
import re
import shutil
import time
import warnings
from dataclasses import dataclass
from typing import Any, Optional

import torch.distributed as dist

from pinchpoint.errors import CheckpointDiskFull
from pinchpoint.storage.atomic import fsync_dir, sha256_file, write_text_atomic

log = logging.getLogger(__name__)
_MANIFEST = re.compile(r"step_(\d{8})\.json$")


@dataclass
class CheckpointWrite:
    step: int
    path: str
    nbytes: int
    seconds: float


@dataclass
class CheckpointRead:
    step: int
    nbytes: int
    seconds: float


def training_state(model, optimizer, step: int, options=None) -> dict[str, Any]:
    """A workload's DCP state: model + optimizer keyed by the full model's parameter names
    (DTensor shards under FSDP/TP, a stage's subset under PP), so DCP reshards into another
    layout; plus the step."""
    from torch.distributed.checkpoint.state_dict import get_state_dict
    model_state, optim_state = get_state_dict(model, optimizer, options=options)
    return {"model": model_state, "optimizer": optim_state, "step": step}


def load_training_state(model, optimizer, state: dict[str, Any], options=None) -> int:
    """Put ``training_state``'s model and optimizer back; returns its step."""
    from torch.distributed.checkpoint.state_dict import set_state_dict
    set_state_dict(model, optimizer, model_state_dict=state["model"],
                   optim_state_dict=state["optimizer"], options=options)
    return int(state["step"])


def disk_full(err: BaseException) -> bool:
    """ENOSPC, raised as itself or wrapped: torch.distributed.checkpoint gathers every rank's
    failure into a CheckpointException (``failures``: rank -> (exception, stack))."""
    todo, seen = [err], set()
    while todo:
        e = todo.pop()
        if id(e) in seen or not isinstance(e, BaseException):
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return True
        # a failure is (exception, stack summary)
        todo += [w[0] if isinstance(w, tuple) else w
                 for w in (getattr(e, "failures", None) or {}).values()]
        todo += [e.__cause__, e.__context__]
    return False


def no_room(path: str, below: int = 1 << 20) -> bool:
    """The filesystem under ``path`` is full (under 1 MiB left): torch's zip writer reports a
    short write on a full disk as RuntimeError('... unexpected pos ...'), not as ENOSPC."""
    probe = path
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    try:
        return shutil.disk_usage(probe).free < below
    except OSError:
        return False


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


@contextlib.contextmanager
def _one_process_ok():
    """DCP warns when it runs without a process group; for a single-process run that is the
    intent (the same format, one writer), so keep the warning out of the user's terminal."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _files(folder: str) -> dict[str, list]:
    """{relative name: [bytes, sha256]} of every file of a DCP folder."""
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            out[os.path.relpath(path, folder)] = [os.path.getsize(path), sha256_file(path)]
    return out


class CheckpointManager:
    """A run's checkpoints as folders on a file tier (``tier.checkpoint_manager`` builds it;
    the object tier's is ``S3CheckpointManager`` in storage/s3_checkpoint.py, same interface)."""

    def __init__(self, tier, run_key: str, keep: int = 2):
        self.tier, self.keep = tier, keep
        self.dir = tier.checkpoints_dir(run_key)

    @classmethod
    def source(cls, tier, where: str) -> "CheckpointManager":
        """Another run's checkpoints, by run key (a folder under the tier) or by path."""
        manager = cls(tier, "unused")
        manager.dir = where if os.path.isabs(where) else tier.checkpoints_dir(where)
        return manager

    @property
    def where(self) -> str:
        """Where the checkpoints are, as a user would look for them."""
        return self.dir

    def step_dir(self, step: int) -> str:
        return os.path.join(self.dir, f"step_{step:08d}")

    def manifest_path(self, step: int) -> str:
        return self.step_dir(step) + ".json"

    # --- writing (collective: every rank calls it with its own part of the state) -------------
    def save(self, state: dict[str, Any], meta: dict[str, Any], step: int,
             is_main: bool) -> Optional[CheckpointWrite]:
        import torch.distributed.checkpoint as dcp
        started = time.perf_counter()
        final, tmp = self.step_dir(step), self.step_dir(step) + ".tmp"
        if is_main:
            for stale in (self.manifest_path(step), tmp, final):  # a killed save, a redone step
                if os.path.isdir(stale):
                    shutil.rmtree(stale, ignore_errors=True)
                elif os.path.exists(stale):
                    os.remove(stale)
            os.makedirs(tmp)
        _barrier()
        try:
            with _one_process_ok():
                dcp.save(state, checkpoint_id=tmp)
            _barrier()
            if not is_main:
                return None
            os.replace(tmp, final)
            fsync_dir(self.dir)
            files = _files(final)
            nbytes = sum(size for size, _ in files.values())
            manifest = {"step": step, "files": files, **meta}
            write_text_atomic(self.manifest_path(step), json.dumps(manifest, default=str))
        except BaseException as err:   # DCP's CheckpointException is a BaseException
            if not (disk_full(err) or no_room(tmp)):
                raise
            raise self._disk_full(step, tmp, is_main) from None
        self.tier.charge_write(nbytes, requests=len(files) + 1, started=started)
        self._prune()
        return CheckpointWrite(step, final, nbytes, time.perf_counter() - started)

    def _disk_full(self, step: int, tmp: str, is_main: bool = True) -> CheckpointDiskFull:
        """ENOSPC, said so a user can act: which checkpoint, on which tier, what is still safe.
        Rank 0 removes the partial step (every rank raises); earlier steps are untouched."""
        if is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            for partial in (self.step_dir(step), self.manifest_path(step)):
                if os.path.isdir(partial):
                    shutil.rmtree(partial, ignore_errors=True)
                elif os.path.exists(partial):
                    os.remove(partial)
        newest = self.latest()
        safe = (f"the newest valid checkpoint is step {newest['step']} "
                f"({self.step_dir(newest['step'])}): rerunning the same command resumes from it"
                if newest else "there is no earlier valid checkpoint")
        return CheckpointDiskFull(
            f"the checkpoint of step {step} could not be written to {self.step_dir(step)} on "
            f"storage tier '{self.tier.name}' ({self.tier.root}): no space left on the device; "
            f"{safe}. Free space there, or point storage.root at a larger disk, or keep fewer "
            f"checkpoints (checkpoint.keep) or write them less often (checkpoint.interval)")

    # --- finding and reading -------------------------------------------------------------------
    def steps(self) -> list[int]:
        found = (_MANIFEST.search(p) for p in glob.glob(os.path.join(self.dir, "step_*.json")))
        return sorted((int(m.group(1)) for m in found if m), reverse=True)

    def manifest(self, step: int) -> Optional[dict[str, Any]]:
        """The step's manifest when every file it lists is present and intact, else None."""
        try:
            with open(self.manifest_path(step)) as f:
                manifest = json.load(f)
        except (OSError, ValueError):
            return None
        folder = self.step_dir(step)
        for name, (size, digest) in manifest.get("files", {}).items():
            path = os.path.join(folder, name)
            if not os.path.exists(path) or os.path.getsize(path) != size \
                    or sha256_file(path) != digest:
                log.warning("ignoring checkpoint %s: %s is missing or damaged", folder, name)
                return None
        return manifest if ".metadata" in manifest.get("files", {}) else None

    def latest(self) -> Optional[dict[str, Any]]:
        """The manifest of the newest valid checkpoint, or None."""
        for step in self.steps():
            found = self.manifest(step)
            if found is not None:
                return found
        return None

    def load(self, template: dict[str, Any], step: int) -> CheckpointRead:
        """Collective: fill ``template`` (this rank's part, any layout) in place."""
        import torch.distributed.checkpoint as dcp
        started = time.perf_counter()
        folder = self.step_dir(step)
        with _one_process_ok():
            dcp.load(template, checkpoint_id=folder)
        nbytes = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(folder)
                     for f in fs)
        return CheckpointRead(step, nbytes, time.perf_counter() - started)

    # --- housekeeping --------------------------------------------------------------------------
    def _prune(self) -> None:
        for step in self.steps()[self.keep:]:
            # Manifest first: a half-pruned step is simply invalid.
            try:
                os.remove(self.manifest_path(step))
            except FileNotFoundError:
                pass
            shutil.rmtree(self.step_dir(step), ignore_errors=True)
        for debris in glob.glob(os.path.join(self.dir, "step_*.tmp")):
            shutil.rmtree(debris, ignore_errors=True)

    def clear(self) -> None:
        for path in glob.glob(os.path.join(self.dir, "step_*")) + \
                glob.glob(os.path.join(self.dir, "progress.json")):
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.remove(path)
