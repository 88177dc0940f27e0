"""Embedding-parallel DLRM-DCNv2: table-wise sharded embeddings exchanged with all-to-all, the
dense MLPs and DCN data-parallel (DDP), as in the reference (torchrec DistributedModelParallel).

Per step, with W ranks, local batch B and rank r owning tables T_r (hotness h_t, dim D):
  input dist   all_to_all of ids:        rank r sends B * sum_t h_t int32 (all tables' ids)
  lookup       rank r pools its tables for all W*B samples
  output dist  all_to_all of pooled:     rank r sends W * B * |T_r| * D floats
  backward     all_to_all of gradients:  rank r sends B * T * D floats
  DDP          all_reduce of the dense gradients (bucketed)
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from pinchpoint.parallel.collectives import CollectiveProfile
from pinchpoint.parallel.ddp import wrap_ddp
from pinchpoint.workloads.dlrm_dcnv2.model import SparseArch, build_dense


def plan_table_wise(rows: Sequence[int], dim: int, world: int) -> list[int]:
    """Owner rank of each table: greedy, biggest table first onto the least-loaded rank
    (balances embedding memory, as torchrec's planner does by storage)."""
    load = [0] * world
    owner = [0] * len(rows)
    for t in sorted(range(len(rows)), key=lambda t: (-rows[t], t)):
        r = min(range(world), key=lambda r: (load[r], r))
        owner[t] = r
        load[r] += rows[t] * dim
    return owner


class _PooledAllToAll(torch.autograd.Function):
    """Output dist: owners send pooled embeddings back to the ranks whose samples they are;
    backward sends the gradients the other way (scaled 1/W: the loss is the mean over ranks)."""

    @staticmethod
    def forward(ctx, local_pooled, shard: "ShardedEmbeddings"):
        ctx.shard = shard
        return shard.exchange_pooled(local_pooled)

    @staticmethod
    def backward(ctx, grad):
        return ctx.shard.exchange_grads(grad), None


class ShardedEmbeddings(nn.Module):
    def __init__(self, rows: Sequence[int], hotness: Sequence[int], dim: int, seed: int,
                 rank: int, world: int, profile: CollectiveProfile):
        super().__init__()
        self.rows, self.hotness, self.dim = list(rows), list(hotness), dim
        self.rank, self.world, self.profile = rank, world, profile
        self.owner = plan_table_wise(rows, dim, world)
        self.tables_of = [[t for t in range(len(rows)) if self.owner[t] == r] for r in range(world)]
        self.local = SparseArch(rows, dim, seed, table_ids=self.tables_of[rank])
        self.hot_of = [sum(hotness[t] for t in ts) for ts in self.tables_of]

    def forward(self, sparse: Sequence[torch.Tensor]) -> torch.Tensor:
        batch = sparse[0].shape[0]
        ids = self._exchange_ids(sparse, batch)
        pooled = self._lookup(ids)                     # (W*B, |T_r|, D)
        return _PooledAllToAll.apply(pooled, self)    # (B, T, D)

    def _exchange_ids(self, sparse: Sequence[torch.Tensor], batch: int) -> torch.Tensor:
        send = torch.cat([torch.cat([sparse[t] for t in ts], dim=1).reshape(-1)
                          if ts else sparse[0].new_empty(0) for ts in self.tables_of])
        in_splits = [batch * h for h in self.hot_of]
        out_splits = [batch * self.hot_of[self.rank]] * self.world
        recv = send.new_empty(sum(out_splits))
        self.profile.all_to_all_single(recv, send, out_splits, in_splits)
        return recv.view(self.world * batch, self.hot_of[self.rank])

    def _lookup(self, ids: torch.Tensor) -> torch.Tensor:
        if not self.tables_of[self.rank]:
            return ids.new_empty((ids.shape[0], 0, self.dim), dtype=torch.float32)
        columns = torch.split(ids, [self.hotness[t] for t in self.tables_of[self.rank]], dim=1)
        return torch.stack([table(c) for table, c in zip(self.local.tables, columns)], dim=1)

    def exchange_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        batch = pooled.shape[0] // self.world
        send = pooled.contiguous().reshape(-1)
        mine = len(self.tables_of[self.rank])
        out_splits = [batch * len(ts) * self.dim for ts in self.tables_of]
        recv = pooled.new_empty(sum(out_splits))
        self.profile.all_to_all_single(recv, send, out_splits, [batch * mine * self.dim] *
                                       self.world)
        out = pooled.new_empty((batch, len(self.rows), self.dim))
        for ts, part in zip(self.tables_of, torch.split(recv, out_splits)):
            if ts:
                out[:, ts, :] = part.view(batch, len(ts), self.dim)
        return out

    def exchange_grads(self, grad: torch.Tensor) -> torch.Tensor:
        batch = grad.shape[0]
        mine = len(self.tables_of[self.rank])
        send = torch.cat([grad[:, ts, :].reshape(-1) for ts in self.tables_of])
        in_splits = [batch * len(ts) * self.dim for ts in self.tables_of]
        recv = grad.new_empty(self.world * batch * mine * self.dim)
        self.profile.all_to_all_single(recv, send, [batch * mine * self.dim] * self.world,
                                       in_splits)
        return recv.view(self.world * batch, mine, self.dim) / self.world


class ShardedDLRM(nn.Module):
    """EP: sharded tables + DDP-wrapped dense part."""

    def __init__(self, arch, num_dense: int, seed: int, rank: int, world: int,
                 profile: CollectiveProfile):
        super().__init__()
        self.sparse = ShardedEmbeddings(arch.num_embeddings_per_feature, arch.multi_hot_sizes,
                                        arch.embedding_dim, seed, rank, world, profile)
        dense = build_dense(num_dense, len(arch.num_embeddings_per_feature), arch.embedding_dim,
                            arch.bottom_mlp, arch.dcn_num_layers, arch.dcn_low_rank_dim,
                            arch.top_mlp, seed)
        self.dense = wrap_ddp(dense, profile)

    def forward(self, dense: torch.Tensor, sparse: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.dense(dense, self.sparse(sparse))


def all_to_all_bytes_per_step(arch, world: int, per_rank_batch: int, rank: int) -> int:
    """What the profile must record on ``rank`` per training step (test oracle, and the planner's
    communication volume): ids + pooled embeddings forward, gradients backward."""
    owner = plan_table_wise(arch.num_embeddings_per_feature, arch.embedding_dim, world)
    mine = sum(1 for o in owner if o == rank)
    tables, dim = len(owner), arch.embedding_dim
    ids = per_rank_batch * sum(arch.multi_hot_sizes) * 4
    pooled = world * per_rank_batch * mine * dim * 4
    grads = per_rank_batch * tables * dim * 4
    return ids + pooled + grads
