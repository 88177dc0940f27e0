"""Translate a point's ``cluster`` config (cluster=slurm) into submitit's SlurmExecutor arguments.

One Slurm task per rank: a point with parallel.world_size N on ``nodes`` nodes runs N / nodes tasks
per node, each adopted as a rank by pinchpoint.parallel (JobEnvironment). Points whose requests
are equal share one job array.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from pinchpoint.errors import ConfigError, positive_int, require

_MEM = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT]?)B?$", re.IGNORECASE)
_MB = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}


def mem_mb(text: str) -> float:
    """Slurm memory syntax (16G, 500M, 1024 = MB) in MB; raises ValueError."""
    m = _MEM.match(str(text).strip())
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _MB[m.group(2).upper()]


def tasks_per_node(cfg: DictConfig) -> int:
    """Ranks per node: cluster.tasks_per_node, or parallel.world_size / cluster.nodes."""
    from pinchpoint.parallel.dims import ParallelDims
    c = cfg.cluster
    # null world_size: derived from the degrees (the runner's validation fills it in later)
    world = cfg.parallel.world_size or ParallelDims.from_config(cfg.parallel).world_size
    if c.nodes < 1:
        raise ConfigError("cluster.nodes", c.nodes, "a positive integer")
    if c.tasks_per_node is not None:
        if c.tasks_per_node * c.nodes != world:
            raise ConfigError("cluster.tasks_per_node", c.tasks_per_node,
                              f"parallel.world_size / cluster.nodes = {world} / {c.nodes} "
                              "(one task per rank), or null to derive it")
        return c.tasks_per_node
    if world % c.nodes:
        raise ConfigError("cluster.nodes", c.nodes,
                          f"a divisor of parallel.world_size={world} (every node runs the same "
                          "number of ranks)")
    return world // c.nodes


@dataclass
class SlurmRequest:
    """SlurmExecutor constructor and update_parameters() arguments for one point."""
    init: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    def key(self) -> str:
        return json.dumps([self.init, self.params], sort_keys=True, default=str)


def container_srun_args(container: DictConfig) -> list[str]:
    if not container.image:
        return []
    args = [f"--container-image={container.image}"]
    if container.mounts:
        args.append("--container-mounts=" + ",".join(container.mounts))
    if container.workdir:
        args.append(f"--container-workdir={container.workdir}")
    return args


def slurm_request(cfg: DictConfig, job_name: str) -> SlurmRequest:
    c = cfg.cluster
    # max_num_timeout belongs to the executor's constructor: update_parameters() ignores it.
    init: dict[str, Any] = {"max_num_timeout": c.max_num_timeout}
    python: Optional[str] = c.container.python
    if python:
        init["python"] = python
    params: dict[str, Any] = {
        "job_name": job_name, "partition": c.partition, "account": c.account, "qos": c.qos,
        "nodes": c.nodes, "ntasks_per_node": tasks_per_node(cfg),
        "cpus_per_task": c.cpus_per_task, "gpus_per_node": c.gpus_per_node or None,
        "mem": c.mem, "time": c.time_limit_min, "constraint": _constraint(cfg),
        "exclusive": exclusive(cfg) or None,
        "array_parallelism": c.array_parallelism, "signal_delay_s": c.signal_delay_s,
        "additional_parameters": OmegaConf.to_container(c.sbatch, resolve=True) or None,
        "srun_args": [*container_srun_args(c.container), *c.srun] or None,
        "setup": list(c.setup) or None,
    }
    return SlurmRequest(init, {k: v for k, v in params.items() if v is not None})


def exclusive(cfg: DictConfig) -> bool:
    """Nodes to itself: asked (cluster.exclusive), or by default when a job spans nodes (its
    links are measured, and on an emulated cluster shaped: a job beside it would share both)."""
    c = cfg.cluster
    return bool(c.exclusive) if c.exclusive is not None else c.nodes > 1


def _constraint(cfg: DictConfig) -> Optional[str]:
    """cluster.constraint, and the emulated_fabric feature when the job shapes its links."""
    parts = [p for p in (cfg.cluster.constraint,
                         "emulated_fabric" if cfg.fabric.gbps is not None else None) if p]
    return "&".join(parts) or None


def validate_cluster(cfg: Any) -> None:
    """The ``cluster`` group before launch, what can be checked without asking Slurm
    (pinchpoint.cluster.preflight asks sinfo; runner/validation.py calls this)."""
    if getattr(cfg.cluster, "name", None) != "slurm":
        return
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
