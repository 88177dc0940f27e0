"""Typed schemas for the run-level config groups, registered in Hydra's ConfigStore.

Model and dataset schemas live with their workload (``workloads/<name>/config.py``) and are
registered from there through the workload registry.

Each YAML option under conf/<group>/ names its schema in its defaults list
(``/schema/<group>/<kind>@_here_``), so an unknown key or a wrong type fails at compose time
with the field's full path. Range checks (positive sizes, known choices, cross-field rules) live
in ``pinchpoint.config.validate`` for the groups that drive nothing else, beside the code of the
others (the degrees in parallel/validation.py, the tier in storage/validation.py, the Slurm
request and the fabric in cluster/, the model and dataset in each workload's validate()),
because OmegaConf checks types, not values; runner/validation.py runs them all. This package
imports nothing of pinchpoint but its errors: every other part validates against it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


# --- the planner: the accelerator it plans for and its own knobs ---------------------------------
@dataclass
class PlanConfig:
    """The ``plan`` group: what the planner (plan/) needs beyond the model and the layout."""
    # Arithmetic precision of the matmuls: bf16 | fp8 | mxfp8 | nvfp4 | mxfp4 (null: the model's).
    # The runtime trains in fp32/bf16; fp8 and 4-bit are planned only (what the submissions use).
    precision: Optional[str] = None
    # Interleaved 1F1B: model chunks per pipeline rank (Megatron's virtual pipeline size).
    virtual_stages: int = 1
    # Count the embedding / the output layer + loss as one transformer layer each when splitting
    # the stack (Megatron's account_for_embedding/loss_in_pipeline_split, NVIDIA's ASYM_PP_*):
    # how 126 layers + 2 split evenly over PP8 x VP8 = 64 chunks of 2.
    embedding_as_layer: bool = False
    loss_as_layer: bool = False
    # Explicit layers per chunk (pp x virtual_stages entries, in schedule order); null = even.
    layers_per_chunk: Optional[List[int]] = None
    # Fraction of each collective's time hidden behind compute (0 = fully exposed, 1 = fully
    # hidden); null = the calibrated value in pinchpoint.plan.calibration.
    overlap_data_parallel: Optional[float] = None
    overlap_tensor_parallel: Optional[float] = None
    overlap_context_parallel: Optional[float] = None
    overlap_pipeline: Optional[float] = None
    # MoE all-to-all hidden behind compute (Megatron's OVERLAP_MOE_EXPERT_PARALLEL_COMM 1F1B
    # overlap: 1); null = 0, exposed (no calibrated value: the submissions say which they run).
    overlap_expert_parallel: Optional[float] = None
    # MoE: routed rows on the busiest expert-parallel rank over the mean (1 = uniform routing;
    # no balancing loss leaves it up to the rank capacity factor, e.g. 1.5). Scales the routed
    # experts' compute, memory traffic and all-to-all buffers on the critical rank when ep > 1.
    expert_load_imbalance: float = 1.0
    # MoE: Megatron's selective recompute (RECOMPUTE_MODULES): "mlp" and/or "core_attn" run
    # forward again in backward (the full one is model.<scale>.recompute).
    recompute_modules: Optional[List[str]] = None
    # LoRA: full recompute of the first N layers only (Megatron's recompute_method=block with
    # recompute_num_layers; AMD's MI300X configs ACG=full ACM=block ACL=21); null = every layer
    # when model.recompute, none otherwise.
    recompute_layers: Optional[int] = None
    # LoRA, megatron stack: the MLP activation's input saved in FP8 for its backward
    # (Megatron's activation_func_fp8_input_store: NVIDIA's FP8_ACT, Dell's and AMD's
    # FP8_ACTIVATION), the largest tensor a layer keeps; false: in BF16.
    fp8_activation_store: bool = False
    # CTAs NCCL may use per communicator (dp, tp, cp, pp), as NeMo's
    # conf/nccl/custom_communicator_cta.yaml sets max_ctas: a capped communicator drives only
    # part of NVLink (plan/network.py capped). Default: the MLPerf NeMo recipes' dp and pp caps,
    # with which plan/calibration.py was fitted; null = NCCL's own choice (enough to saturate).
    # "all": a cap on every communicator, as the NCCL_MAX_CTAS environment variable sets one
    # (the smaller of it and a communicator's own applies).
    nccl_max_ctas: Dict[str, Optional[int]] = field(
        default_factory=lambda: {"dp": 8, "tp": None, "cp": None, "pp": 2, "all": None})
    # Attention (fused DPA) in FP8: true | false; null = FP8 when the matmuls run in FP8 or 4-bit
    # (Transformer Engine's FP8_DPA; a submission's config_*.sh says which it runs).
    fp8_attention: Optional[bool] = None
    # Gather parameters for the data-parallel all-gather in FP8 (Megatron's --fp8-param-gather,
    # FP8_PARAM_GATHER in NeMo's configs): 1 byte per parameter on the wire instead of 2; needs
    # precision fp8 and the megatron stack.
    fp8_param_gather: bool = False
    # Whose collectives the plan charges: megatron (NeMo / Megatron-LM, what the published
    # submissions run: a distributed optimizer that reduce-scatters gradients and all-gathers
    # parameters once a step; a frozen LoRA base replicated, not gathered) or fsdp2
    # (pinchpoint's runner: FSDP2 units re-gathered under every micro-batch). null: the
    # workload's reference implementation's (WorkloadSpec.rules.reference_stack).
    stack: Optional[str] = None
    # A global batch below every RCP of the benchmark: refused (false), or planned at the
    # smallest reference's samples as MLPerf's RCP checker scores it (true; published
    # submissions below the smallest RCP exist, e.g. Llama 3.1 405B v5.0 at 448 < 1008).
    below_smallest_rcp: bool = False
    # Seconds between run_start and the first step that the clock counts (MLPerf starts the
    # clock after init_stop: model build and checkpoint load are outside it).
    init_in_clock_s: float = 0.0


@dataclass
class GPUConfig:
    """One accelerator type for the planner: memory, peak dense FLOP rate, link bandwidths."""
    name: str = "H200"               # presets with their sources: conf/gpu/*.yaml (+gpu=gb200)
    architecture: str = "hopper"     # selects the calibrated achieved fraction (plan/calibration.py)
    memory_gib: float = 131.3
    peak_tflops: float = 989.0         # dense BF16
    peak_tflops_fp8: Optional[float] = 1979.0   # dense; null = no FP8 tensor cores
    peak_tflops_fp4: Optional[float] = None     # dense NVFP4/MXFP4; null = none
    memory_tb_per_s: float = 4.8       # HBM bandwidth
    mfu: Optional[float] = None        # null = calibrated achieved fraction of peak; a number overrides it
    sfu_texp_per_s: Optional[float] = 4.18  # softmax exponentials, 1e12/s; null = not modelled
    # Tensor-core and SFU rate this part sustains, relative to the parts its architecture's
    # achieved fraction is fitted on, at the same datasheet peak (GB300's higher power
    # budget, measured from same-config logs: conf/gpu/gb300.yaml); 1.0 elsewhere.
    sustained_rate: float = 1.0
    intra_node_gb_per_s: float = 450.0  # per GPU, one direction, inside the NVLink domain
    nvlink_domain: int = 8             # GPUs per NVLink domain (HGX 8, NVL72 72)
    inter_node_gb_per_s: float = 50.0   # per GPU (400 Gb/s NIC)
    gpus_per_node: int = 8
    nvlink_links: Optional[int] = 18   # links per GPU (NVLink 4 and 5: 18); caps CTA-limited NCCL
    reserved_gib: float = 6.0          # CUDA context, allocator fragmentation, NCCL buffers
    gpus_per_nic: int = 1              # ranks sharing one NIC (an emulated node: all of them)
    collectives: str = "nccl"          # whose algorithms move the bytes: nccl | gloo
    intra_node_hop_s: Optional[float] = None   # per-step latency inside a node (null: NCCL's)
    inter_node_hop_s: Optional[float] = None   # and across nodes


# --- parallel, storage, cluster, tracking ------------------------------------------------------
@dataclass
class PlacementConfig:
    """Where each dimension runs on a multi-node job (parallel/placement.py): ``inside`` a node
    (refused when it cannot fit), ``auto`` (inside while it fits, then across) or ``across``
    nodes on purpose (to measure why one does not)."""
    tp: str = "inside"
    cp: str = "inside"
    dp_shard: str = "auto"       # HSDP: shard inside a node ...
    dp_replicate: str = "auto"   # ... replicate across nodes
    pp: str = "auto"             # stages are the first to be split over nodes
    ep: str = "auto"


@dataclass
class ParallelConfig:
    """Degrees of parallelism (checked once by pinchpoint.parallel.dims.ParallelDims):
    dp_replicate x dp_shard x cp x tp x pp = world_size; ep shards the sparse part (DLRM tables,
    MoE experts) over ranks borrowed from the non-pipeline ones."""
    name: str = "single"
    world_size: Optional[int] = None   # None: the product of the degrees
    dp_replicate: int = 1     # DDP replicas (HSDP's outer dimension)
    dp_shard: int = 1         # FSDP2 shards (HSDP's inner dimension); -1 = what world_size leaves
    cp: int = 1
    tp: int = 1
    pp: int = 1
    ep: int = 1
    backend: str = "auto"                   # auto (gloo on CPU, nccl on CUDA) | gloo | nccl
    placement: PlacementConfig = field(default_factory=PlacementConfig)


@dataclass
class EmulationConfig:
    """Throttle I/O on this tier to a bandwidth/latency profile (labelled 'emulated' in the run)."""
    enabled: bool = False
    read_mb_per_s: float = 1000.0
    write_mb_per_s: float = 1000.0
    latency_ms: float = 0.0        # per request (one read of a file region, one file write)


@dataclass
class ObjectStoreConfig:
    """An S3 endpoint (storage=object; see pinchpoint.storage.object_store). Credentials come
    from boto3's usual environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE)."""
    endpoint: str = "http://127.0.0.1:8333"
    bucket: str = "pinchpoint"
    prefix: str = ""               # key prefix inside the bucket
    region: str = "us-east-1"
    connect_timeout_s: float = 2.0
    create_bucket: bool = False    # create a missing bucket (our own loopback server only)


