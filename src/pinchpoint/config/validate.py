"""Pre-launch validation: every error names the field, the value and what is allowed.

OmegaConf's structured configs already reject unknown keys and wrong types at compose time;
this module checks ranges, choices and cross-field rules before any data, process or job exists.
The run-level groups are checked here; the model and dataset are checked by the workload's own
``validate(run)``, on the typed config (``run.model`` is the workload's dataclass).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any

from omegaconf import DictConfig, OmegaConf, read_write

from pinchpoint.errors import ConfigError, non_negative, one_of, positive_int, require
from pinchpoint.parallel.dims import ParallelDims


def get(cfg: DictConfig, path: str) -> Any:
    return OmegaConf.select(cfg, path, throw_on_missing=False)


def writable_dir(value: Any, field: str, env: str | None = None) -> None:
    """The directory exists and is writable, or can be created: probed by creating a file in
    the nearest existing ancestor (``os.access`` says yes to root even on a read-only mount or
    /proc, and the failure would come much later). Nothing is left behind."""
    import tempfile

    target = os.path.abspath(os.path.expanduser(str(value)))
    probe = target
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    where = f"{field} (or the {env} environment variable)" if env and os.environ.get(env) \
        else field
    try:
        if not os.path.isdir(probe):
            raise OSError(f"{probe} is not a directory")
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".pinchpoint-probe-"):
            pass
    except OSError as err:
        raise ConfigError(where, value, f"a writable directory ({probe} cannot be written: "
                          f"{getattr(err, 'strerror', None) or err})") from None


STORAGE_ENV = {"local": "PINCHPOINT_LOCAL_ROOT", "nfs": "PINCHPOINT_NFS_ROOT",
               "nvme": "PINCHPOINT_NVME_ROOT"}


def validate_tracking(tracking: Any) -> None:
    """A tracking server is asked once, with a short timeout and no retries, before launch:
    MLflow's own client retries for minutes and then prints a traceback."""
    if not tracking.enabled:
        return
    uri = str(tracking.uri)
    if uri.startswith("sqlite:///"):
        writable_dir(os.path.dirname(uri[len("sqlite:///"):]) or ".", "tracking.uri")
        return
    if not uri.startswith(("http://", "https://")):
        return  # another MLflow backend (postgresql://, databricks, ...): MLflow checks it
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=3) as reply:
            reply.read(64)
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise ConfigError("tracking.uri", uri, f"a reachable MLflow tracking server ({reason}); "
                          "start one (launchers/mlflow_server.sh), or record locally with "
                          "tracking=mlflow (a sqlite store under output_root; serve it later "
                          "with mlflow server --backend-store-uri sqlite:///PATH), or "
                          "tracking.enabled=false") from None


def validate_common(run: Any) -> None:
    t = run.train
    non_negative(run.seed, "seed")
    positive_int(t.evals_per_epoch, "train.evals_per_epoch")
    require(t.max_epochs, "train.max_epochs", lambda v: v > 0, "a number > 0")
    non_negative(t.max_steps, "train.max_steps")
    one_of(t.device, "train.device", ["auto", "cpu", "cuda"])
    if t.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise ConfigError("train.device", "cuda", "auto or cpu (no CUDA device is visible here)")
    non_negative(t.threads, "train.threads")
    require(run.checkpoint.interval, "checkpoint.interval", lambda v: isinstance(v, int) and v >= 0,
            "an integer >= 0 (steps between checkpoints; 0 = off)")
    positive_int(run.checkpoint.keep, "checkpoint.keep")
    writable_dir(run.output_root, "output_root")
    validate_storage(run.storage)
    one_of(run.mlperf.submission_division, "mlperf.submission_division", ["open", "closed"])
    validate_tracking(run.tracking)


def validate_storage(storage: Any) -> None:
    one_of(storage.cache_clear, "storage.cache_clear", ["none", "fadvise", "drop_caches"])
    if getattr(storage, "object_store", None) is not None:
        from pinchpoint.storage.object_store import check_reachable
        check_reachable(storage)   # one short try: an unreachable endpoint fails before launch
    writable_dir(storage.root, "storage.root", STORAGE_ENV.get(storage.name))
    e = storage.emulation
    if e.enabled:
        for key in ("read_mb_per_s", "write_mb_per_s"):
            require(getattr(e, key), f"storage.emulation.{key}", lambda v: v > 0,
                    "a bandwidth > 0 MB/s (or storage.emulation.enabled=false)")
        non_negative(e.latency_ms, "storage.emulation.latency_ms")


def cluster_nodes(cfg: Any) -> int:
    """Nodes the run will span: cluster.nodes on Slurm; one for a local run."""
    return getattr(cfg.cluster, "nodes", 1) if getattr(cfg.cluster, "name", None) == "slurm" \
        else 1


