"""Collectives on a two-level network: GPUs inside one NVLink domain talk over NVLink at
``intra_node_gb_per_s`` each way; groups that leave the domain cross the NICs, one per GPU.

Ranks are laid out as the device mesh orders them (tp innermost, then cp, dp_shard,
dp_replicate, pp outermost; parallel/dims.py MESH_DIMS), so a group of ``size`` ranks that
are ``stride`` apart keeps ``inside`` members per domain and spans ``outside`` domains.
Hierarchical algorithms (NCCL's NVLS/tree and ring per level): a reduce-scatter first reduces
inside the domain, then each GPU reduces its 1/inside shard across domains over its own NIC,
so the NIC carries buffer/inside bytes, not the whole buffer.
Volumes are bytes per GPU; ``nbytes`` is the full (unsharded) buffer of one rank.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional

from pinchpoint.errors import ConfigError
from pinchpoint.plan.hardware import System

# NCCL launches two CTAs per NVLink to saturate it with large messages (NCCL maintainers,
# NVIDIA/nccl#1703), so each CTA moves about half a link's bandwidth.
CTAS_PER_LINK = 2
COMMUNICATORS = ("dp", "tp", "cp", "pp")

# Per-step software latency of one collective hop (NCCL launch + synchronisation), a typical
# NCCL figure (nccl-tests small-message latency: a few microseconds on NVLink, ~10 over IB).
NVLINK_HOP_S = 3e-6
NIC_HOP_S = 10e-6


@dataclass(frozen=True)
class Span:
    size: int
    inside: int     # members of the group inside one NVLink domain
    outside: int    # domains the group spans


def span(size: int, stride: int, domain: int) -> Span:
    """How a group of ``size`` ranks ``stride`` apart sits on domains of ``domain`` GPUs."""
    if size <= 1:
        return Span(1, 1, 1)
    fit = max(1, domain // stride) if stride < domain else 1
    inside = 1
    for d in range(min(size, fit), 0, -1):   # the largest divisor of size that fits
        if size % d == 0:
            inside = d
            break
    return Span(size, inside, size // inside)


def reduce_scatter_s(nbytes: float, s: Span, system: System) -> float:
    """Reduce-scatter (or all-gather: the same volume) of an ``nbytes`` buffer per rank."""
    if s.size <= 1 or nbytes <= 0:
        return 0.0
    t = (s.inside - 1) / s.inside * nbytes / system.nvlink_bytes_per_s if s.inside > 1 else 0.0
    if s.outside > 1:
        t += (s.outside - 1) / s.outside * nbytes / s.inside / system.nic_bytes_per_s
    return t + latency_s(s)


all_gather_s = reduce_scatter_s


def all_reduce_s(nbytes: float, s: Span, system: System) -> float:
    """Reduce-scatter then all-gather (ring / hierarchical all-reduce)."""
    return 2 * reduce_scatter_s(nbytes, s, system)


def all_to_all_s(nbytes: float, s: Span, system: System) -> float:
    """Each rank keeps 1/size of its buffer and sends the rest, 1/size to each peer: peers in
    the domain over NVLink, the others over the NIC, concurrently."""
    if s.size <= 1 or nbytes <= 0:
        return 0.0
    near = (s.inside - 1) / s.size * nbytes / system.nvlink_bytes_per_s
    far = (s.size - s.inside) / s.size * nbytes / system.nic_bytes_per_s
    return max(near, far) + latency_s(s)


def send_recv_s(nbytes: float, crosses_domain: bool, system: System) -> float:
    """Point-to-point (pipeline stages): one link, NVLink or the NIC."""
    if nbytes <= 0:
        return 0.0
    bw = system.nic_bytes_per_s if crosses_domain else system.nvlink_bytes_per_s
    return nbytes / bw + (NIC_HOP_S if crosses_domain else NVLINK_HOP_S)


def latency_s(s: Span) -> float:
    """Hop latency per level: the fewer of a ring's n - 1 steps and a tree's 2 log2 n (NCCL
    picks the latency-optimal algorithm for small messages)."""
    return steps(s.inside) * NVLINK_HOP_S + steps(s.outside) * NIC_HOP_S


def steps(n: int) -> int:
    return min(n - 1, 2 * math.ceil(math.log2(n))) if n > 1 else 0


def capped(system: System, max_ctas: Optional[dict], communicator: str) -> System:
    """The system as a communicator limited to ``max_ctas[communicator]`` CTAs sees it: with
    fewer than two CTAs per link NCCL drives ctas / (2 x links) of the NVLink bandwidth (NeMo's
    MLPerf recipes cap dp and tp at 8 CTAs, cp at 1: on an 18-link H100 that is 100 and 12.5 of
    450 GB/s). The NIC side is not capped: a CTA per NIC drives it."""
    max_ctas = max_ctas or {}
    if set(max_ctas) - set(COMMUNICATORS) or \
            any(v is not None and (not isinstance(v, int) or v < 1) for v in max_ctas.values()):
        raise ConfigError("plan.nccl_max_ctas", dict(max_ctas), "CTAs >= 1 (or null: "
                          f"uncapped) per communicator, keys among {', '.join(COMMUNICATORS)}")
    ctas = max_ctas.get(communicator)
    if ctas is None:
        return system
    if not system.nvlink_links:
        raise ConfigError("gpu.nvlink_links", system.nvlink_links,
                          "the NVLink links per GPU (18 on H100/H200/B200/GB200) to cap "
                          "plan.nccl_max_ctas by")
    share = min(1.0, ctas / (CTAS_PER_LINK * system.nvlink_links))
    return dataclasses.replace(system, intra_node_gb_per_s=system.intra_node_gb_per_s * share)
