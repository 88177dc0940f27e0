"""DeepSeek V3 671B config schemas (values in conf/model/deepseek_v3_671b.yaml). No torch."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING

from pinchpoint.workloads.common.config import DecoderModelConfig, DecoderScaleConfig, YarnConfig


def published_yarn() -> YarnConfig:
    """deepseek-ai/DeepSeek-V3's config.json rope_scaling (factor 40 over 4096 positions,
    beta_fast 32, beta_slow 1, mscale = mscale_all_dim = 1.0: cos/sin unscaled, the softmax
    scaled by (0.1 ln 40 + 1)^2 = 1.874)."""
    return YarnConfig(factor=40.0, original_max_position_embeddings=4096, beta_fast=32.0,
                      beta_slow=1.0, mscale=1.0, mscale_all_dim=1.0, truncate=True)


@dataclass
class DeepSeekScaleConfig(DecoderScaleConfig):
    """One scale of DeepSeek V3: architecture (as published) plus the reference's recipe."""
    n_layers: int = MISSING
    n_dense_layers: int = MISSING    # the first layers use a dense SwiGLU instead of experts
    dense_ffn_dim: int = MISSING
    dim: int = MISSING
    n_heads: int = MISSING
    # Multi-head latent attention: queries and keys/values pass through low-rank latents;
    # a separate rope part of the key is shared by all heads (decoupled RoPE).
    q_lora_rank: int = MISSING
    kv_lora_rank: int = MISSING
    qk_nope_head_dim: int = MISSING
    qk_rope_head_dim: int = MISSING
    v_head_dim: int = MISSING
    num_experts: int = MISSING
    top_k: int = MISSING
    expert_dim: int = MISSING
    num_groups: int = MISSING
    top_groups: int = MISSING
    shared_experts: int = 1
    route_scale: float = 2.5
    rope_theta: float = 10000.0
    # none | yarn. The MLPerf reference trains with YaRN: pretrain_deepseek_v3_671b.py
    # (mlcommons/training llm_moe_pretraining/nemo) builds the model from DeepSeek-V3's
    # config.json through Megatron-Bridge (deepseek_v3_pretrain_config -> AutoBridge), whose
    # MLA config has rope_type "yarn" and takes factor, beta_fast/slow, mscale, mscale_all_dim
    # and original_max_position_embeddings from rope_scaling (and sets rotary_scaling_factor 40).
    rope_scaling: str = "yarn"
    yarn: YarnConfig = field(default_factory=published_yarn)
    norm_eps: float = 1e-6
    capacity_factor: Optional[float] = None
    aux_loss_coeff: float = 0.01     # sequence-wise balancing loss (reference: 0.01)
    bias_update_rate: float = 1e-3   # aux-loss-free expert-bias step per optimizer step


@dataclass
class DeepSeekModelConfig(DecoderModelConfig):
    name: str = "deepseek_v3_671b"
    adam_epsilon: float = 1e-8       # the reference's (Llama/GPT-OSS use 1e-5)
    proxy: DeepSeekScaleConfig = field(default_factory=DeepSeekScaleConfig)
    full: DeepSeekScaleConfig = field(default_factory=DeepSeekScaleConfig)
    smoke: DeepSeekScaleConfig = field(default_factory=DeepSeekScaleConfig)