def validate_parallel(cfg: Any) -> ParallelDims:
    """Check the degrees once, and their placement on the run's nodes, and write the derived
    world size back into the config (composed or typed), so the launchers and Slurm requests
    read it."""
    nodes = cluster_nodes(cfg)
    world = cfg.parallel.world_size or ParallelDims.from_config(cfg.parallel).world_size
    # A node count that does not divide the ranks is cluster.nodes' error (validate_cluster):
    # the placement is checked only on one that does.
    fits = isinstance(nodes, int) and nodes > 0 and world % nodes == 0
    dims = ParallelDims.from_config(cfg.parallel, nodes=nodes if fits else None)
    with read_write(cfg) if isinstance(cfg, DictConfig) else contextlib.nullcontext():
        cfg.parallel.world_size = dims.world_size
        cfg.parallel.dp_shard = dims.dp_shard
    one_of(cfg.parallel.backend, "parallel.backend", ["auto", "gloo", "nccl"])
    return dims


def check_known_keys(node: DictConfig, path: str = "") -> None:
    """Keys forced in with Hydra's ``+key=value`` bypass the schema; refuse them here too."""
    schema = OmegaConf.get_type(node)
    known = {f.name for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) \
        else None
    for key in node.keys():
        full = f"{path}{key}"
        if known is not None and key not in known:
            raise ConfigError(full, get(node, str(key)), "a field of " + schema.__name__ +
                              ": " + ", ".join(sorted(known)))
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            check_known_keys(child, full + ".")


def validate_fabric(run: Any) -> None:
    """An emulated fabric shapes the links between nodes: it needs a job that spans nodes."""
    f = run.fabric
    if f.gbps is not None:
        require(f.gbps, "fabric.gbps", lambda v: v > 0,
                "a bandwidth > 0 Gbit/s, or null (fabric=none) to leave the links unshaped")
        if cluster_nodes(run) < 2:
            raise ConfigError("fabric.gbps", f.gbps,
                              "null (fabric=none) for a run on one node: it shapes the links "
                              "between nodes (use it with cluster=slurm cluster.nodes=2 or more "
                              "on an emulated cluster: launchers/slurm_up.sh --nodes N)")
    positive_int(f.burst_kb, "fabric.burst_kb")
    require(f.interface, "fabric.interface", lambda v: isinstance(v, str) and v.strip() != "",
            "auto or a network interface name (eth0, ib0)")


def validate_cluster(cfg: Any) -> None:
    """What can be checked without asking Slurm (pinchpoint.cluster.preflight asks sinfo)."""
    if getattr(cfg.cluster, "name", None) != "slurm":
        return
    from pinchpoint.cluster.request import mem_mb, tasks_per_node

    c = cfg.cluster
    for key in ("nodes", "cpus_per_task", "array_parallelism"):
        positive_int(getattr(c, key), f"cluster.{key}")
    require(c.time_limit_min, "cluster.time_limit_min", lambda v: isinstance(v, int) and v > 0,
            "a whole number of minutes > 0 (Slurm's --time)")
    for key in ("gpus_per_node", "max_num_timeout", "signal_delay_s"):
        require(getattr(c, key), f"cluster.{key}", lambda v: isinstance(v, int) and v >= 0,
                "an integer >= 0")
    require(c.tasks_per_node, "cluster.tasks_per_node",
            lambda v: v is None or (isinstance(v, int) and v > 0),
            "a positive integer, or null for parallel.world_size / cluster.nodes")
    if c.mem is not None:
        try:
            mem_mb(c.mem)
        except ValueError:
            raise ConfigError("cluster.mem", c.mem, "Slurm memory per node such as 16G or 500M")
    tasks_per_node(cfg)
    if not os.environ.get("SLURM_JOB_ID") and _hydra_mode() == "RUN":
        raise ConfigError("cluster", "slurm", "a sweep: add -m (python train.py -m cluster=slurm "
                          "...); Hydra's launchers submit jobs only for multiruns")


def _hydra_mode() -> str | None:
    try:
        from hydra.core.hydra_config import HydraConfig
        return HydraConfig.get().mode.name
    except Exception:  # composed without a Hydra job (tests, the sweeper's per-point checks)
        return None


def typed(cfg: DictConfig) -> Any:
    """The run config as dataclass objects (``run.model`` is the workload's schema)."""
    return OmegaConf.to_object(cfg)


def validate(cfg: DictConfig) -> Any:
    """Validate a composed run config; raises ConfigError on the first problem. Returns the
    typed run config (with ``parallel.world_size`` derived)."""
    check_known_keys(cfg)
    validate_parallel(cfg)
    return validate_typed(typed(cfg))


def validate_typed(run: Any) -> Any:
    """The checks on the typed run config (what the sweepers' pre-flight calls on its typed
    copies, sweepers/preflight.py); derives ``parallel.world_size`` on it too."""
    from pinchpoint.workloads import workload_class

    validate_parallel(run)
    validate_common(run)
    validate_cluster(run)
    validate_fabric(run)
    workload_class(run.model.name).validate(run)
    return run
