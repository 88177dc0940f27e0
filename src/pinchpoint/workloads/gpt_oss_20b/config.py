"""GPT-OSS 20B config schemas (values in conf/model/gpt_oss_20b.yaml). No torch import."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING

from pinchpoint.workloads.common.config import DecoderModelConfig, DecoderScaleConfig, YarnConfig


def published_yarn() -> YarnConfig:
    """openai/gpt-oss-20b's config.json rope_scaling (= transformers' GptOssConfig default and
    OpenAI's gpt_oss/torch/model.py: scaling 32, ntk_beta 32, ntk_alpha 1, context 4096, an
    unrounded blend band); no mscale keys, so cos/sin are scaled by 0.1 ln 32 + 1 = 1.347."""
    return YarnConfig(factor=32.0, original_max_position_embeddings=4096, beta_fast=32.0,
                      beta_slow=1.0, truncate=False)


@dataclass
class GptOssScaleConfig(DecoderScaleConfig):
    """One scale of GPT-OSS: architecture (as published) plus the reference's recipe."""
    n_layers: int = MISSING
    dim: int = MISSING
    n_heads: int = MISSING
    n_kv_heads: int = MISSING
    head_dim: int = MISSING          # 64 at full scale: heads x head_dim (4096) != dim (2880)
    num_experts: int = MISSING
    top_k: int = MISSING
    expert_dim: int = MISSING
    sliding_window: int = 128        # on even layers; odd layers attend to the whole context
    rope_theta: float = 150000.0
    # none | yarn. The MLPerf reference trains with plain RoPE: its Primus config
    # (mlcommons/training small_llm_moe_pretraining/primus/conf/gpt_oss_20B-pretrain.yaml) sets
    # position_embedding_type: rope, rotary_base: 150000 and no YaRN keys. The released
    # checkpoint uses YaRN (``yarn`` below), which changes cos/sin at every position.
    rope_scaling: str = "none"
    yarn: YarnConfig = field(default_factory=published_yarn)
    norm_eps: float = 1e-5
    capacity_factor: Optional[float] = None   # None: no token dropping (the reference)
    aux_loss_coeff: float = 0.0      # the reference trains without a balancing loss


@dataclass
class GptOssModelConfig(DecoderModelConfig):
    name: str = "gpt_oss_20b"
    # OpenAI's o200k_harmony vocabulary; the MLPerf reference trains with the Llama 3.1
    # tokenizer (vocab_size 128256), which is what the scales use. The planner prints both.
    published_vocab_size: int = 201088
    proxy: GptOssScaleConfig = field(default_factory=GptOssScaleConfig)
    full: GptOssScaleConfig = field(default_factory=GptOssScaleConfig)
    smoke: GptOssScaleConfig = field(default_factory=GptOssScaleConfig)
