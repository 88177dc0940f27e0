"""Typed config of the llama2_70b_lora workload (no torch import: the registry loads it at
compose time). Each scale (proxy, smoke, full) is the shared decoder recipe plus the Llama 2
architecture; the LoRA adapter, the base checkpoint and the optimizer settings are shared."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from omegaconf import MISSING

from pinchpoint.workloads.common.config import DecoderModelConfig, DecoderScaleConfig


@dataclass
class LoraScaleConfig(DecoderScaleConfig):
    """The reference's recipe in the shared fields: warmup_samples 0 (no warmup), decay_samples
    = max_steps x GBS (cosine to min_lr_ratio 0), eval_samples = the validation sequences
    scored, target_log_perplexity = the eval-loss target (the mean next-token loss over summary
    tokens; 0.925 on GovReport)."""
    n_layers: int = MISSING
    dim: int = MISSING
    n_heads: int = MISSING
    n_kv_heads: int = MISSING
    ffn_dim: int = MISSING
    rope_theta: float = 10000.0
    micro_batch_size: int = 1
    warmup_samples: int = 0
    target_log_perplexity: float = 0.925


@dataclass
class LoraAdapterConfig:
    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.1
    target_modules: List[str] = field(default_factory=lambda: ["qkv_proj", "o_proj"])


@dataclass
class BasePretrainConfig:
    """How the proxy's base is made when no base_checkpoint is given: pretraining on the planted
    pretraining task (base.py), once per storage tier."""
    sequences: int = 2400
    seq_len: int = 128                 # one base serves every fine-tuning sequence length
    batch_size: int = 16
    learning_rate: float = 1.0e-2
    seed: int = 4321


@dataclass
class Llama2LoraModelConfig(DecoderModelConfig):
    name: str = "llama2_70b_lora"
    lora: LoraAdapterConfig = field(default_factory=LoraAdapterConfig)
    # A Hugging Face Llama safetensors folder (config.json + model.safetensors[.index.json]);
    # null: the proxy's generated base (made once per storage tier).
    base_checkpoint: Optional[str] = None
    base_pretrain: BasePretrainConfig = field(default_factory=BasePretrainConfig)
    recompute: bool = True             # activation checkpointing (reference: on); wins over
    #                                    the scale's recompute field
    checkpoint_adapters_only: bool = True  # checkpoints: adapters + their optimizer state only
    # The reference's optimizer (HF Trainer adamw_torch): AdamW defaults, wd 1e-4, clip 0.3,
    # cosine from lr to 0 with no warmup.
    min_lr_ratio: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1.0e-8
    weight_decay: float = 1.0e-4
    grad_clip: float = 0.3
    proxy: LoraScaleConfig = field(default_factory=LoraScaleConfig)
    full: LoraScaleConfig = field(default_factory=LoraScaleConfig)
    smoke: LoraScaleConfig = field(default_factory=LoraScaleConfig)


@dataclass
class GovReportTaskConfig:
    """The planted source of synthetic GovReport (synthetic.py): a second-order Markov teacher
    whose two-back interaction differs between the base's pretraining task and the fine-tuning
    task by a fresh rank-``g2_rank`` matrix."""
    successors: int = 4
    g1_std: float = 1.0
    g2_std: float = 3.0
    g2_rank: int = 8
    mean_doc_tokens: float = 200.0
    report_fraction: float = 0.5       # first part of each example: the report (masked in eval)
    seed: int = 1234
    shift_seed: int = 5678             # the fine-tuning task's two-back interaction


@dataclass
class GovReportDatasetConfig:
    name: str = "govreport_synthetic"
    synthetic: bool = True
    # Real data: the folder holding train*.parquet and validation*.parquet (the reference's
    # scrolls_gov_report_8k); synthetic: generated on the storage tier.
    path: Optional[str] = None
    train_sequences: int = 4000        # synthetic sizes (packed sequences)
    validation_sequences: int = 64
    # Synthetic target = best reachable eval loss + margin. The best reachable is the teacher's
    # own; the adapted model cannot beat the frozen base's fit of its own task (0.70 vs 0.57
    # nats on the pretraining task for the default base), hence a margin of 0.35.
    target_margin: float = 0.35
    num_workers: int = 0
    prefetch: int = 2
    task: GovReportTaskConfig = field(default_factory=GovReportTaskConfig)
