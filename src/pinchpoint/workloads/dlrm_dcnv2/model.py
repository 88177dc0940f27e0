"""DLRM-DCNv2 as in the MLPerf reference (torchrec_dlrm ``DLRM_DCN``).

Dense features -> bottom MLP (ReLU on every layer, last width = embedding dim); 26 sum-pooled
multi-hot embedding tables; interaction = concat(dense, pooled) fed through a low-rank DCN-v2
cross network; top MLP (ReLU on hidden layers, plain Linear to one logit).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def mlp(in_dim: int, widths: Sequence[int], relu_last: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, width in enumerate(widths):
        layers.append(nn.Linear(in_dim, width))
        if relu_last or i < len(widths) - 1:
            layers.append(nn.ReLU())
        in_dim = width
    return nn.Sequential(*layers)


class LowRankCrossNet(nn.Module):
    """DCN-v2 low-rank cross layers: x_{l+1} = x_0 * (W_l (V_l x_l) + b_l) + x_l."""

    def __init__(self, in_dim: int, num_layers: int, low_rank: int):
        super().__init__()
        self.V = nn.ModuleList(nn.Linear(in_dim, low_rank, bias=False) for _ in range(num_layers))
        self.W = nn.ModuleList(nn.Linear(low_rank, in_dim, bias=True) for _ in range(num_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for v, w in zip(self.V, self.W):
            x = x0 * w(v(x)) + x
        return x


def init_table(rows: int, dim: int, seed: int, table_id: int) -> nn.EmbeddingBag:
    """torchrec's default init U(-sqrt(1/rows), sqrt(1/rows)), from a per-table generator so a
    table's initial weights do not depend on which rank holds it (sharded == single process)."""
    table = nn.EmbeddingBag(rows, dim, mode="sum", _weight=torch.empty(rows, dim))
    generator = torch.Generator().manual_seed(seed * 1_000_003 + table_id)
    bound = (1.0 / rows) ** 0.5
    with torch.no_grad():
        table.weight.uniform_(-bound, bound, generator=generator)
    return table


class SparseArch(nn.Module):
    """One sum-pooled EmbeddingBag per table; input is a list of (B, hotness) id tensors."""

    def __init__(self, num_embeddings_per_feature: Sequence[int], embedding_dim: int,
                 seed: int = 0, table_ids: Sequence[int] | None = None):
        super().__init__()
        self.table_ids = list(range(len(num_embeddings_per_feature))) if table_ids is None \
            else list(table_ids)
        self.tables = nn.ModuleList(
            init_table(num_embeddings_per_feature[t], embedding_dim, seed, t)
            for t in self.table_ids)

    def forward(self, sparse: Sequence[torch.Tensor]) -> torch.Tensor:
        pooled = [table(ids) for table, ids in zip(self.tables, sparse)]
        return torch.stack(pooled, dim=1)  # (B, tables, D)


class InteractionAndTop(nn.Module):
    """Everything after the embedding lookup: bottom MLP, DCN, top MLP (data-parallel part)."""

    def __init__(self, num_dense: int, num_tables: int, embedding_dim: int,
                 bottom_mlp: Sequence[int], dcn_num_layers: int, dcn_low_rank_dim: int,
                 top_mlp: Sequence[int]):
        super().__init__()
        if bottom_mlp[-1] != embedding_dim:
            raise ValueError(f"bottom_mlp must end at embedding_dim={embedding_dim}, got {list(bottom_mlp)}")
        self.bottom = mlp(num_dense, bottom_mlp, relu_last=True)
        interaction_dim = (num_tables + 1) * embedding_dim
        self.cross = LowRankCrossNet(interaction_dim, dcn_num_layers, dcn_low_rank_dim)
        self.top = mlp(interaction_dim, top_mlp, relu_last=False)

    def forward(self, dense: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        bottom = self.bottom(dense).unsqueeze(1)  # (B, 1, D)
        x = torch.cat([bottom, pooled], dim=1).flatten(1)
        return self.top(self.cross(x)).squeeze(-1)


def build_dense(num_dense: int, num_tables: int, embedding_dim: int, bottom_mlp, dcn_num_layers,
                dcn_low_rank_dim, top_mlp, seed: int) -> InteractionAndTop:
    """The data-parallel part, initialised from ``seed`` alone (identical on every rank)."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return InteractionAndTop(num_dense, num_tables, embedding_dim, bottom_mlp, dcn_num_layers,
                                 dcn_low_rank_dim, top_mlp)
    finally:
        torch.random.set_rng_state(state)


class DLRMDCNv2(nn.Module):
    def __init__(self, num_embeddings_per_feature: Sequence[int], embedding_dim: int,
                 bottom_mlp: Sequence[int], dcn_num_layers: int, dcn_low_rank_dim: int,
                 top_mlp: Sequence[int], num_dense: int = 13, seed: int = 0):
        super().__init__()
        self.sparse = SparseArch(num_embeddings_per_feature, embedding_dim, seed)
        self.dense = build_dense(num_dense, len(num_embeddings_per_feature), embedding_dim,
                                 bottom_mlp, dcn_num_layers, dcn_low_rank_dim, top_mlp, seed)

    def forward(self, dense: torch.Tensor, sparse: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.dense(dense, self.sparse(sparse))
