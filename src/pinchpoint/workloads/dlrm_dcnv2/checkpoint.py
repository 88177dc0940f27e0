"""Layout-independent DLRM checkpoints: every parameter (and its Adagrad state) under the
single-process name, whichever rank holds it, so a run resumes into another world size or
sharding scheme. Sharded tables are gathered to rank 0 with one broadcast each."""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
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


def _owners(model: nn.Module) -> dict[str, int]:
    sparse = getattr(model, "module", model).sparse
    if not hasattr(sparse, "owner"):
        return {}
    return {f"sparse.tables.{t}.weight": r for t, r in enumerate(sparse.owner)}


def gather_state(params: dict[str, nn.Parameter], optimizer: torch.optim.Optimizer,
                 model: nn.Module, ctx) -> dict[str, Any]:
    weights, sums, steps = {}, {}, {}
    for name, p in params.items():
        state = optimizer.state[p]
        weights[name] = p.detach().cpu().clone()
        sums[name] = state["sum"].detach().cpu().clone()
        steps[name] = float(state["step"])
    owners = _owners(model)
    if owners and ctx.world_size > 1:  # sharded tables: owner broadcasts, rank 0 keeps
        for name, owner in sorted(owners.items()):
            t = int(name.split(".")[2])
            rows = model.sparse.rows[t]
            for store in (weights, sums):
                buf = store[name].to(ctx.device) if name in store else torch.empty(
                    rows, model.sparse.dim, device=ctx.device)
                dist.broadcast(buf, src=owner)
                store[name] = buf.cpu()
            step = torch.tensor([steps.get(name, 0.0)], device=ctx.device)
            dist.broadcast(step, src=owner)
            steps[name] = float(step)
    return {"params": weights, "adagrad_sum": sums, "adagrad_step": steps}


def load_state(params: dict[str, nn.Parameter], optimizer: torch.optim.Optimizer,
               state: dict[str, Any]) -> None:
    missing = sorted(set(params) - set(state["params"]))
    if missing:
        raise ValueError(f"checkpoint lacks parameters {missing[:5]}...: a different model?")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(state["params"][name])
            opt = optimizer.state[p]
            opt["sum"].copy_(state["adagrad_sum"][name])
            opt["step"].fill_(state["adagrad_step"][name])
