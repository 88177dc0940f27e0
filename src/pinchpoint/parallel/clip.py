"""Gradient clipping by the global norm over every rank's parameters, whatever the layout."""
from __future__ import annotations

import torch
import torch.distributed as dist


def squared_grad_norm(grads: list[torch.Tensor], device) -> torch.Tensor:
    """Sum of the gradients' squares when they live on different meshes (TP DTensors on the tp
    or dp x tp mesh, FSDP shards on the dp mesh) or none: torch's norm wants one mesh, so each
    mesh's part is taken and reduced over its ranks apart (same order on every rank)."""
    from torch.distributed.tensor import DTensor
    by_mesh: dict = {}
    for g in grads:
        by_mesh.setdefault(g.device_mesh if isinstance(g, DTensor) else None, []).append(g)
    square = torch.zeros((), device=device)
    for part in by_mesh.values():
        norm = torch.nn.utils.get_total_norm(part, 2.0)
        if isinstance(norm, DTensor):
            norm = norm.full_tensor()
        square = square + norm.float().to(device) ** 2
    return square


def clip_grad_norm(params: list[torch.Tensor], max_norm: float, pp_group=None) -> torch.Tensor:
    """DTensor shards (FSDP, TP) reduce their norm over their mesh; pipeline stages add their
    squares over the pp group; then every gradient is scaled in place."""
    from torch.distributed.tensor import DTensor
    grads = [p.grad for p in params if p.grad is not None]
    first = grads[0].to_local() if grads and isinstance(grads[0], DTensor) else \
        (grads[0] if grads else torch.zeros(()))
    square = squared_grad_norm(grads, first.device)
    if pp_group is not None:
        dist.all_reduce(square, group=pp_group)
    norm = square.sqrt()
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return norm
