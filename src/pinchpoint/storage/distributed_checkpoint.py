"""Sharded checkpoints through torch.distributed.checkpoint (DCP), beside the runner's small
rank-0 checkpoint file.

Layout under the run's checkpoint folder: ``step_00000120.dcp/`` (every rank's shard files +
DCP's ``.metadata``) next to ``step_00000120.pt`` (loop state, rng, ... from rank 0). Crash
safety: ranks write into ``step_N.dcp.tmp``; rank 0 renames it into place once DCP has written
its metadata (the save is collective, so by then every shard is on disk), and only then writes
``step_N.pt`` and its checksum. A ``.pt`` with a valid checksum therefore always has a complete
``.dcp`` beside it; a kill -9 at any instant leaves debris that the next save removes.
DCP keys tensors by fully-qualified parameter name and global shape, so a load reshards into any
layout or world size.
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from typing import Any

import torch.distributed as dist

from pinchpoint.storage.atomic import fsync_dir


@dataclass
class ShardedIO:
    path: str
    nbytes: int      # all ranks' shard files + metadata
    seconds: float


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def folder_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path)
               for f in files)


def save(state: dict[str, Any], final: str, is_main: bool) -> ShardedIO:
    """Collective: every rank calls it with its own (sharded) state."""
    import torch.distributed.checkpoint as dcp
    started = time.perf_counter()
    tmp = final + ".tmp"
    if is_main:
        for stale in (tmp, final):  # debris of a killed save / a redone step
            shutil.rmtree(stale, ignore_errors=True)
        os.makedirs(tmp)
    _barrier()
    dcp.save(state, checkpoint_id=tmp)
    _barrier()
    nbytes = 0
    if is_main:
        os.replace(tmp, final)
        fsync_dir(os.path.dirname(final))
        nbytes = folder_bytes(final)
    return ShardedIO(final, nbytes, time.perf_counter() - started)


def load(template: dict[str, Any], path: str) -> ShardedIO:
    """Collective: fill ``template`` (this rank's shards, any layout) in place from ``path``."""
    import torch.distributed.checkpoint as dcp
    if not os.path.exists(os.path.join(path, ".metadata")):
        raise FileNotFoundError(f"{path}: no DCP metadata (incomplete sharded checkpoint)")
    started = time.perf_counter()
    dcp.load(template, checkpoint_id=path)
    return ShardedIO(path, folder_bytes(path), time.perf_counter() - started)


def is_complete(path: str) -> bool:
    return os.path.exists(os.path.join(path, ".metadata"))
