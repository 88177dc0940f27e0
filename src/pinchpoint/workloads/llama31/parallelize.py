"""Compose PP x FSDP2 x TP on a Llama model with PyTorch's own APIs, as torchtitan does.

Mesh dims ("pp", "dp", "tp"), TP innermost (the fastest links), PP outermost. Order matters:
split the full model into this rank's pipeline stage first, then tensor-parallelise the stage,
then activation checkpointing, then shard it with FSDP2 over "dp". Every rank builds the same
full model from the same seed before any of this, so each layout starts from identical weights
(what the loss-equivalence tests rely on). The full published sizes would instead be built on
the meta device; on CPU/gloo the proxies are small enough to build whole.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn

from pinchpoint.workloads.llama31.model import Llama


@dataclass
class Parallelized:
    model: nn.Module                   # this rank's part: the whole model or one pipeline stage
    dp: int = 1
    tp: int = 1
    pp: int = 1
    dp_rank: int = 0
    tp_rank: int = 0
    pp_rank: int = 0
    mesh: Any = None                   # DeviceMesh ("pp", "dp", "tp") when distributed
    schedule: Any = None               # pipeline schedule when pp > 1
    pp_group: Any = None
    notes: list[str] = field(default_factory=list)

    @property
    def first_stage(self) -> bool:
        return self.pp_rank == 0

    @property
    def last_stage(self) -> bool:
        return self.pp_rank == self.pp - 1

    @property
    def reports_loss(self) -> bool:
        """One rank per data-parallel replica holds the loss (last stage, TP rank 0)."""
        return self.last_stage and self.tp_rank == 0


def stage_layers(n_layers: int, pp: int, stage: int) -> list[int]:
    """Contiguous, equal split (validation guarantees n_layers % pp == 0)."""
    per = n_layers // pp
    return list(range(stage * per, (stage + 1) * per))


def pipeline_stage_module(model: Llama, pp: int, stage: int) -> Llama:
    """A copy of ``model`` holding only this stage's layers (names unchanged), the embedding on
    the first stage and norm + output on the last."""
    part = copy.deepcopy(model)
    keep = {str(i) for i in stage_layers(model.args.n_layers, pp, stage)}
    for name in list(part.layers.keys()):
        if name not in keep:
            del part.layers[name]
    if stage != 0:
        part.tok_embeddings = None
    if stage != pp - 1:
        part.norm = None
        part.output = None
    return part


def apply_tp(model: Llama, tp_mesh) -> None:
    """Megatron-style TP with sequence parallel: norms work on sequence shards, attention and
    MLP are column- then row-parallel (one all-gather in, one reduce-scatter out per block)."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (ColwiseParallel, PrepareModuleInput,
                                                   RowwiseParallel, SequenceParallel,
                                                   parallelize_module)
    top = {}
    if model.tok_embeddings is not None:
        top["tok_embeddings"] = RowwiseParallel(input_layouts=Replicate(),
                                                output_layouts=Shard(1))
    if model.norm is not None:
        top["norm"] = SequenceParallel()
        top["output"] = ColwiseParallel(input_layouts=Shard(1), output_layouts=Replicate())
    if top:
        parallelize_module(model, tp_mesh, top)
    for block in model.layers.values():
        parallelize_module(block, tp_mesh, {
            "attention_norm": SequenceParallel(),
            "attention": PrepareModuleInput(input_layouts=(Shard(1), None),
                                            desired_input_layouts=(Replicate(), None)),
            "attention.wq": ColwiseParallel(), "attention.wk": ColwiseParallel(),
            "attention.wv": ColwiseParallel(),
            "attention.wo": RowwiseParallel(output_layouts=Shard(1)),
            "ffn_norm": SequenceParallel(),
            "feed_forward": PrepareModuleInput(input_layouts=(Shard(1),),
                                               desired_input_layouts=(Replicate(),)),
            "feed_forward.w1": ColwiseParallel(), "feed_forward.w3": ColwiseParallel(),
            "feed_forward.w2": RowwiseParallel(output_layouts=Shard(1)),
        })


def apply_fsdp(model: Llama, dp_mesh, reshard_after_forward: bool) -> None:
    """FSDP2: one unit per block (overlaps the next block's all-gather with compute), then the
    root for embedding/norm/output."""
    from torch.distributed.fsdp import fully_shard
    for block in model.layers.values():
        fully_shard(block, mesh=dp_mesh, reshard_after_forward=reshard_after_forward)
    fully_shard(model, mesh=dp_mesh, reshard_after_forward=reshard_after_forward)


def parallelize(model: Llama, dp: int, tp: int, pp: int, device: torch.device,
                n_microbatches: int, loss_fn: Callable, schedule: str = "1f1b",
                recompute: bool = False) -> Parallelized:
    model.recompute = recompute
    if dp * tp * pp == 1:
        return Parallelized(model.to(device))
    if not dist.is_initialized():
        raise RuntimeError(f"parallel dp={dp} tp={tp} pp={pp} needs torch.distributed "
                           "initialised by the launcher before the workload is built")
    from torch.distributed.device_mesh import init_device_mesh
    mesh = init_device_mesh(device.type, (pp, dp, tp), mesh_dim_names=("pp", "dp", "tp"))
    out = Parallelized(model, dp, tp, pp, mesh=mesh, dp_rank=mesh["dp"].get_local_rank(),
                       tp_rank=mesh["tp"].get_local_rank(), pp_rank=mesh["pp"].get_local_rank())
    part = pipeline_stage_module(model, pp, out.pp_rank) if pp > 1 else model
    part = part.to(device)
    part.recompute = recompute
    if tp > 1:
        apply_tp(part, mesh["tp"])
    if dp > 1:
        # Pipelining runs several microbatches through a stage before backward: keep the
        # gathered parameters instead of re-gathering them for every microbatch.
        apply_fsdp(part, mesh["dp"], reshard_after_forward=pp == 1)
    out.model = part
    if pp > 1:
        from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe
        out.pp_group = mesh["pp"].get_group()
        stage = PipelineStage(part, out.pp_rank, pp, device, group=out.pp_group)
        kind = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}[schedule]
        out.schedule = kind(stage, n_microbatches=n_microbatches, loss_fn=loss_fn)
    return out


def clip_grad_norm(params: list[torch.Tensor], max_norm: float,
                   pp_group=None) -> torch.Tensor:
    """Global gradient norm over all ranks' parameters (DTensor shards reduce over their mesh;
    pipeline stages add their squares over the pp group), then clip in place."""
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
