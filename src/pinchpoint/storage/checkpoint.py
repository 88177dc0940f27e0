"""Atomic, checksummed checkpoints on a storage tier, and finding the newest valid one.

Layout under ``<tier>/checkpoints/<run_key>/``: ``step_00000120.pt`` (torch.save) beside
``step_00000120.pt.sha256``. A checkpoint is valid when both exist and the digest matches; the
checksum file is written after the data file is renamed into place, so a crash at any instant
leaves either a valid checkpoint or one that is ignored (and cleaned up).
"""
from __future__ import annotations

import glob
import io
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from typing import Any, Optional

import torch

from pinchpoint.storage.atomic import atomic_write, sha256_file, write_text_atomic
from pinchpoint.storage.tier import StorageTier

log = logging.getLogger(__name__)
_NAME = re.compile(r"step_(\d{8})\.pt$")


@dataclass
class CheckpointWrite:
    step: int
    path: str
    nbytes: int
    seconds: float


class CheckpointManager:
    def __init__(self, tier: StorageTier, run_key: str, keep: int = 2):
        self.tier, self.keep = tier, keep
        self.dir = tier.checkpoints_dir(run_key)

    @classmethod
    def source(cls, tier: StorageTier, where: str) -> "CheckpointManager":
        """Another run's checkpoints, by run key (a folder under the tier) or by path."""
        manager = cls(tier, "unused")
        manager.dir = where if os.path.isabs(where) else tier.checkpoints_dir(where)
        return manager

    def _path(self, step: int) -> str:
        return os.path.join(self.dir, f"step_{step:08d}.pt")

    def save(self, state: dict[str, Any], step: int) -> CheckpointWrite:
        started = time.perf_counter()
        buffer = io.BytesIO()
        torch.save(state, buffer)
        path = self._path(step)
        with atomic_write(path) as w:
            w.write(buffer.getbuffer())
        write_text_atomic(path + ".sha256", w.sha256.hexdigest() + "\n")
        self.tier.charge_write(w.nbytes, requests=2, started=started)
        self._prune()
        return CheckpointWrite(step, path, w.nbytes, time.perf_counter() - started)

    def sharded_path(self, step: int) -> str:
        """Folder of the step's DCP shards (workloads with distributed_state_dict)."""
        return os.path.join(self.dir, f"step_{step:08d}.dcp")

    def steps(self) -> list[int]:
        found = (_NAME.search(p) for p in glob.glob(os.path.join(self.dir, "step_*.pt")))
        return sorted((int(m.group(1)) for m in found if m), reverse=True)

    def is_valid(self, step: int) -> bool:
        path = self._path(step)
        try:
            with open(path + ".sha256") as f:
                expected = f.read().strip()
        except FileNotFoundError:
            return False
        return sha256_file(path) == expected

    def load_latest(self) -> Optional[tuple[int, dict[str, Any], float]]:
        """(step, state, load seconds) of the newest valid checkpoint, or None."""
        for step in self.steps():
            started = time.perf_counter()
            if not self.is_valid(step):
                log.warning("ignoring invalid checkpoint %s (checksum missing or wrong)",
                            self._path(step))
                continue
            state = torch.load(self._path(step), map_location="cpu", weights_only=False)
            if state.get("sharded") and not os.path.exists(
                    os.path.join(self.sharded_path(step), ".metadata")):
                log.warning("ignoring checkpoint %s: its shards %s are incomplete",
                            self._path(step), self.sharded_path(step))
                continue
            return step, state, time.perf_counter() - started
        return None

    def _prune(self) -> None:
        valid = [s for s in self.steps() if os.path.exists(self._path(s) + ".sha256")]
        for step in valid[self.keep:]:
            for suffix in (".sha256", ""):  # checksum first: a half-pruned step is simply invalid
                try:
                    os.remove(self._path(step) + suffix)
                except FileNotFoundError:
                    pass
            shutil.rmtree(self.sharded_path(step), ignore_errors=True)

    def clear(self) -> None:
        for path in glob.glob(os.path.join(self.dir, "step_*")) + \
                glob.glob(os.path.join(self.dir, "progress.json")):
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.remove(path)
