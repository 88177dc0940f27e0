"""Check what every point asks Slurm for against what the cluster has (sinfo), before submitting.

Refusals are ConfigErrors naming the field to change, e.g.
``cluster.nodes=4 is not allowed: at most 1 (partition debug has 1 node)``. Reading the cluster
is one sinfo call for the whole sweep; the checks themselves are arithmetic (unit-tested on sinfo
text, no cluster needed).
"""
from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from typing import Optional

from omegaconf import DictConfig

from pinchpoint.cluster.commands import slurm_output
from pinchpoint.cluster.request import mem_mb, tasks_per_node
from pinchpoint.errors import ConfigError

SINFO_FORMAT = "%P|%a|%l|%n|%c|%m|%G|%f"   # partition, avail, limit, node, cpus, MB, gres, features
EMULATED_FABRIC = "emulated_fabric"   # the feature of nodes whose links a job may shape


@dataclass
class Partition:
    name: str
    default: bool = False
    up: bool = True
    max_time_min: Optional[int] = None      # None = infinite
    nodes: set = field(default_factory=set)
    cpus: int = 0                           # largest node
    mem_mb: int = 0
    gpus: int = 0
    features: dict = field(default_factory=dict)   # node -> its features

    def nodes_with(self, feature: str) -> int:
        return sum(feature in f for f in self.features.values())


@dataclass
class ClusterInfo:
    partitions: dict[str, Partition]
    has_pyxis: bool = False
    qos: Optional[set] = None               # None = unknown (no accounting)
    accounts: Optional[set] = None

    @property
    def default(self) -> Optional[Partition]:
        return next((p for p in self.partitions.values() if p.default), None)


def time_min(text: str) -> Optional[int]:
    """sinfo's time limit ([D-]HH:MM:SS, MM:SS, infinite) in minutes; None = no limit."""
    text = text.strip()
    if text.lower() in ("infinite", "unlimited", "n/a", ""):
        return None
    days, _, rest = text.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    h, m, s = ([0] * (3 - len(parts)) + parts) if len(parts) > 1 else (0, parts[0], 0)
    return (int(days or 0) * 24 + h) * 60 + m + (1 if s else 0)


def gpus(gres: str) -> int:
    """GPUs in a GRES string: gpu:8, gpu:a100:4(S:0-1), gpu:2,nvme:1, (null)."""
    total = 0
    for item in gres.split(","):
        m = re.match(r"gpu(?::[^:(]+)?:(\d+)", item.strip())
        if m:
            total += int(m.group(1))
    return total


def parse_sinfo(text: str) -> dict[str, Partition]:
    out: dict[str, Partition] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        name, avail, limit, node, cpus, mem, gres, *rest = line.split("|")
        default = name.endswith("*")
        name = name.rstrip("*")
        p = out.setdefault(name, Partition(name, default, avail == "up", time_min(limit)))
        p.nodes.add(node)
        p.cpus = max(p.cpus, int(cpus.rstrip("+")))
        p.mem_mb = max(p.mem_mb, int(re.sub(r"\D", "", mem) or 0))
        p.gpus = max(p.gpus, gpus(gres))
        p.features[node] = set(rest[0].split(",")) - {"(null)", ""} if rest else set()
    return out


def read_cluster() -> ClusterInfo:
    """Ask this machine's Slurm what it has; ConfigError when there is no Slurm to ask."""
    if shutil.which("sinfo") is None:
        raise ConfigError("cluster", "slurm", "a machine with Slurm's client tools (sinfo is not "
                          "on PATH; for a local test cluster run launchers/slurm_up.sh)")
    text = slurm_output(["sinfo", "-h", "-N", "-o", SINFO_FORMAT])
    if text is None:
        raise ConfigError("cluster", "slurm", "a reachable Slurm controller (sinfo failed; is "
                          "SLURM_CONF set, is slurmctld up? scontrol ping)")
    srun_help = slurm_output(["srun", "--help"]) or ""
    names = lambda out: None if out is None else {l.strip() for l in out.splitlines() if l.strip()}
    return ClusterInfo(parse_sinfo(text), "--container-image" in srun_help,
                       names(slurm_output(["sacctmgr", "-nP", "show", "qos", "format=name"])),
                       names(slurm_output(["sacctmgr", "-nP", "show", "account", "format=account"])))


