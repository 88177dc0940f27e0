"""The ``parallel`` group before launch (runner/validation.py calls ``validate_parallel`` first):
the degrees checked once by ParallelDims (dims.py), placed on the run's nodes."""
from __future__ import annotations

import contextlib
from typing import Any

from omegaconf import DictConfig, read_write

from pinchpoint.config.validate import cluster_nodes
from pinchpoint.errors import one_of
from pinchpoint.parallel.dims import ParallelDims


def validate_parallel(cfg: Any) -> ParallelDims:
    """Check the degrees once, and their placement on the run's nodes, and write the derived
    world size back into the config (composed or typed), so the launchers and Slurm requests
    read it."""
    nodes = cluster_nodes(cfg)
    world = cfg.parallel.world_size or ParallelDims.from_config(cfg.parallel).world_size
    # A node count that does not divide the ranks is cluster.nodes' error (validate_cluster):
    # the placement is checked only on one that does.
    fits = isinstance(nodes, int) and nodes > 0 and world % nodes == 0
    dims = ParallelDims.from_config(cfg.parallel, nodes=nodes if fits else None)
    with read_write(cfg) if isinstance(cfg, DictConfig) else contextlib.nullcontext():
        cfg.parallel.world_size = dims.world_size
        cfg.parallel.dp_shard = dims.dp_shard
    one_of(cfg.parallel.backend, "parallel.backend", ["auto", "gloo", "nccl"])
    return dims
