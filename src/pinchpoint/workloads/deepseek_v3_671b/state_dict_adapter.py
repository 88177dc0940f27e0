"""DeepSeek V3 <-> the released checkpoint's names (deepseek-ai/DeepSeek-V3 model-*.safetensors,
read by transformers' DeepseekV3ForCausalLM; the MLPerf benchmark's bf16 starting checkpoint is
in the same format).

Besides renaming:
- routed experts are stored one by one (mlp.experts.E.gate_proj / up_proj / down_proj, each an
  nn.Linear weight); model.py stacks them as (experts, in, out) with gate and up side by side;
- the rotary rows of q_b_proj (per head, after the nope rows) and of kv_a_proj_with_mqa (after
  the latent) pair adjacent dimensions, DeepSeek's complex convention (transformers'
  rope_interleave; Megatron's MLA de-interleaves them too); model.py rotates halves, so those
  rows are reordered;
- the release stores linear weights in FP8 (e4m3) with a float32 ``weight_scale_inv`` per
  128 x 128 block: dequantised on load (to float32, no further rounding);
- the multi-token-prediction layer(s) after the last decoder layer (model.layers.61 in the
  release) are not modelled and are skipped.
"""
from __future__ import annotations

import re
from collections import defaultdict

import torch

from pinchpoint.workloads.common.state_dict_adapter import (Renames, StateDictAdapter,
                                                            halves_to_interleaved,
                                                            interleaved_to_halves, rename_all)

NAMES = Renames({
    "tok_embeddings.weight": "model.embed_tokens.weight",
    "layers.{}.attention_norm.weight": "model.layers.{}.input_layernorm.weight",
    "layers.{}.attention.wq_a.weight": "model.layers.{}.self_attn.q_a_proj.weight",
    "layers.{}.attention.q_norm.weight": "model.layers.{}.self_attn.q_a_layernorm.weight",
    "layers.{}.attention.wq_b.weight": "model.layers.{}.self_attn.q_b_proj.weight",
    "layers.{}.attention.wkv_a.weight": "model.layers.{}.self_attn.kv_a_proj_with_mqa.weight",
    "layers.{}.attention.kv_norm.weight": "model.layers.{}.self_attn.kv_a_layernorm.weight",
    "layers.{}.attention.wkv_b.weight": "model.layers.{}.self_attn.kv_b_proj.weight",
    "layers.{}.attention.wo.weight": "model.layers.{}.self_attn.o_proj.weight",
    "layers.{}.ffn_norm.weight": "model.layers.{}.post_attention_layernorm.weight",
    "layers.{}.feed_forward.w1.weight": "model.layers.{}.mlp.gate_proj.weight",
    "layers.{}.feed_forward.w3.weight": "model.layers.{}.mlp.up_proj.weight",
    "layers.{}.feed_forward.w2.weight": "model.layers.{}.mlp.down_proj.weight",
    "layers.{}.moe.router.gate.weight": "model.layers.{}.mlp.gate.weight",
    "layers.{}.moe.router.expert_bias": "model.layers.{}.mlp.gate.e_score_correction_bias",
    "layers.{}.moe.shared_experts.w1.weight": "model.layers.{}.mlp.shared_experts.gate_proj.weight",
    "layers.{}.moe.shared_experts.w3.weight": "model.layers.{}.mlp.shared_experts.up_proj.weight",
    "layers.{}.moe.shared_experts.w2.weight": "model.layers.{}.mlp.shared_experts.down_proj.weight",
    "norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
})
EXPERT = re.compile(r"^model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.(gate|up|down)_proj\.weight$")
LAYER = re.compile(r"^model\.layers\.(\d+)\.")
SCALE = "_scale_inv"


