"""Llama 3.1 config schemas (8B and 405B share them). No torch import."""
from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from pinchpoint.workloads.common.config import DecoderModelConfig, DecoderScaleConfig


@dataclass
class LlamaScaleConfig(DecoderScaleConfig):
    """One scale of a Llama 3.1 model: the architecture plus the recipe the reference ties to it."""
    n_layers: int = MISSING
    dim: int = MISSING
    n_heads: int = MISSING
    n_kv_heads: int = MISSING
    ffn_dim: int = MISSING
    rope_theta: float = 500000.0


@dataclass
class LlamaModelConfig(DecoderModelConfig):
    name: str = "llama31_8b"
    proxy: LlamaScaleConfig = field(default_factory=LlamaScaleConfig)
    full: LlamaScaleConfig = field(default_factory=LlamaScaleConfig)
    smoke: LlamaScaleConfig = field(default_factory=LlamaScaleConfig)
