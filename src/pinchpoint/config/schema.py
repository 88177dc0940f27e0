"""Typed schemas for every config group, registered in Hydra's ConfigStore.

Each YAML option under conf/<group>/ names its schema in its defaults list
(``/schema/<group>/<kind>@_here_``), so an unknown key or a wrong type fails at compose time
with the field's full path. Range checks (positive sizes, known choices, cross-field rules)
live in ``pinchpoint.config.validate`` because OmegaConf checks types, not values.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


# --- model -------------------------------------------------------------------------------------
@dataclass
class DLRMScaleConfig:
    """One scale (proxy or full) of DLRM-DCNv2: the architecture plus its learning rate."""
    num_embeddings_per_feature: List[int] = MISSING
    multi_hot_sizes: List[int] = MISSING
    embedding_dim: int = MISSING
    bottom_mlp: List[int] = MISSING
    dcn_num_layers: int = MISSING
    dcn_low_rank_dim: int = MISSING
    top_mlp: List[int] = MISSING
    learning_rate: float = MISSING


@dataclass
class DLRMModelConfig:
    name: str = "dlrm_dcnv2"
    scale: str = "proxy"          # proxy | full
    impl: str = "native"          # native | torchrec
    num_dense_features: int = 13
    adagrad_epsilon: float = 1e-8
    proxy: DLRMScaleConfig = field(default_factory=DLRMScaleConfig)
    full: DLRMScaleConfig = field(default_factory=DLRMScaleConfig)


@dataclass
class LlamaScaleConfig:
    """One scale (proxy or full) of a Llama 3.1 model: architecture plus the training recipe
    knobs that the reference ties to it (batch sizes, learning rate, eval cadence)."""
    n_layers: int = MISSING
    dim: int = MISSING
    n_heads: int = MISSING
    n_kv_heads: int = MISSING
    ffn_dim: int = MISSING
    vocab_size: int = MISSING
    max_seq_len: int = 8192       # the model's context (RoPE table); seq_len may not exceed it
    seq_len: int = MISSING        # training sequence length (MLPerf max_sequence_length)
    rope_theta: float = 500000.0
    global_batch_size: int = MISSING   # sequences per optimizer step, all ranks
    micro_batch_size: int = MISSING    # sequences per forward/backward per rank
    learning_rate: float = MISSING
    warmup_samples: int = MISSING      # linear warmup, in sequences
    decay_samples: int = MISSING       # cosine decay to min_lr_ratio x lr, in sequences (warmup incl.)
    eval_every_samples: int = MISSING  # evaluation cadence, in training sequences
    eval_samples: int = MISSING        # first N validation sequences, unshuffled
    target_log_perplexity: float = MISSING  # real-data target (synthetic: entropy + margin)
    recompute: bool = False            # activation checkpointing per block
    precision: str = "fp32"            # fp32 | bf16 (autocast; GPU)


@dataclass
class LlamaModelConfig:
    name: str = "llama31_8b"
    scale: str = "proxy"          # proxy | full
    min_lr_ratio: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_epsilon: float = 1e-5
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    pipeline_schedule: str = "1f1b"  # gpipe | 1f1b (when parallel.pp > 1)
    proxy: LlamaScaleConfig = field(default_factory=LlamaScaleConfig)
    full: LlamaScaleConfig = field(default_factory=LlamaScaleConfig)


# --- dataset -----------------------------------------------------------------------------------
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


@dataclass
class GPUConfig:
    """One accelerator type for the planner: memory, peak dense FLOP rate, link bandwidths."""
    name: str = "H200"
    memory_gib: float = 141.0
    peak_tflops: float = 989.0         # dense BF16
    mfu: float = 0.40                  # achieved fraction of peak assumed for the step estimate
    intra_node_gb_per_s: float = 450.0  # per GPU, one direction (NVLink)
    inter_node_gb_per_s: float = 50.0   # per GPU (400 Gb/s NIC)
    gpus_per_node: int = 8
    reserved_gib: float = 6.0          # CUDA context, allocator fragmentation, NCCL buffers


# --- dataset -----------------------------------------------------------------------------------
@dataclass
class TeacherConfig:
    """The planted teacher DLRM that labels synthetic data (see data/synthetic_criteo.py)."""
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


# --- parallel, storage, cluster, tracking ------------------------------------------------------
@dataclass
class ParallelConfig:
    name: str = "single"
    world_size: int = 1
    dp: int = 1
    tp: int = 1
    pp: int = 1
    cp: int = 1
    ep: int = 1
    embedding_sharding: str = "table_wise"  # table_wise | row_wise
    backend: str = "auto"                   # auto (gloo on CPU, nccl on CUDA) | gloo | nccl


@dataclass
class EmulationConfig:
    """Throttle I/O on this tier to a bandwidth/latency profile (labelled 'emulated' in the run)."""
    enabled: bool = False
    read_mb_per_s: float = 1000.0
    write_mb_per_s: float = 1000.0
    latency_ms: float = 0.0        # per request (one read of a file region, one file write)


@dataclass
class StorageConfig:
    name: str = "local"
    root: str = "outputs/storage/local"
    cache_clear: str = "fadvise"   # none | fadvise | drop_caches
    emulation: EmulationConfig = field(default_factory=EmulationConfig)


@dataclass
class ClusterConfig:
    name: str = "local"


@dataclass
class ContainerConfig:
    """A pyxis/enroot container for every task, passed to srun as --container-* options."""
    image: Optional[str] = None   # e.g. nvcr.io#nvidia/pytorch:25.01-py3 or /shared/img.sqsh
    mounts: List[str] = field(default_factory=list)   # "src:dst[:flags]", as pyxis spells them
    workdir: Optional[str] = None
    python: Optional[str] = None  # python inside the image (default: the submitting interpreter)


@dataclass
class SlurmClusterConfig(ClusterConfig):
    """What each sweep point asks Slurm for (cluster=slurm); checked against sinfo before submitting
    (pinchpoint.cluster.preflight). A subclass so that the run schema's ``cluster`` slot takes it."""
    name: str = "slurm"
    partition: Optional[str] = None       # None = the cluster's default partition
    account: Optional[str] = None
    qos: Optional[str] = None
    nodes: int = 1
    tasks_per_node: Optional[int] = None  # None = parallel.world_size / nodes (a task per rank)
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    mem: Optional[str] = None             # per node, Slurm syntax (16G, 500M); None = default
    time_limit_min: int = 60
    constraint: Optional[str] = None
    array_parallelism: int = 256          # points of one sweep running at once
    max_num_timeout: int = 3              # requeues on time limit (preemptions do not count)
    signal_delay_s: int = 120             # USR2 this long before the limit: requeue, resume later
    sbatch: Dict[str, Any] = field(default_factory=dict)  # extra #SBATCH options {exclusive: true}
    srun: List[str] = field(default_factory=list)         # extra srun arguments
    setup: List[str] = field(default_factory=list)        # shell lines before srun (module load)
    container: ContainerConfig = field(default_factory=ContainerConfig)
    poll_interval_s: float = 2.0          # how often the submitting command checks its jobs