@dataclass
class StorageConfig:
    name: str = "local"
    root: str = "outputs/storage/local"
    cache_clear: str = "fadvise"   # none | fadvise | drop_caches
    emulation: EmulationConfig = field(default_factory=EmulationConfig)
    object_store: Optional[ObjectStoreConfig] = None   # set: data + checkpoints via S3


@dataclass
class ClusterConfig:
    name: str = "local"


@dataclass
class FabricConfig:
    """The network between nodes (cluster/fabric.py). ``gbps`` set: every node's link is shaped
    to that bandwidth per direction (an emulated cluster: launchers/slurm_up.sh --nodes N), the
    run tagged ``fabric_emulated``; null: the links are left as they are and read (interfaces,
    link speeds, InfiniBand ports), as on a real cluster."""
    name: str = "none"
    gbps: Optional[float] = None     # emulated inter-node bandwidth per direction, Gbit/s
    stands_for: Optional[str] = None  # the real fabric a preset is scaled from
    scale: Optional[float] = None    # real bandwidth / emulated bandwidth (what the preset says)
    interface: str = "auto"          # the node's inter-node interface (auto: the one holding the
                                     # address its hostname resolves to); also GLOO/NCCL_SOCKET_IFNAME
    burst_kb: int = 256              # token-bucket depth of the shaper (tc tbf burst)


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
    exclusive: Optional[bool] = None      # None: exclusive nodes when a job spans several
    sbatch: Dict[str, Any] = field(default_factory=dict)  # extra #SBATCH options
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
    # MLflow's own default. Each sample re-reads the whole run (its status query): ~4.5 ms of
    # CPU on an idle machine, ~25 ms beside a 2-core DLRM run, i.e. 0.24 % of its throughput
    # at 10 s (benchmarks/dlrm_overhead_interleaved.py, system_metrics_cost.py). The run's own
    # 1 s samples are on its timeline (telemetry/system_sampler.py).
    system_metrics_interval_s: float = 10.0


