"""DLRM-DCNv2 config schemas: the model (proxy / full / smoke scales) and Criteo multi-hot data.
No torch import."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from omegaconf import MISSING


@dataclass
class DLRMScaleConfig:
    """One scale of DLRM-DCNv2: the architecture plus its learning rate."""
    num_embeddings_per_feature: List[int] = MISSING
    multi_hot_sizes: List[int] = MISSING
    embedding_dim: int = MISSING
    bottom_mlp: List[int] = MISSING
    dcn_num_layers: int = MISSING
    dcn_low_rank_dim: int = MISSING
    top_mlp: List[int] = MISSING
    learning_rate: float = MISSING
    # The global batch the planner plans this scale at; null = dataset.batch_size (the proxy and
    # smoke runs'). The full scale sets the reference's (conf/model/dlrm_dcnv2.yaml).
    global_batch_size: Optional[int] = None


@dataclass
class DLRMModelConfig:
    name: str = "dlrm_dcnv2"
    scale: str = "proxy"          # proxy | full | smoke
    impl: str = "native"          # native | torchrec
    num_dense_features: int = 13
    adagrad_epsilon: float = 1e-8
    proxy: DLRMScaleConfig = field(default_factory=DLRMScaleConfig)
    full: DLRMScaleConfig = field(default_factory=DLRMScaleConfig)
    smoke: DLRMScaleConfig = field(default_factory=DLRMScaleConfig)


@dataclass
class TeacherConfig:
    """The planted teacher DLRM that labels synthetic data (see synthetic.py)."""
    embedding_dim: int = 2
    logit_std: float = 2.0        # sharper teacher -> higher best-reachable AUROC
    logit_bias: float = -1.0      # sets the click-through rate (~0.32)
    id_skew: float = 3.0          # ids = floor(rows * u**skew): power-law popularity as in Criteo
    seed: int = 1234


@dataclass
class CriteoDatasetConfig:
    name: str = "synthetic_criteo"
    synthetic: bool = True
    path: Optional[str] = None    # real data folder (criteo_multihot); synthetic: on the storage tier
    num_days: int = 8             # the last day's first half is validation, as in the reference
    samples_per_day: int = 81920
    batch_size: int = 2048        # global batch (ranks x per-rank batch)
    eval_batch_size: int = 16384
    mmap: bool = True             # reference mmap_mode: dense/labels memory-mapped instead of loaded
    num_workers: int = 0          # DataLoader worker processes (0 = load in the training process)
    prefetch: int = 2             # batches in flight per worker (DataLoader prefetch_factor)
    pin_memory: bool = False
    verify_checksums: bool = False
    target_margin: float = 0.05   # synthetic target = best reachable AUROC - margin
    target_auroc: Optional[float] = None  # explicit target (real data: 0.80275)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
