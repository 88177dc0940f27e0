"""Llama 3.1's tensor-parallel plan: the only layout code that is Llama's own (FSDP2, pipeline
stages and schedules, and clipping come from pinchpoint.parallel, driven by the shared
decoder-LLM step in workloads/common/llm.py, as in torchtitan; the decoder's ends, norms and MLP
plans are shared with the MoE models in workloads/common/tp.py)."""
from __future__ import annotations

from pinchpoint.workloads.common import tp
from pinchpoint.workloads.llama31.model import Llama


def apply_tp(model: Llama, tp_mesh) -> None:
    """Megatron-style TP with sequence parallel: norms work on sequence shards, attention and
    MLP are column- then row-parallel (one all-gather in, one reduce-scatter out per block)."""
    from torch.distributed.tensor.parallel import parallelize_module
    tp.apply_decoder_ends(model, tp_mesh)
    for block in model.layers.values():
        parallelize_module(block, tp_mesh, {**tp.norms_plan(),
                                            **tp.attention_plan(("wq", "wk", "wv")),
                                            **tp.dense_ffn_plan("feed_forward")})
