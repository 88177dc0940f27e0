"""Collectives on a two-level network: GPUs inside one NVLink domain talk over NVLink at
``intra_node_gb_per_s`` each way; groups that leave the domain cross the NICs, one per GPU.

Ranks are laid out as the device mesh orders them (tp innermost, then cp, dp_shard,
dp_replicate, pp outermost; parallel/dims.py MESH_DIMS), so a group of ``size`` ranks that
are ``stride`` apart keeps ``inside`` members per domain and spans ``outside`` domains.
Hierarchical algorithms (NCCL's NVLS/tree and ring per level): a reduce-scatter first reduces
inside the domain, then each GPU reduces its 1/inside shard across domains over its own NIC,
so the NIC carries buffer/inside bytes, not the whole buffer.
Volumes are bytes per GPU; ``nbytes`` is the full (unsharded) buffer of one rank.

Two inputs of the System say how the bytes reach the wire (defaults: NCCL on a NIC per GPU):
- ``gpus_per_nic``: ranks whose inter-node traffic shares one NIC; what each sends across adds
  up on it (an emulated node has one link for all its ranks).
- ``collectives="gloo"``: gloo's flat algorithms over the group's rank order (the per-rank
  bytes are parallel/traffic.py's, checked there against the links' counters): a ring for
  all-reduce (2(n-1)/n S per rank) and all-gather ((n-1)/n S), reduce-scatter as a whole
  all-reduce, a direct all-to-all. Ranks are numbered domain by domain, so a ring leaves a
  domain once: one edge per group crosses, beside the other groups' crossing edges behind
  the same NIC, and the slowest edge paces the ring. Each of the ring's 2(n-1) (n-1) steps
  costs a hop; hops are ``System.intra_node_hop_s`` / ``inter_node_hop_s`` where measured.
"""
from __future__ import annotations

import dataclasses
import math
from collections import Counter
from dataclasses import dataclass
from typing import Optional, Sequence

from pinchpoint.errors import ConfigError
from pinchpoint.plan.hardware import System

# NCCL launches two CTAs per NVLink to saturate it with large messages (NCCL maintainers,
# NVIDIA/nccl#1703), so each CTA moves about half a link's bandwidth.
CTAS_PER_LINK = 2
COMMUNICATORS = ("dp", "tp", "cp", "pp")
GLOBAL = "all"   # plan.nccl_max_ctas key of a cap on every communicator (NCCL_MAX_CTAS)
ALGORITHMS = ("nccl", "gloo")

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