# --- run ---------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    max_epochs: float = 1.0       # stop with status 'aborted' when the target is not met by then
    evals_per_epoch: int = 20     # the DLRM reference evaluates 20 times per epoch
    max_steps: int = 0            # 0 = no cap (tests and benchmarks use a cap)
    device: str = "auto"          # auto | cpu | cuda
    threads: int = 0              # torch intra-op threads (0 = torch's default)
    progress_every_s: float = 5.0
    # torch.compile each transformer block (torchtitan's way) for the LLM and FLUX.1 workloads;
    # collectives inside a compiled graph are attributed or the run says they were not.
    compile: bool = False


@dataclass
class TelemetryConfig:
    """What the run measures beside its phases (telemetry/)."""
    # How device time is attributed to phases and collectives: events (CUDA events on the
    # compute and communication streams, resolved after the step: no host sync in the loop),
    # sync (a device synchronize at every boundary: exact per phase, but overlap is given up),
    # off (host time only), auto (events on CUDA; on CPU the host clock is the device clock).
    attribution: str = "auto"
    # Steps [first, last] to run under torch.profiler (Kineto); its kernel, memcpy and CPU-op
    # events are merged into the run's timeline on the same clock. Empty: no profiling.
    profile_steps: list = field(default_factory=list)
    # NCCL_DEBUG=INFO (INIT,COLL,NET) to a per-rank file, parsed onto the timeline and into
    # MLflow params (rings, trees, channels, transports, IB devices).
    nccl_debug: bool = False
    # Per-GPU counters (NVML, or amdsmi on AMD) sampled with the system metrics; nothing is
    # logged where no GPU is visible.
    gpu_counters: bool = True


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
    fabric: FabricConfig = field(default_factory=FabricConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    mlperf: MLPerfConfig = field(default_factory=MLPerfConfig)
    seed: int = 0
    plan_only: bool = False
    output_root: str = "outputs"
    fault: Optional[str] = None   # test hook: "raise_at_step:N" or "kill_at_step:N"
    gpu: GPUConfig = field(default_factory=GPUConfig)  # what plan_only plans for
    plan: PlanConfig = field(default_factory=PlanConfig)  # planner-only knobs


def register_schemas() -> None:
    """The run schema and its groups' schemas. The model and dataset schemas are the workloads'
    (pinchpoint.workloads.registry.setup registers them after these)."""
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    cs.store(group="schema/parallel", name="parallel", node=ParallelConfig)
    cs.store(group="schema/storage", name="storage", node=StorageConfig)
    cs.store(group="schema/cluster", name="local", node=ClusterConfig)
    cs.store(group="schema/cluster", name="slurm", node=SlurmClusterConfig)
    cs.store(group="schema/tracking", name="tracking", node=TrackingConfig)
    cs.store(group="schema/fabric", name="fabric", node=FabricConfig)
