"""Typed config of the FLUX.1 workload (no torch import: the registry loads it at compose time).

model=flux1 picks a scale (proxy | smoke | full); each scale carries the MMDiT shape, the frozen
encoders' shapes (they fix the preprocessed columns' widths) and the training recipe the
reference ties to it. dataset=flux_raw / flux_preprocessed pick the pipeline; both describe the
same underlying samples (the preprocessed set is made from the raw one).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from omegaconf import MISSING


@dataclass
class T5Shape:
    """transformers T5EncoderModel (T5 v1.1: gated-GELU FFN). Full: T5-XXL."""
    d_model: int = MISSING          # = the MMDiT's context_in_dim
    num_layers: int = MISSING
    num_heads: int = MISSING
    d_kv: int = MISSING
    d_ff: int = MISSING
    vocab_size: int = 32128
    max_tokens: int = MISSING       # max_t5_encoding_len (256 in the reference)


@dataclass
class ClipShape:
    """transformers CLIPTextModel, pooled output. Full: CLIP ViT-L/14 text tower."""
    hidden_size: int = MISSING      # = the MMDiT's vec_in_dim
    num_layers: int = MISSING
    num_heads: int = MISSING
    intermediate_size: int = MISSING
    vocab_size: int = 49408
    max_tokens: int = 77


@dataclass
class VaeShape:
    """diffusers AutoencoderKL encoder (the FLUX VAE: 16 latent channels, factor 8)."""
    block_out_channels: List[int] = MISSING   # downsampling factor = 2 ** (len - 1)
    layers_per_block: int = 2
    latent_channels: int = 16
    norm_num_groups: int = 32
    shift: float = 0.1159           # latent normalisation (z - shift) * scale, the reference's
    scale: float = 0.3611


@dataclass
class FluxScaleConfig:
    # MMDiT (FluxModelArgs)
    hidden_size: int = MISSING
    num_heads: int = MISSING
    depth: int = MISSING                  # double-stream blocks
    depth_single_blocks: int = MISSING
    mlp_ratio: float = 4.0
    axes_dim: List[int] = MISSING         # RoPE split of the head dim over (index, row, column)
    theta: int = 10_000
    qkv_bias: bool = True
    # frozen encoders
    t5: T5Shape = field(default_factory=T5Shape)
    clip: ClipShape = field(default_factory=ClipShape)
    vae: VaeShape = field(default_factory=VaeShape)
    # images and recipe
    image_size: int = MISSING             # square, pixels (256 in the reference)
    batch_size: int = MISSING             # per data-parallel rank (16 in the reference)
    learning_rate: float = MISSING        # constant, no warmup (1e-4 in the reference)
    eval_every_samples: int = MISSING     # 262,144 in the reference
    eval_samples: int = MISSING           # 29,696 in the reference (COCO-2014 subset)
    train_samples: int = MISSING          # 1,099,776 in the reference (CC12M 10 %)
    target_val_loss: float = MISSING      # 0.586
    cfg_dropout: float = 0.1              # classifier-free guidance: caption dropped -> empty
    precision: str = "fp32"               # fp32 | bf16 (autocast; GPU)
    recompute: bool = False               # activation checkpointing per block


@dataclass
class FluxModelConfig:
    name: str = "flux1"
    scale: str = "proxy"                  # proxy | smoke | full
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_epsilon: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    proxy: FluxScaleConfig = field(default_factory=FluxScaleConfig)
    smoke: FluxScaleConfig = field(default_factory=FluxScaleConfig)
    full: FluxScaleConfig = field(default_factory=FluxScaleConfig)


@dataclass
class FluxSyntheticConfig:
    """The planted image/text relation of the generator (see synthetic.py)."""
    pixel_noise: float = 0.005      # std of per-pixel noise on [0, 1] images
    jitter: float = 0.0             # random shift of the drawn shape, fraction of the side
    stored_size_factor: int = 1     # >1: images stored larger, resized (bicubic) on load
    num_colors: int = 4             # palette the captions draw from (2..8); 4 colours x 2 shapes
    num_shapes: int = 2             # x 4 places = 96 captions, learnt in a minute (of 1..4 shapes)
    seed: int = 1234


@dataclass
class FluxDatasetConfig:
    name: str = "flux_preprocessed"
    pipeline: str = "preprocessed"  # raw (tar shards, encoded in the loop) | preprocessed (columns)
    synthetic: bool = True
    path: Optional[str] = None      # real data folder; synthetic: generated on the storage tier
    encoders_path: Optional[str] = None  # folder with t5/, clip/, vae/ (save_pretrained layout)
    image_format: str = "jpg"       # raw shards: jpg | png
    jpeg_quality: int = 95
    samples_per_shard: int = 256
    columnar_format: str = "arrow"  # preprocessed shards: arrow (IPC file, memory-mapped) | parquet
    mmap: bool = True
    num_workers: int = 0            # DataLoader worker processes (decode/read off the main process)
    prefetch: int = 2
    target_margin: float = 0.0      # added to the scale's target_val_loss (synthetic sets)
    synthetic_data: FluxSyntheticConfig = field(default_factory=FluxSyntheticConfig)
