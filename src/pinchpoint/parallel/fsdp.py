"""FSDP2 (``fully_shard``) over the data-parallel mesh dims: FSDP when only ``dp_shard`` > 1,
HSDP (replicate x shard on a 2-D mesh) when both are, pure replication when only
``dp_replicate`` > 1 (a shard dim of 1). One unit per block, so the next block's all-gather
overlaps this block's compute, then the root for what is left (embeddings, norm, head)."""
from __future__ import annotations

from typing import Iterable

from torch import nn

from pinchpoint.parallel.dims import ParallelDims


def data_parallel_mesh(mesh, dims: ParallelDims):
    """The (dp_replicate, dp_shard) sub-mesh fully_shard takes (HSDP when 2-D)."""
    if dims.dp_replicate > 1:  # HSDP (a dp_shard of 1 = pure replication)
        return mesh["dp_replicate", "dp_shard"]
    return mesh["dp_shard"]


def shard_model(model: nn.Module, blocks: Iterable[nn.Module], mesh, dims: ParallelDims,
                reshard_after_forward: bool = True, ignored: set | None = None) -> None:
    """Apply FSDP2 in place. ``blocks``: the units to shard one by one (transformer blocks);
    ``ignored``: parameters sharded otherwise (experts over the EP group), left alone."""
    if dims.dp == 1:
        return
    from torch.distributed.fsdp import fully_shard
    dp_mesh = data_parallel_mesh(mesh, dims)
    for block in blocks:
        fully_shard(block, mesh=dp_mesh, reshard_after_forward=reshard_after_forward,
                    ignored_params=ignored or None)
    # The root (embedding, norm, head) stays gathered between forward and backward (torch's
    # default for the root): resharding it would re-gather it for every micro-batch's backward.
    fully_shard(model, mesh=dp_mesh, ignored_params=ignored or None)
