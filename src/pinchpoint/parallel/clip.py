"""Gradient clipping by the global norm over every rank's parameters, whatever the layout."""
from __future__ import annotations

import torch
import torch.distributed as dist


def clip_grad_norm(params: list[torch.Tensor], max_norm: float, pp_group=None) -> torch.Tensor:
    """DTensor shards (FSDP, TP) reduce their norm over their mesh; pipeline stages add their
    squares over the pp group; then every gradient is scaled in place."""
    from torch.distributed.tensor import DTensor
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads, 2.0)
    if isinstance(norm, DTensor):
        norm = norm.full_tensor()
    if pp_group is not None:
        square = norm ** 2
        dist.all_reduce(square, group=pp_group)
        norm = square.sqrt()
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return norm
