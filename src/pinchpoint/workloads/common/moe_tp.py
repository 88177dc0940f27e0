"""The tensor-parallel pieces GPT-OSS and DeepSeek V3 share (each model's attention plan lives
in its own ``parallelize.py``; the decoder's ends, norms and dense MLP come from common/tp.py,
as Llama's): MoE blocks that run on each rank's sequence shard.

Why the MoE block is not split like a dense MLP: its experts are already split over the
expert-parallel group, and splitting each expert's hidden width again over TP would add an
all-gather and a reduce-scatter per MoE layer for experts whose matmuls are small. Instead the
block gets the rank's local sequence shard (no all-gather in, no reduce-scatter out, no token
computed twice); router, routed and shared experts stay plain parameters replicated over TP,
whose gradients then hold only the local tokens' share and are summed over the TP group before
clipping (``sum_gradients_over_tp``). The balancing loss and router statistics are summed over
the shards in the layer (``moe.SequenceShards``), so a TP run trains the numbers one process
does. Cost: the MoE weights are replicated over TP (EP and FSDP still split them).
"""
from __future__ import annotations

import torch
from torch import nn

from pinchpoint.workloads.common import moe


def moe_plan(name: str = "moe") -> dict:
    """The MoE block takes the rank's sequence shard as a plain tensor and returns one (the
    residual stream between blocks is already the local shard)."""
    from torch.distributed.tensor import Shard
    from torch.distributed.tensor.parallel import PrepareModuleInput
    return {name: PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Shard(1),),
                                     use_local_output=True)}


def shard_sequences(model: nn.Module, tp_mesh, collectives) -> None:
    """Tell every MoE layer that it sees one of ``tp`` sequence shards and how to sum over them
    (through the run's collective profile, so the bytes are counted)."""
    group = tp_mesh.get_group()
    shards = moe.SequenceShards(tp_mesh.size(),
                                lambda t: collectives.all_reduce(t, group=group))
    for layer in moe.moe_layers(model):
        layer.sequence_shards = shards


@torch.no_grad()
def sum_gradients_over_tp(model: nn.Module, collectives, tp_group) -> None:
    """MoE layers ran on the local sequence shard: their parameters' gradients (FSDP shards or
    plain, per rank) hold only its tokens' share. Add the other shards' in one all-reduce."""
    from torch.distributed.tensor import DTensor
    grads = [p.grad.to_local() if isinstance(p.grad, DTensor) else p.grad
             for layer in moe.moe_layers(model) for p in layer.parameters()
             if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    collectives.all_reduce(flat, group=tp_group)
    for g, summed in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(summed.view_as(g))


class _SumGradientTail(torch.autograd.Function):
    """Identity whose backward sums the last ``width`` features' gradient over the TP ranks
    with ``reduce`` (Megatron's copy-to-tensor-parallel-region, on a slice)."""

    @staticmethod
    def forward(ctx, x, width: int, reduce):
        ctx.width, ctx.reduce = width, reduce
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        tail = grad[..., -ctx.width:].contiguous()
        grad[..., -ctx.width:] = ctx.reduce(tail)
        return grad, None, None


def sum_output_tail_gradient(module: nn.Module, width: int, tp_mesh, collectives) -> None:
    """For a replicated projection whose last ``width`` output features feed only this rank's
    heads (DeepSeek's shared rope key): their gradient is partial per rank; sum it over TP so
    the replicated weight and its input get the whole gradient."""
    group = tp_mesh.get_group()
    reduce = lambda t: collectives.all_reduce(t, group=group)  # noqa: E731
    module.register_forward_hook(
        lambda _m, _inputs, out: _SumGradientTail.apply(out, width, reduce))
