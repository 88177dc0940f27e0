"""FLUX.1 MMDiT <-> Black Forest Labs' checkpoint names (flux1-schnell.safetensors,
flux1-dev.safetensors; BFL's flux repository, src/flux/model.py and modules/layers.py).

The module tree is BFL's (double_blocks.N.img_attn.qkv, img_mod.lin, single_blocks.N.linear1,
final_layer.adaLN_modulation.1, ...), so every name but one kind is the same: BFL's q/k RMSNorm
keeps its gain in ``scale`` where torch's nn.RMSNorm (and torchtitan's port, which the MLPerf
reference trains) has ``weight``. Checkpoints packaged for ComfyUI prefix every name with
``model.diffusion_model.``; that prefix is accepted. FLUX.1-dev's guidance embedder
(``guidance_in.*``) has no counterpart in the schnell architecture modelled here and is refused
as unexpected.
"""
from __future__ import annotations

import torch

from pinchpoint.workloads.common.state_dict_adapter import StateDictAdapter

PACKAGED_PREFIX = "model.diffusion_model."
NORMS = (".norm.query_norm.", ".norm.key_norm.")


class FluxStateDictAdapter(StateDictAdapter):
    published = "Black Forest Labs' FLUX.1 checkpoint names"

    def to_published(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {_swap_gain(name, "weight", "scale"): t for name, t in state.items()}

    def from_published(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {_swap_gain(name.removeprefix(PACKAGED_PREFIX), "scale", "weight"): t
                for name, t in state.items()}


def _swap_gain(name: str, old: str, new: str) -> str:
    if any(norm in name for norm in NORMS) and name.endswith("." + old):
        return name[: -len(old)] + new
    return name
