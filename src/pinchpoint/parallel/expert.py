"""Expert parallelism (EP): a MoE layer's experts are split over the ranks of an EP process
group, and each rank's routed (token, expert) pairs travel to the expert's rank and back with
``all_to_all_single`` (token dispatch, then combine), as Megatron's alltoall dispatcher and
torchtitan's ExpertParallel do.

Every exchange goes through the run's CollectiveProfile, so its calls, bytes and seconds land in
the ``communication`` phase, and each one is also a named timeline slice ("moe dispatch",
"moe combine", and their backward mirrors). The profile counts the bytes a rank hands to the
collective (nccl-tests' convention); ``offrank_bytes`` here counts only the rows that leave the
rank (tokens sent off-rank x hidden x element size, per direction), the figure that scales with
the network.

Gradients: the all-to-alls are autograd functions whose backward is the reverse exchange, so a
rank's expert weights receive the gradients of every token routed to them. Replicated parameters
(router, attention, shared expert) still need the usual data-parallel reduction, and expert
weights must be divided by the same data-parallel degree (``scale_expert_gradients``).

What this module asks of a MoE layer (workloads/common/moe.py's ``MoE``; the caller hands the
layers in): ``args.num_experts``; ``experts``, a module whose parameters stack the experts on
dim 0 and whose forward takes (rows grouped by expert, rows per expert); a ``first_expert``
attribute on it; and an ``expert_parallel`` slot that, once set, routes the layer's kept
(token, expert) pairs through ``ExpertParallel.run``, which returns each pair's expert output
for the layer to combine.
"""
from __future__ import annotations

import contextlib
import math
import time
from typing import Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn

from pinchpoint.errors import ConfigError


class ExpertParallel:
    """The dispatcher a MoE layer uses when its experts are sharded over ``group``."""

    def __init__(self, group, collectives, num_experts: int):
        self.group = group
        self.collectives = collectives
        self.size = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        if num_experts % self.size:
            raise ConfigError("parallel.ep", self.size,
                              f"a divisor of the number of experts ({num_experts})")
        self.num_experts = num_experts
        self.local = num_experts // self.size
        self.offrank_bytes = 0      # rows that left this rank, all exchanges, both directions
        self.exchanges = 0

    # --- the exchange, profiled and sliced ------------------------------------------------------
    @contextlib.contextmanager
    def _slice(self, name: str, nbytes: int):
        timeline = getattr(getattr(self.collectives, "phases", None), "timeline", None)
        start = time.perf_counter()
        yield
        if timeline is not None:
            timeline.span(name, "collective", start, time.perf_counter(),
                          {"offrank_bytes": nbytes})

    def exchange(self, rows: torch.Tensor, out_splits: list[int], in_splits: list[int],
                 name: str, tokens: bool = True) -> torch.Tensor:
        """All-to-all of ``rows`` (n, dim) cut into ``in_splits`` per destination rank
        (``tokens=False``: bookkeeping, kept out of ``offrank_bytes``)."""
        rows = rows.contiguous()
        out = rows.new_empty((sum(out_splits), *rows.shape[1:]))
        # Shape, not rows[0]: a rank may have no rows for anyone (no token routed its way).
        row_bytes = math.prod(rows.shape[1:]) * rows.element_size()
        offrank = (sum(in_splits) - in_splits[self.rank]) * row_bytes if tokens else 0
        with self._slice(name, offrank):
            self.collectives.all_to_all_single(out, rows, out_splits, in_splits, group=self.group)
        self.offrank_bytes += offrank
        self.exchanges += tokens
        return out

    # --- the routed computation -----------------------------------------------------------------
    def run(self, flat: torch.Tensor, token: torch.Tensor, expert: torch.Tensor,
            experts: nn.Module) -> torch.Tensor:
        """flat (tokens, dim); kept pairs sorted by global expert id -> each pair's expert
        output, in the pairs' order (the layer weights and sums them per token)."""
        ep, local = self.size, self.local
        counts = torch.bincount(expert, minlength=self.num_experts)
        # Tell every rank how many rows per local expert it will receive from us.
        received = self.exchange(counts, [local] * ep, [local] * ep, "moe dispatch counts",
                                 tokens=False)
        in_splits = counts.view(ep, local).sum(1).tolist()
        out_splits = received.view(ep, local).sum(1).tolist()
        rows = _AllToAll.apply(flat[token], out_splits, in_splits, self, "moe dispatch")
        # Received rows come grouped by source rank, then by local expert: regroup by expert.
        expert_of_row = torch.arange(local, device=flat.device).repeat(ep)
        expert_of_row = torch.repeat_interleave(expert_of_row, received,
                                                output_size=len(rows))
        by_expert = torch.argsort(expert_of_row, stable=True)
        y = experts(rows[by_expert], received.view(ep, local).sum(0))
        y = y[torch.argsort(by_expert)]                        # back to arrival order
        return _AllToAll.apply(y, in_splits, out_splits, self, "moe combine")