def check(cfg: DictConfig, info: ClusterInfo) -> None:
    """Raise ConfigError naming the first field this cluster cannot satisfy for this point."""
    c = cfg.cluster
    if c.partition is None:
        part = info.default
        if part is None:
            raise ConfigError("cluster.partition", None, "a partition name: this cluster has no "
                              "default (" + ", ".join(sorted(info.partitions)) + ")")
    elif c.partition not in info.partitions:
        raise ConfigError("cluster.partition", c.partition,
                          "one of " + ", ".join(sorted(info.partitions)) + " (sinfo)")
    else:
        part = info.partitions[c.partition]
    if not part.up:
        raise ConfigError("cluster.partition", part.name, "a partition that is up (this one is "
                          "down or inactive in sinfo)")
    if not 1 <= c.nodes <= len(part.nodes):
        raise ConfigError("cluster.nodes", c.nodes, f"1 to {len(part.nodes)} (partition "
                          f"{part.name} has {len(part.nodes)} node(s))")
    per_node = tasks_per_node(cfg)
    if per_node * c.cpus_per_task > part.cpus:
        raise ConfigError("cluster.cpus_per_task", c.cpus_per_task,
                          f"at most {part.cpus // per_node}: {per_node} task(s) per node x "
                          f"cpus_per_task must fit the {part.cpus} CPUs of a {part.name} node")
    if c.gpus_per_node > part.gpus:
        raise ConfigError("cluster.gpus_per_node", c.gpus_per_node,
                          f"at most {part.gpus} (GPUs per node in partition {part.name})")
    if c.mem is not None and mem_mb(c.mem) > part.mem_mb:
        raise ConfigError("cluster.mem", c.mem, f"at most {part.mem_mb}M (memory of a "
                          f"{part.name} node)")
    if c.time_limit_min < 1:
        raise ConfigError("cluster.time_limit_min", c.time_limit_min, "at least 1 minute")
    if part.max_time_min is not None and c.time_limit_min > part.max_time_min:
        raise ConfigError("cluster.time_limit_min", c.time_limit_min,
                          f"at most {part.max_time_min} (partition {part.name}'s MaxTime)")
    if c.qos is not None and info.qos is not None and c.qos not in info.qos:
        raise ConfigError("cluster.qos", c.qos, "one of " + ", ".join(sorted(info.qos)))
    if c.account is not None and info.accounts is not None and c.account not in info.accounts:
        raise ConfigError("cluster.account", c.account,
                          "one of " + ", ".join(sorted(info.accounts)))
    if c.container.image and not info.has_pyxis:
        raise ConfigError("cluster.container.image", c.container.image,
                          "null on this cluster (srun has no --container-image: pyxis is not "
                          "installed)")
    check_fabric(cfg, part)
    if c.gpus_per_node == 0 and cfg.train.device == "cuda":
        raise ConfigError("cluster.gpus_per_node", 0, "at least 1 when train.device=cuda")


def check_fabric(cfg: DictConfig, part: Partition) -> None:
    """An emulated fabric (fabric.gbps) shapes node links: only nodes that allow it (feature
    emulated_fabric, launchers/slurm_up.sh --nodes N) can run it, enough of them."""
    gbps = cfg.fabric.gbps
    if gbps is None:
        return
    able = part.nodes_with(EMULATED_FABRIC)
    if able < cfg.cluster.nodes:
        raise ConfigError("fabric.gbps", gbps,
                          f"null (fabric=none) on this cluster: shaping the links needs "
                          f"{cfg.cluster.nodes} nodes with the Slurm feature {EMULATED_FABRIC} "
                          f"and partition {part.name} has {able} (an emulated cluster: "
                          "launchers/slurm_up.sh --nodes N)")
