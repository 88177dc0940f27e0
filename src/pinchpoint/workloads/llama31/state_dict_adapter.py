"""Llama 3.1 <-> Hugging Face's LlamaForCausalLM checkpoint names (meta-llama/Llama-3.1-8B,
-405B: model.safetensors + index).

The layers' names are Meta's (torchtitan's) and Hugging Face renames them. Both rotate q and k in
the "rotate half" convention (pairs i, i + d/2; transformers' convert_llama_weights_to_hf.py
reorders Meta's adjacent-pair rows into it), so tensors are renamed, never reordered.
"""
from __future__ import annotations

import torch

from pinchpoint.workloads.common.state_dict_adapter import Renames, StateDictAdapter, rename_all

NAMES = Renames({
    "tok_embeddings.weight": "model.embed_tokens.weight",
    "layers.{}.attention.wq.weight": "model.layers.{}.self_attn.q_proj.weight",
    "layers.{}.attention.wk.weight": "model.layers.{}.self_attn.k_proj.weight",
    "layers.{}.attention.wv.weight": "model.layers.{}.self_attn.v_proj.weight",
    "layers.{}.attention.wo.weight": "model.layers.{}.self_attn.o_proj.weight",
    "layers.{}.feed_forward.w1.weight": "model.layers.{}.mlp.gate_proj.weight",
    "layers.{}.feed_forward.w3.weight": "model.layers.{}.mlp.up_proj.weight",
    "layers.{}.feed_forward.w2.weight": "model.layers.{}.mlp.down_proj.weight",
    "layers.{}.attention_norm.weight": "model.layers.{}.input_layernorm.weight",
    "layers.{}.ffn_norm.weight": "model.layers.{}.post_attention_layernorm.weight",
    "norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
})


class LlamaStateDictAdapter(StateDictAdapter):
    published = "Hugging Face Llama checkpoint names (LlamaForCausalLM)"

    def to_published(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return rename_all(state, NAMES.to_published, "model")

    def from_published(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return rename_all(state, NAMES.from_published, "checkpoint")
