"""DeepSeek V3's tensor-parallel plan (Megatron-style with sequence parallel, as Llama's):

- MLA: the low-rank down projections (wq_a, wkv_a) and their norms are small and replicated;
  they run on the gathered sequence, the up projections (wq_b, wkv_b) are column-parallel by
  head and wo row-parallel. The rope slice of the key (from wkv_a, shared by every head) feeds
  only this rank's heads, so its gradient is summed over TP in backward; the rest of wkv_a's
  and wq_a's output gradient is already whole (the column-parallel up projections reduce their
  input gradient).
- The first dense layers' SwiGLU: column- then row-parallel, as Llama's.
- The MoE blocks (router, routed and shared experts) on the rank's sequence shard
  (workloads/common/moe_tp.py says why).
"""
from __future__ import annotations

from torch import nn

from pinchpoint.workloads.common import moe_tp, tp


def apply_tp(model: nn.Module, tp_mesh, collectives) -> None:
    from torch.distributed.tensor.parallel import parallelize_module
    tp.apply_decoder_ends(model, tp_mesh)
    for block in model.layers.values():
        ffn = tp.dense_ffn_plan("feed_forward") if block.moe is None else moe_tp.moe_plan()
        parallelize_module(block, tp_mesh, {
            **tp.norms_plan(),
            # A plain tensor in: the replicated down projections are plain modules.
            **tp.attention_plan(("wq_b", "wkv_b"), local_input=True),
            **ffn,
        })
        attention = block.attention
        moe_tp.sum_output_tail_gradient(attention.wkv_a, attention.rope, tp_mesh, collectives)
    moe_tp.shard_sequences(model, tp_mesh, collectives)
