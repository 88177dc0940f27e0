"""Pre-launch validation: every error names the field, the value and what is allowed.

OmegaConf's structured configs already reject unknown keys and wrong types at compose time;
this module checks ranges, choices and cross-field rules before any data, process or job exists.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Iterable

from omegaconf import DictConfig, OmegaConf


class ConfigError(ValueError):
    """A config value that cannot run. ``field`` is the dotted path the user would override."""

    def __init__(self, field: str, value: Any, allowed: str):
        self.field, self.value, self.allowed = field, value, allowed
        super().__init__(f"{field}={value!r} is not allowed: {allowed}")


def get(cfg: DictConfig, path: str) -> Any:
    return OmegaConf.select(cfg, path, throw_on_missing=False)


def require(cfg: DictConfig, path: str, ok: Callable[[Any], bool], allowed: str) -> None:
    value = get(cfg, path)
    if not ok(value):
        raise ConfigError(path, value, allowed)


def positive_int(path: str, cfg: DictConfig) -> None:
    require(cfg, path, lambda v: isinstance(v, int) and v > 0, "a positive integer")


def non_negative(path: str, cfg: DictConfig) -> None:
    require(cfg, path, lambda v: v is not None and v >= 0, "a number >= 0")


def one_of(path: str, cfg: DictConfig, choices: Iterable[str]) -> None:
    choices = list(choices)
    require(cfg, path, lambda v: v in choices, "one of " + ", ".join(map(str, choices)))


def writable_dir(path: str, cfg: DictConfig) -> None:
    """The directory exists and is writable, or can be created (checked without creating it)."""
    value = get(cfg, path)
    target = os.path.abspath(os.path.expanduser(str(value)))
    probe = target
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(path, value, f"a writable directory ({probe} is not writable)")


def validate_common(cfg: DictConfig) -> None:
    non_negative("seed", cfg)
    positive_int("train.evals_per_epoch", cfg)
    require(cfg, "train.max_epochs", lambda v: v is not None and v > 0, "a number > 0")
    non_negative("train.max_steps", cfg)
    one_of("train.device", cfg, ["auto", "cpu", "cuda"])
    if get(cfg, "train.device") == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise ConfigError("train.device", "cuda", "auto or cpu (no CUDA device is visible here)")
    non_negative("train.threads", cfg)
    require(cfg, "checkpoint.interval", lambda v: isinstance(v, int) and v >= 0,
            "an integer >= 0 (steps between checkpoints; 0 = off)")
    positive_int("checkpoint.keep", cfg)
    validate_storage(cfg)
    one_of("mlperf.submission_division", cfg, ["open", "closed"])
    writable_dir("output_root", cfg)


def validate_storage(cfg: DictConfig) -> None:
    one_of("storage.cache_clear", cfg, ["none", "fadvise", "drop_caches"])
    writable_dir("storage.root", cfg)
    if get(cfg, "storage.emulation.enabled"):
        for key in ("read_mb_per_s", "write_mb_per_s"):
            require(cfg, f"storage.emulation.{key}", lambda v: v is not None and v > 0,
                    "a bandwidth > 0 MB/s (or storage.emulation.enabled=false)")
        non_negative("storage.emulation.latency_ms", cfg)


def validate_parallel(cfg: DictConfig) -> None:
    for key in ("world_size", "dp", "tp", "pp", "cp", "ep"):
        positive_int(f"parallel.{key}", cfg)
    one_of("parallel.backend", cfg, ["auto", "gloo", "nccl"])
    one_of("parallel.embedding_sharding", cfg, ["table_wise", "row_wise"])


def check_known_keys(node: DictConfig, path: str = "") -> None:
    """Keys forced in with Hydra's ``+key=value`` bypass the schema; refuse them here too."""
    import dataclasses

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


def validate_cluster(cfg: DictConfig) -> None:
    """What can be checked without asking Slurm (pinchpoint.cluster.preflight asks sinfo)."""
    if get(cfg, "cluster.name") != "slurm":
        return
    from pinchpoint.cluster.request import mem_mb, tasks_per_node

    for key in ("nodes", "cpus_per_task", "array_parallelism"):
        positive_int(f"cluster.{key}", cfg)
    require(cfg, "cluster.time_limit_min", lambda v: isinstance(v, int) and v > 0,
            "a whole number of minutes > 0 (Slurm's --time)")
    for key in ("gpus_per_node", "max_num_timeout", "signal_delay_s"):
        require(cfg, f"cluster.{key}", lambda v: isinstance(v, int) and v >= 0,
                "an integer >= 0")
    require(cfg, "cluster.tasks_per_node", lambda v: v is None or (isinstance(v, int) and v > 0),
            "a positive integer, or null for parallel.world_size / cluster.nodes")
    mem = get(cfg, "cluster.mem")
    if mem is not None:
        try:
            mem_mb(mem)
        except ValueError:
            raise ConfigError("cluster.mem", mem, "Slurm memory per node such as 16G or 500M")
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


def validate(cfg: DictConfig) -> None:
    """Validate a composed run config; raises ConfigError on the first problem."""
    from pinchpoint.workloads import workload_class

    check_known_keys(cfg)
    validate_common(cfg)
    validate_parallel(cfg)
    validate_cluster(cfg)
    workload_class(cfg.model.name).validate(cfg)
