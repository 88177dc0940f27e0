"""GPT-OSS <-> the released checkpoint's names (openai/gpt-oss-20b model.safetensors, read by
transformers' GptOssForCausalLM).

Layouts differ in two places. The experts' fused gate/up projection interleaves its columns
(gate 0, up 0, gate 1, ...; OpenAI's swiglu takes x[..., ::2] and x[..., 1::2]) where model.py
keeps [gate | up]; biases likewise. And the release stores the expert matrices in MXFP4
(``*_blocks`` of packed 4-bit values, ``*_scales`` of power-of-two exponents per 32 values):
those are dequantised on load with transformers' own convert_moe_packed_tensors; the bf16
layout (``gate_up_proj`` / ``down_proj``, as transformers writes a dequantised model) loads as
is. Attention needs no reordering: both rotate halves. OpenAI's original/ folder (block.N.attn.qkv,
mlp1_weight, ...) is another naming, not read here.
"""
from __future__ import annotations

import torch

from pinchpoint.workloads.common.state_dict_adapter import (Renames, StateDictAdapter,
                                                            rename_all)

NAMES = Renames({
    "tok_embeddings.weight": "model.embed_tokens.weight",
    "layers.{}.attention_norm.weight": "model.layers.{}.input_layernorm.weight",
    "layers.{}.attention.sinks": "model.layers.{}.self_attn.sinks",
    **{f"layers.{{}}.attention.{ours}.{kind}": f"model.layers.{{}}.self_attn.{theirs}.{kind}"
       for ours, theirs in (("wq", "q_proj"), ("wk", "k_proj"), ("wv", "v_proj"), ("wo", "o_proj"))
       for kind in ("weight", "bias")},
    "layers.{}.ffn_norm.weight": "model.layers.{}.post_attention_layernorm.weight",
    "layers.{}.moe.router.gate.weight": "model.layers.{}.mlp.router.weight",
    "layers.{}.moe.router.gate.bias": "model.layers.{}.mlp.router.bias",
    "layers.{}.moe.experts.gate_up_proj": "model.layers.{}.mlp.experts.gate_up_proj",
    "layers.{}.moe.experts.gate_up_bias": "model.layers.{}.mlp.experts.gate_up_proj_bias",
    "layers.{}.moe.experts.down_proj": "model.layers.{}.mlp.experts.down_proj",
    "layers.{}.moe.experts.down_bias": "model.layers.{}.mlp.experts.down_proj_bias",
    "norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
})
QUANTIZED = ("_blocks", "_scales")


class GptOssStateDictAdapter(StateDictAdapter):
    published = "GPT-OSS checkpoint names (GptOssForCausalLM)"

    def to_published(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        interleaved = {n: _interleave(t) if _is_gate_up(n) else t for n, t in state.items()}
        return rename_all(interleaved, NAMES.to_published, "model")

    def from_published(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        ours = rename_all(_dequantize(state), NAMES.from_published, "checkpoint")
        return {n: _deinterleave(t) if _is_gate_up(n) else t for n, t in ours.items()}


def _is_gate_up(name: str) -> bool:
    return name.endswith((".gate_up_proj", ".gate_up_bias"))


def _interleave(t: torch.Tensor) -> torch.Tensor:
    gate, up = t.chunk(2, dim=-1)
    return torch.stack([gate, up], dim=-1).flatten(-2)


def _deinterleave(t: torch.Tensor) -> torch.Tensor:
    return torch.cat([t[..., 0::2], t[..., 1::2]], dim=-1)


def _dequantize(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MXFP4 ``<name>_blocks`` + ``<name>_scales`` pairs replaced by the bf16 ``<name>``."""
    stems = {n[: -len("_blocks")] for n in state if n.endswith("_blocks")}
    if not stems:
        return state
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors
    quantized = {stem + suffix for stem in stems for suffix in QUANTIZED}
    out = {n: t for n, t in state.items() if n not in quantized}
    for stem in stems:
        if stem + "_scales" not in state:
            raise KeyError(f"{stem}_blocks has no {stem}_scales (MXFP4 weights come in pairs)")
        out[stem] = convert_moe_packed_tensors(state[stem + "_blocks"], state[stem + "_scales"],
                                               dtype=torch.bfloat16)
    return out