class DeepSeekStateDictAdapter(StateDictAdapter):
    published = "DeepSeek V3 checkpoint names (DeepseekV3ForCausalLM)"

    def __init__(self, a, mtp_layers: int = 1, fp8_block: tuple[int, int] = (128, 128)):
        """``a``: the model's DeepSeekArgs (layers, heads, rope and latent widths)."""
        self.a, self.mtp_layers, self.fp8_block = a, mtp_layers, fp8_block

    def to_published(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        experts = {n: t for n, t in state.items() if ".moe.experts." in n}
        out = rename_all({n: self._rope_rows(n, t, halves_to_interleaved)
                          for n, t in state.items() if n not in experts},
                         NAMES.to_published, "model")
        for name, t in experts.items():
            out.update(_unstack_experts(name, t))
        return out

    def from_published(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        state = self._drop_mtp(_dequantize_fp8(state, self.fp8_block))
        experts = {n: t for n, t in state.items() if EXPERT.match(n)}
        rest = rename_all({n: t for n, t in state.items() if n not in experts},
                          NAMES.from_published, "checkpoint")
        out = {n: self._rope_rows(n, t, interleaved_to_halves) for n, t in rest.items()}
        out.update(_stack_experts(experts))
        return out

    def _drop_mtp(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Without the multi-token-prediction layers (indices n_layers .. + mtp_layers - 1)."""
        mtp = range(self.a.n_layers, self.a.n_layers + self.mtp_layers)
        return {n: t for n, t in state.items()
                if not ((m := LAYER.match(n)) and int(m.group(1)) in mtp)}

    def _rope_rows(self, name: str, t: torch.Tensor, reorder) -> torch.Tensor:
        """wq_b / wkv_a (our names) with their rotary rows put in the other pair order."""
        a = self.a
        if name.endswith(".attention.wq_b.weight"):
            per_head = t.reshape(a.n_heads, a.qk_nope_head_dim + a.qk_rope_head_dim, -1)
            nope, rope = per_head.split([a.qk_nope_head_dim, a.qk_rope_head_dim], dim=1)
            rope = reorder(rope.reshape(a.n_heads * a.qk_rope_head_dim, -1), a.n_heads)
            return torch.cat([nope, rope.reshape(a.n_heads, a.qk_rope_head_dim, -1)], 1) \
                .reshape(t.shape)
        if name.endswith(".attention.wkv_a.weight"):
            latent, rope = t.split([a.kv_lora_rank, a.qk_rope_head_dim])
            return torch.cat([latent, reorder(rope, 1)])
        return t


def _stack_experts(experts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-expert nn.Linear weights -> layers.L.moe.experts.{gate_up_proj, down_proj}."""
    by_layer: dict[int, dict[tuple[int, str], torch.Tensor]] = defaultdict(dict)
    for name, t in experts.items():
        layer, expert, kind = EXPERT.match(name).groups()
        by_layer[int(layer)][(int(expert), kind)] = t
    out = {}
    for layer, parts in by_layer.items():
        count = 1 + max(e for e, _ in parts)
        absent = [f"model.layers.{layer}.mlp.experts.{e}.{k}_proj.weight"
                  for e in range(count) for k in ("gate", "up", "down") if (e, k) not in parts]
        if absent:
            raise KeyError(f"experts incomplete in layer {layer}: " + ", ".join(absent[:5]))
        gate_up = [torch.cat([parts[e, "gate"].t(), parts[e, "up"].t()], dim=1)
                   for e in range(count)]
        out[f"layers.{layer}.moe.experts.gate_up_proj"] = torch.stack(gate_up)
        out[f"layers.{layer}.moe.experts.down_proj"] = torch.stack(
            [parts[e, "down"].t() for e in range(count)])
    return out


def _unstack_experts(name: str, t: torch.Tensor) -> dict[str, torch.Tensor]:
    layer = name.split(".")[1]
    stem = f"model.layers.{layer}.mlp.experts"
    if name.endswith(".down_proj"):
        return {f"{stem}.{e}.down_proj.weight": t[e].t() for e in range(t.shape[0])}
    out = {}
    for e in range(t.shape[0]):
        gate, up = t[e].chunk(2, dim=1)
        out[f"{stem}.{e}.gate_proj.weight"] = gate.t()
        out[f"{stem}.{e}.up_proj.weight"] = up.t()
    return out


def _dequantize_fp8(state: dict[str, torch.Tensor], block: tuple[int, int]):
    """FP8 weights with a ``<name>_scale_inv`` (one float per block) -> float32 weights."""
    scaled = {n[: -len(SCALE)] for n in state if n.endswith(SCALE)}
    out = {n: t for n, t in state.items() if not n.endswith(SCALE)}
    for name in scaled:
        if name not in state:
            raise KeyError(f"{name}{SCALE} without its weight {name}")
        w, s = state[name], state[name + SCALE]
        rows, cols = w.shape
        s = s.repeat_interleave(block[0], 0)[:rows].repeat_interleave(block[1], 1)[:, :cols]
        out[name] = w.float() * s
    return out