class _AllToAll(torch.autograd.Function):
    """All-to-all whose backward is the reverse all-to-all of the gradients."""

    @staticmethod
    def forward(ctx, rows, out_splits, in_splits, ep: ExpertParallel, name: str):
        ctx.splits, ctx.ep, ctx.name = (out_splits, in_splits), ep, name
        return ep.exchange(rows, out_splits, in_splits, name)

    @staticmethod
    def backward(ctx, grad):
        out_splits, in_splits = ctx.splits
        g = ctx.ep.exchange(grad, in_splits, out_splits, ctx.name + " backward")
        return g, None, None, None, None


def apply_expert_parallel(layers: Sequence[nn.Module], group,
                          collectives) -> Optional[ExpertParallel]:
    """Keep this rank's slice of every MoE layer's experts (contiguous: rank r holds experts
    r x E/ep ... (r+1) x E/ep - 1) and route through all-to-all. Call before the optimizer is
    built. Returns the shared dispatcher (its ``offrank_bytes`` counts the traffic), or None
    when there is no MoE layer."""
    if not layers:
        return None
    ep = ExpertParallel(group, collectives, layers[0].args.num_experts)
    lo, hi = ep.rank * ep.local, (ep.rank + 1) * ep.local
    for layer in layers:
        experts = layer.experts
        for name, p in list(experts.named_parameters(recurse=False)):
            setattr(experts, name, nn.Parameter(p.detach()[lo:hi].clone(),
                                                requires_grad=p.requires_grad))
        experts.first_expert = lo
        layer.expert_parallel = ep
    return ep


def expert_parameters(layers: Sequence[nn.Module]) -> list[nn.Parameter]:
    """The sharded expert weights of these MoE layers (everything else in a MoE model is
    replicated)."""
    return [p for layer in layers for p in layer.experts.parameters()]


def is_expert_parameter(name: str) -> bool:
    """By name: routed experts live under ``...experts.<weight>``, shared ones elsewhere."""
    return ".experts." in f".{name}"


@torch.no_grad()
def scale_expert_gradients(layers: Sequence[nn.Module], data_parallel: int, collectives=None,
                           replica_group=None) -> None:
    """Make expert gradients the data-parallel mean, like the replicated parameters'.

    Backward leaves on an expert's rank the *sum* over every data-parallel rank's loss; a
    replicated parameter gets the mean (DDP/FSDP divide by the data-parallel degree). When
    ``ep`` is smaller than the data-parallel degree, ranks holding the same experts
    (``replica_group``) first sum their gradients."""
    grads = [p.grad for p in expert_parameters(layers) if p.grad is not None]
    if replica_group is not None and dist.get_world_size(replica_group) > 1:
        for g in grads:
            collectives.all_reduce(g, group=replica_group)
    for g in grads:
        g.div_(data_parallel)


# --- checkpoints ----------------------------------------------------------------------------------
# A rank holds experts r x E/ep ... as plain tensors of shape (E/ep, ...). For DCP they become
# what they are: slices of one (E, ...) tensor, i.e. DTensors sharded on dim 0 over the EP group.
# DCP then writes each slice once (ranks holding the same experts are deduplicated), records the
# global shape, and reads any slicing back: an ep2 checkpoint resumes with ep4 or in one process.
def _as_global(local: torch.Tensor, mesh) -> torch.Tensor:
    from torch.distributed.tensor import DTensor, Shard
    shape = torch.Size([local.shape[0] * mesh.size(), *local.shape[1:]])
    stride = torch.empty(shape, device="meta").stride()
    return DTensor.from_local(local, mesh, [Shard(0)], run_check=False, shape=shape,
                              stride=stride)


def shard_expert_state(state: dict, ep: ExpertParallel) -> dict:
    """``training_state``'s model and optimizer entries of expert weights (and their AdamW
    moments), wrapped in place as DTensors over the EP group; views, so DCP loads in place."""
    from torch.distributed.device_mesh import DeviceMesh
    if getattr(ep, "mesh", None) is None:
        ep.mesh = DeviceMesh.from_group(ep.group, _device_type(state))
    model = state["model"]
    for name in [n for n in model if is_expert_parameter(n)]:
        model[name] = _as_global(model[name], ep.mesh)
    optimizer = state["optimizer"].get("state", {})
    for name, moments in optimizer.items():
        if is_expert_parameter(name):     # a new dict: this one is the optimizer's own state
            optimizer[name] = {key: _as_global(v, ep.mesh) if torch.is_tensor(v) and v.dim()
                               else v for key, v in moments.items()}
    return state


def unshard_expert_state(state: dict) -> dict:
    """The inverse of ``shard_expert_state`` after a load: this rank's slices as plain tensors."""
    from torch.distributed.tensor import DTensor

    def local(name: str, value):
        expert = isinstance(value, DTensor) and is_expert_parameter(name)
        return value.to_local() if expert else value
    model = state["model"]
    for name, value in model.items():
        model[name] = local(name, value)
    for name, moments in state["optimizer"].get("state", {}).items():
        for key, value in moments.items():
            moments[key] = local(name, value)
    return state


def _device_type(state: dict) -> str:
    tensors = (v for v in state["model"].values() if torch.is_tensor(v))
    return next(tensors).device.type
