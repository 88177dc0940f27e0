"""Llama 3.1 <-> Hugging Face's LlamaForCausalLM checkpoint names (meta-llama/Llama-3.1-8B,
-405B: model.safetensors + index).

The layers' names are Meta's (torchtitan's), which Meta's own consolidated.*.pth checkpoints use
unchanged; Hugging Face renames them and stores wq and wk with each head's rows reordered for its
"rotate half" RoPE (pairs i, i + d/2) where model.py rotates Meta's adjacent pairs (2i, 2i + 1),
as transformers' convert_llama_weights_to_hf.py does. Converting the rows back makes the two
compute the same attention.
"""
from __future__ import annotations

import torch

from pinchpoint.workloads.common.state_dict_adapter import (Renames, StateDictAdapter,
                                                            halves_to_interleaved,
                                                            interleaved_to_halves, rename_all)

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

    def __init__(self, n_heads: int, n_kv_heads: int):
        self.heads = {"wq": n_heads, "wk": n_kv_heads}

    def to_published(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return rename_all({n: self._rows(n, t, interleaved_to_halves) for n, t in state.items()},
                          NAMES.to_published, "model")

    def from_published(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        ours = rename_all(state, NAMES.from_published, "checkpoint")
        return {n: self._rows(n, t, halves_to_interleaved) for n, t in ours.items()}

    def _rows(self, name: str, t: torch.Tensor, reorder) -> torch.Tensor:
        """wq / wk (our name) with each head's rotary rows put in the other convention."""
        kind = name.rsplit(".", 2)[-2]
        return reorder(t, self.heads[kind]) if kind in self.heads else t
