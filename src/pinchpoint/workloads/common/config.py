"""Config schemas shared by the decoder LLM workloads (Llama 3.1, the MoE models, LoRA):
the training recipe of one scale, and the Megatron-format C4 dataset. No torch import."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING


@dataclass
class DecoderScaleConfig:
    """The recipe knobs the references tie to a model scale (batch sizes, schedule, eval)."""
    vocab_size: int = MISSING
    max_seq_len: int = 8192       # the model's context (RoPE table); seq_len may not exceed it
    seq_len: int = MISSING        # training sequence length (MLPerf max_sequence_length)
    global_batch_size: int = MISSING   # sequences per optimizer step, all ranks
    micro_batch_size: int = MISSING    # sequences per forward/backward per data-parallel rank
    learning_rate: float = MISSING
    warmup_samples: int = MISSING      # linear warmup, in sequences
    decay_samples: int = MISSING       # cosine decay to min_lr_ratio x lr, in sequences
    eval_every_samples: int = MISSING  # evaluation cadence, in training sequences
    eval_samples: int = MISSING        # first N validation sequences, unshuffled
    target_log_perplexity: float = MISSING  # real-data target (synthetic: entropy + margin)
    recompute: bool = False            # activation checkpointing per block
    precision: str = "fp32"            # fp32 | bf16 (autocast; GPU)
    # The GEMM precision the planner plans this scale at (bf16 | fp8 | nvfp4 | mxfp4), where the
    # submissions run one the runner does not (the full scales: FP8); null = precision.
    # plan.precision overrides both.
    plan_precision: Optional[str] = None


@dataclass
class YarnConfig:
    """YaRN RoPE scaling, the keys of a config.json ``rope_scaling`` block (read as transformers'
    _compute_yarn_parameters reads them). Used where a scale sets ``rope_scaling: yarn``."""
    factor: float = MISSING                 # context stretch over the original length
    original_max_position_embeddings: int = 4096
    beta_fast: float = 32.0                 # dims turning more often than this keep their speed
    beta_slow: float = 1.0                  # dims turning less often than this are slowed
    mscale: Optional[float] = None          # both set: cos/sin scale = mscale(mscale) /
    mscale_all_dim: Optional[float] = None  # mscale(mscale_all_dim); MLA's softmax x mscale^2
    truncate: bool = True                   # blend band rounded to whole dimensions


@dataclass
class DecoderModelConfig:
    """Optimizer and schedule fields every decoder LLM shares (AdamW, Megatron's WarmupCosine)."""
    name: str = MISSING
    scale: str = "proxy"          # proxy | full | smoke
    min_lr_ratio: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_epsilon: float = 1e-5
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    pipeline_schedule: str = "1f1b"  # gpipe | 1f1b | interleaved1f1b (when parallel.pp > 1)


@dataclass
class TextTeacherConfig:
    """The planted second-order Markov source of synthetic_c4 (see data/synthetic_c4.py)."""
    successors: int = 4           # candidate next tokens per token
    g1_std: float = 1.0           # bigram logit scale
    g2_std: float = 3.0           # two-back logit scale (what a bigram model cannot capture)
    g2_rank: int = 8
    mean_doc_tokens: float = 200.0
    seed: int = 1234


@dataclass
class MegatronDatasetConfig:
    name: str = "synthetic_c4"
    synthetic: bool = True
    path: Optional[str] = None    # real data folder (c4); synthetic: on the storage tier
    train_prefix: str = "synthetic_c4_train_text_document"
    validation_prefix: str = "synthetic_c4_validation_text_document"
    train_tokens: int = 2_000_000          # synthetic corpus sizes
    validation_tokens: int = 60_000
    num_workers: int = 0
    prefetch: int = 2
    target_margin: float = 0.2    # synthetic target = teacher entropy + margin
    teacher: TextTeacherConfig = field(default_factory=TextTeacherConfig)
