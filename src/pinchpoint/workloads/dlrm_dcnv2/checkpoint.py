"""Layout-independent DLRM checkpoint state: every parameter (and its Adagrad state) under its
single-process name, whichever rank holds it. Saved and loaded by the runner through
torch.distributed.checkpoint, which writes each table from the rank that owns it and, on load,
reads each table into whichever rank owns it in the new layout."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


def canonical_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Local parameters keyed by the names they have in a single-process DLRMDCNv2."""
    inner = getattr(model, "module", model)             # DDP(DLRMDCNv2)
    sparse = inner.sparse
    out: dict[str, nn.Parameter] = {}
    tables = sparse.local if hasattr(sparse, "local") else sparse   # ShardedEmbeddings
    for table_id, table in zip(tables.table_ids, tables.tables):
        out[f"sparse.tables.{table_id}.weight"] = table.weight
    dense = getattr(inner.dense, "module", inner.dense)  # DDP(InteractionAndTop) under EP
    for name, param in dense.named_parameters():
        out[f"dense.{name}"] = param
    return out


def checkpoint_state(params: dict[str, nn.Parameter],
                     optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Views of the live tensors (DCP saves them, and loads into them in place)."""
    state: dict[str, Any] = {"params": {}, "adagrad_sum": {}, "adagrad_step": {}}
    for name, p in params.items():
        opt = optimizer.state[p]
        state["params"][name] = p.detach()
        state["adagrad_sum"][name] = opt["sum"]
        state["adagrad_step"][name] = opt["step"]
    return state