@dataclass
class TrackingConfig:
    enabled: bool = True
    uri: str = "sqlite:///outputs/mlflow.db"
    artifact_root: str = "outputs/mlartifacts"
    experiment: str = "${model.name}"
    system_metrics: bool = True
    system_metrics_interval_s: float = 2.0


# --- run ---------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    max_epochs: float = 1.0       # stop with status 'aborted' when the target is not met by then
    evals_per_epoch: int = 20     # the DLRM reference evaluates 20 times per epoch
    max_steps: int = 0            # 0 = no cap (tests and benchmarks use a cap)
    device: str = "auto"          # auto | cpu | cuda
    threads: int = 0              # torch intra-op threads (0 = torch's default)
    progress_every_s: float = 5.0


@dataclass
class CheckpointConfig:
    interval: int = 0             # steps between checkpoints; 0 = off
    keep: int = 2                 # newest valid checkpoints kept on the tier
    # Start from another run's newest valid checkpoint (its run key, the folder name under
    # <tier>/checkpoints/, or a path), e.g. to continue an ep8 run as ep2: checkpoints are
    # layout-independent (DLRM) or resharded on load (torch.distributed.checkpoint, Llama).
    resume_from: Optional[str] = None


@dataclass
class MLPerfConfig:
    submission_org: str = "pinchpoint"
    submission_platform: str = ""  # empty = this host's name
    submission_division: str = "open"
    ruleset: str = "6.0.0"


@dataclass
class RunConfig:
    model: Any = MISSING
    dataset: Any = MISSING
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    mlperf: MLPerfConfig = field(default_factory=MLPerfConfig)
    seed: int = 0
    plan_only: bool = False
    output_root: str = "outputs"
    fault: Optional[str] = None   # test hook: "raise_at_step:N" or "kill_at_step:N"
    gpu: GPUConfig = field(default_factory=GPUConfig)  # what plan_only plans for


def register_schemas() -> None:
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    cs.store(group="schema/model", name="dlrm_dcnv2", node=DLRMModelConfig)
    cs.store(group="schema/model", name="llama31", node=LlamaModelConfig)
    cs.store(group="schema/dataset", name="criteo", node=CriteoDatasetConfig)
    cs.store(group="schema/dataset", name="megatron", node=MegatronDatasetConfig)
    cs.store(group="schema/parallel", name="parallel", node=ParallelConfig)
    cs.store(group="schema/storage", name="storage", node=StorageConfig)
    cs.store(group="schema/cluster", name="local", node=ClusterConfig)
    cs.store(group="schema/cluster", name="slurm", node=SlurmClusterConfig)
    cs.store(group="schema/tracking", name="tracking", node=TrackingConfig)