def group_span(ranks: Sequence[int], ranks_per_domain: int) -> Span:
    """The span of an explicit group of global ranks (parallel/placement.py's groups, where
    a placement puts a dimension across nodes that the mesh order would keep inside)."""
    domains = Counter(r // ranks_per_domain for r in ranks)
    return Span(len(ranks), max(domains.values()), len(domains))


def reduce_scatter_s(nbytes: float, s: Span, system: System) -> float:
    """Reduce-scatter (NCCL: or all-gather, the same volume) of an ``nbytes`` buffer per rank."""
    if s.size <= 1 or nbytes <= 0:
        return 0.0
    if _flat(system):   # gloo reduce-scatters by all-reducing the whole buffer
        return ring_s(2 * (s.size - 1) / s.size * nbytes, 2 * (s.size - 1), s, system)
    t = (s.inside - 1) / s.inside * nbytes / system.nvlink_bytes_per_s if s.inside > 1 else 0.0
    if s.outside > 1:   # every rank behind a NIC sends its 1/inside shard through it
        t += (s.outside - 1) / s.outside * nbytes / s.inside / system.nic_bytes_per_s * \
            system.gpus_per_nic
    return t + latency_s(s, system)


def all_gather_s(nbytes: float, s: Span, system: System) -> float:
    """All-gather into an ``nbytes`` buffer per rank."""
    if _flat(system) and s.size > 1 and nbytes > 0:
        return ring_s((s.size - 1) / s.size * nbytes, s.size - 1, s, system)
    return reduce_scatter_s(nbytes, s, system)


def all_reduce_s(nbytes: float, s: Span, system: System) -> float:
    """Reduce-scatter then all-gather (ring / hierarchical all-reduce)."""
    if _flat(system) and s.size > 1 and nbytes > 0:
        return ring_s(2 * (s.size - 1) / s.size * nbytes, 2 * (s.size - 1), s, system)
    return 2 * reduce_scatter_s(nbytes, s, system)


def all_to_all_s(nbytes: float, s: Span, system: System) -> float:
    """Each rank keeps 1/size of its buffer and sends the rest, 1/size to each peer: peers in
    the domain over NVLink, the others over the NIC (with the far shares of every rank behind
    it), concurrently."""
    if s.size <= 1 or nbytes <= 0:
        return 0.0
    near = (s.inside - 1) / s.size * nbytes / system.nvlink_bytes_per_s
    far = (s.size - s.inside) / s.size * nbytes / system.nic_bytes_per_s * system.gpus_per_nic
    hops = _hop_s(s, system) if _flat(system) else latency_s(s, system)   # gloo: one round
    return max(near, far) + hops


def collective_s(kind: str, nbytes: float, s: Span, system: System) -> float:
    """One collective by kind name (parallel/traffic.py's): all_gather, reduce_scatter,
    all_reduce, all_to_all."""
    return {"all_gather": all_gather_s, "reduce_scatter": reduce_scatter_s,
            "all_reduce": all_reduce_s, "all_to_all": all_to_all_s}[kind](nbytes, s, system)


def states_wire(system) -> bool:
    """Whether a System says how bytes reach the wire (a shared NIC or gloo's algorithms),
    for planners that otherwise time bytes on per-level rates alone (plan/moe.py)."""
    return getattr(system, "collectives", "nccl") != "nccl" or \
        getattr(system, "gpus_per_nic", 1) > 1


def ring_s(sent: float, steps: int, s: Span, system: System) -> float:
    """A flat ring over the group in rank order, each rank sending ``sent`` bytes to its
    successor in ``steps`` steps: the edges inside a domain at the intra-node rate, the one
    leaving each domain sharing its NIC with the crossing edges of the other groups behind it
    (gpus_per_nic / inside of them, at least itself); the slowest edge paces the ring."""
    t = sent / system.nvlink_bytes_per_s if s.inside > 1 else 0.0
    if s.outside > 1:
        sharing = max(1, system.gpus_per_nic // s.inside)
        t = max(t, sent * sharing / system.nic_bytes_per_s)
    return t + steps * _hop_s(s, system)


def send_recv_s(nbytes: float, crosses_domain: bool, system: System) -> float:
    """Point-to-point (pipeline stages): one link, NVLink or the NIC."""
    if nbytes <= 0:
        return 0.0
    bw = system.nic_bytes_per_s if crosses_domain else system.nvlink_bytes_per_s
    return nbytes / bw + (NIC_HOP_S if crosses_domain else NVLINK_HOP_S)


def latency_s(s: Span, system: Optional[System] = None) -> float:
    """Hop latency per level: the fewer of a ring's n - 1 steps and a tree's 2 log2 n (NCCL
    picks the latency-optimal algorithm for small messages)."""
    nvlink, nic = _hops(system)
    return steps(s.inside) * nvlink + steps(s.outside) * nic


def _hops(system: Optional[System]) -> tuple[float, float]:
    """(intra-node, inter-node) seconds per hop: the system's measured ones, else NCCL's."""
    intra = getattr(system, "intra_node_hop_s", None)
    inter = getattr(system, "inter_node_hop_s", None)
    return (NVLINK_HOP_S if intra is None else intra, NIC_HOP_S if inter is None else inter)


def _hop_s(s: Span, system: System) -> float:
    """One step of a flat algorithm: it waits for its slowest edge's hop."""
    nvlink, nic = _hops(system)
    return nic if s.outside > 1 else nvlink


def _flat(system: System) -> bool:
    algorithms = getattr(system, "collectives", "nccl")
    if algorithms not in ALGORITHMS:
        raise ConfigError("gpu.collectives", algorithms, " or ".join(ALGORITHMS))
    return algorithms == "gloo"


def steps(n: int) -> int:
    return min(n - 1, 2 * math.ceil(math.log2(n))) if n > 1 else 0


def capped(system: System, max_ctas: Optional[dict], communicator: str) -> System:
    """The system as a communicator limited to ``max_ctas[communicator]`` CTAs sees it: with
    fewer than two CTAs per link NCCL drives ctas / (2 x links) of the NVLink bandwidth (NeMo's
    MLPerf recipes cap dp and tp at 8 CTAs, cp at 1: on an 18-link H100 that is 100 and 12.5 of
    450 GB/s). The NIC side is not capped: a CTA per NIC drives it."""
    max_ctas = max_ctas or {}
    if set(max_ctas) - set(COMMUNICATORS) - {GLOBAL} or \
            any(v is not None and (not isinstance(v, int) or v < 1) for v in max_ctas.values()):
        raise ConfigError("plan.nccl_max_ctas", dict(max_ctas), "CTAs >= 1 (or null: "
                          f"uncapped) per communicator, keys among {', '.join(COMMUNICATORS)} "
                          f"and '{GLOBAL}' (NCCL_MAX_CTAS: every communicator)")
    caps = [c for c in (max_ctas.get(communicator), max_ctas.get(GLOBAL)) if c is not None]
    ctas = min(caps) if caps else None
    if ctas is None or _flat(system):   # CTAs are NCCL's; gloo's collectives have none
        return system
    if not system.nvlink_links:
        raise ConfigError("gpu.nvlink_links", system.nvlink_links,
                          "the NVLink links per GPU (18 on H100/H200/B200/GB200) to cap "
                          "plan.nccl_max_ctas by")
    share = min(1.0, ctas / (CTAS_PER_LINK * system.nvlink_links))
    return dataclasses.replace(system, intra_node_gb_per_s=system.intra_node_gb_per_s * share)
