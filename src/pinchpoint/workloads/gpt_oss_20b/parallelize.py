"""GPT-OSS's tensor-parallel plan (Megatron-style with sequence parallel, as Llama's): attention
column-parallel in (q/k/v with their biases) and row-parallel out, each rank owning whole query
and KV heads and those heads' sinks; the MoE block on the rank's sequence shard
(workloads/common/moe_tp.py says why)."""
from __future__ import annotations

from torch import nn

from pinchpoint.workloads.common import moe_tp, tp


def apply_tp(model: nn.Module, tp_mesh, collectives) -> None:
    from torch.distributed.tensor import Shard, distribute_tensor
    from torch.distributed.tensor.parallel import parallelize_module
    tp.apply_decoder_ends(model, tp_mesh)
    for block in model.layers.values():
        parallelize_module(block, tp_mesh, {**tp.norms_plan(),
                                            **tp.attention_plan(("wq", "wk", "wv")),
                                            **moe_tp.moe_plan()})
        # One sink logit per query head: split like the heads (wq's column blocks), so each
        # rank's softmax uses its own heads' sinks and their gradients stay on that rank.
        attention = block.attention
        attention.sinks = nn.Parameter(distribute_tensor(attention.sinks.data, tp_mesh,
                                                         [Shard(0)]))
    moe_tp.shard_sequences(model, tp_mesh, collectives)
