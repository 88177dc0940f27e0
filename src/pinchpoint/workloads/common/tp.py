"""Megatron-style tensor parallelism with sequence parallel, the pieces every decoder shares
(Llama 3.1, GPT-OSS, DeepSeek V3): the embedding and head at the stack's ends, the pre-norms on
sequence shards, a dense SwiGLU MLP column- then row-parallel. Each model's ``parallelize.py``
adds its attention (and MoE) plan."""
from __future__ import annotations

from torch import nn


def apply_decoder_ends(model: nn.Module, tp_mesh) -> None:
    """Embedding row-parallel into sequence shards, final norm on shards, head column-parallel
    gathered to whole logits (the parts a pipeline stage holds)."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (ColwiseParallel, RowwiseParallel,
                                                   SequenceParallel, parallelize_module)
    top = {}
    if model.tok_embeddings is not None:
        top["tok_embeddings"] = RowwiseParallel(input_layouts=Replicate(),
                                                output_layouts=Shard(1))
    if model.norm is not None:
        top["norm"] = SequenceParallel()
        top["output"] = ColwiseParallel(input_layouts=Shard(1), output_layouts=Replicate())
    if top:
        parallelize_module(model, tp_mesh, top)


def norms_plan() -> dict:
    """The two pre-norms of a block work on sequence shards."""
    from torch.distributed.tensor.parallel import SequenceParallel
    return {"attention_norm": SequenceParallel(), "ffn_norm": SequenceParallel()}


def dense_ffn_plan(name: str) -> dict:
    """A SwiGLU MLP (w1, w3 column-, w2 row-parallel): gathered in, reduce-scattered out."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (ColwiseParallel, PrepareModuleInput,
                                                   RowwiseParallel)
    return {name: PrepareModuleInput(input_layouts=(Shard(1),),
                                     desired_input_layouts=(Replicate(),)),
            f"{name}.w1": ColwiseParallel(), f"{name}.w3": ColwiseParallel(),
            f"{name}.w2": RowwiseParallel(output_layouts=Shard(1))}


def attention_plan(column: tuple[str, ...], local_input: bool = False) -> dict:
    """Attention on the gathered sequence: the ``column`` projections column-parallel (by
    head), ``wo`` row-parallel back to sequence shards. ``local_input``: the module gets a plain
    tensor (its replicated parts, e.g. MLA's down projections, are plain modules)."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (ColwiseParallel, PrepareModuleInput,
                                                   RowwiseParallel)
    return {"attention": PrepareModuleInput(input_layouts=(Shard(1), None),
                                            desired_input_layouts=(Replicate(), None),
                                            use_local_output=local_input),
            **{f"attention.{name}": ColwiseParallel() for name in column},
            "attention.wo": RowwiseParallel(output_layouts=Shard(1))}
