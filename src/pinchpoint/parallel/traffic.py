"""Where a collective's bytes travel: inside a node or across the node boundary.

For every collective a rank joins, ``Traffic.split`` says how many bytes *this rank sends*
to peers on its own node (loopback, NVLink) and to peers on other nodes (the node's NIC), from
the group's members, the node each rank runs on and the algorithm the backend uses. Summed over
the ranks of a node, the inter-node figure is what the node's link carries (its interface tx
counter), which is how the model is checked (tests/test_multinode.py, benchmarks/fabric_*).

Algorithms, per backend (what each rank sends; S = the bytes this rank hands in, n = group size):

    kind            gloo (CPU)                              nccl (GPU)
    all_reduce      ring: 2(n-1)/n S to its ring successor   ring: the same
    all_gather      ring: (n-1) S to its successor            ring: the same
    reduce_scatter  as an all-reduce of S (measured: gloo     ring: (n-1)/n S to its successor
                    sends 2(n-1)/n S, not (n-1)/n S)
    all_to_all      its split for each peer, to that peer     the same
    broadcast       the root sends S to every other rank      ring pipeline: S to the successor
    send_recv       S to the peer (sends only)                the same
    gather/scatter  S to the root / from the root to each     the same

The ring is the group's rank order (gloo and NCCL both walk it so; with ranks placed node by
node the ring crosses each node boundary once per direction). Measured on the emulated 2-node
cluster (2 ranks per node, 64 MiB): all_reduce 101.1 MB per node's link vs 100.7 MB modelled,
all_gather 50.4 vs 50.3, reduce_scatter 100.9 vs 100.7, all_to_all 67.6 vs 67.1, broadcast
136.1 vs 134.2 (the root's node).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

RING_KINDS = ("all_reduce", "all_gather", "reduce_scatter")


@dataclass(frozen=True)
class Split:
    intra_node: float
    inter_node: float


class NodeMap:
    """The node of every rank of the world (rank -> node index, in order of first appearance
    of each host name)."""

    def __init__(self, hosts: Sequence[str]):
        self.hosts = list(hosts)
        names: dict[str, int] = {}
        self.node_of = [names.setdefault(h, len(names)) for h in self.hosts]
        self.names = list(names)

    @property
    def nodes(self) -> int:
        return len(self.names)

    def ranks_on(self, node: int) -> list[int]:
        return [r for r, n in enumerate(self.node_of) if n == node]

    def crosses(self, ranks: Sequence[int]) -> bool:
        return len({self.node_of[r] for r in ranks}) > 1


class Traffic:
    """The split of each collective this rank joins, by the algorithm of ``backend``."""

    def __init__(self, nodes: NodeMap, rank: int, backend: str = "gloo"):
        self.nodes, self.rank, self.backend = nodes, rank, backend

    def split(self, kind: str, nbytes: int, group: Optional[Sequence[int]] = None,
              splits: Optional[Sequence[int]] = None, peer: Optional[int] = None,
              root: Optional[int] = None) -> Split:
        """Bytes this rank sends inside its node and across nodes for one collective.
        ``group``: global ranks in group order (None = the world); ``splits``: an all-to-all's
        per-peer input sizes (any unit; None = even); ``peer``/``root``: global ranks."""
        ranks = list(group) if group is not None else list(range(len(self.nodes.node_of)))
        me = self.rank
        if me not in ranks or len(ranks) < 2:
            return Split(0.0, 0.0)
        n = len(ranks)
        if kind in RING_KINDS:
            successor = ranks[(ranks.index(me) + 1) % n]
            return self._to(successor, nbytes * self._ring_factor(kind, n))
        if kind == "all_to_all":
            return self._all_to_all(ranks, nbytes, splits)
        if kind == "broadcast":
            return self._broadcast(ranks, nbytes, ranks[0] if root is None else root)
        if kind == "send_recv":
            return self._to(peer, nbytes) if peer is not None else Split(0.0, 0.0)
        if kind in ("gather", "reduce"):
            root = ranks[0] if root is None else root
            return self._to(root, nbytes) if me != root else Split(0.0, 0.0)
        if kind == "scatter":
            root = ranks[0] if root is None else root
            if me != root:
                return Split(0.0, 0.0)
            return self._sum(r for r in ranks if r != me) * (nbytes / n)
        return Split(0.0, 0.0)   # barrier and the like: a few bytes of control traffic

    # --- algorithms ---------------------------------------------------------------------------
    def _ring_factor(self, kind: str, n: int) -> float:
        if kind == "all_gather":
            return n - 1
        if kind == "reduce_scatter" and self.backend == "nccl":
            return (n - 1) / n
        return 2 * (n - 1) / n

    def _all_to_all(self, ranks: list[int], nbytes: int,
                    splits: Optional[Sequence[int]]) -> Split:
        n = len(ranks)
        weights = list(splits) if splits else [1] * n
        total = sum(weights) or 1
        intra = inter = 0.0
        for r, w in zip(ranks, weights):
            if r == self.rank:
                continue
            share = nbytes * w / total
            if self.nodes.node_of[r] == self.nodes.node_of[self.rank]:
                intra += share
            else:
                inter += share
        return Split(intra, inter)

    def _broadcast(self, ranks: list[int], nbytes: int, root: int) -> Split:
        if self.backend == "nccl":   # a ring pipeline from the root
            successor = ranks[(ranks.index(self.rank) + 1) % len(ranks)]
            last = ranks[(ranks.index(root) - 1) % len(ranks)]
            return Split(0.0, 0.0) if self.rank == last else self._to(successor, nbytes)
        if self.rank != root:
            return Split(0.0, 0.0)
        return self._sum(r for r in ranks if r != root) * nbytes

    # --- helpers ---------------------------------------------------------------------------------
    def _to(self, peer: int, nbytes: float) -> Split:
        if peer == self.rank:
            return Split(0.0, 0.0)
        if self.nodes.node_of[peer] == self.nodes.node_of[self.rank]:
            return Split(float(nbytes), 0.0)
        return Split(0.0, float(nbytes))

    def _sum(self, peers) -> "_Count":
        mine = self.nodes.node_of[self.rank]
        intra = inter = 0
        for r in peers:
            if self.nodes.node_of[r] == mine:
                intra += 1
            else:
                inter += 1
        return _Count(intra, inter)


@dataclass(frozen=True)
class _Count:
    intra: int
    inter: int

    def __mul__(self, nbytes: float) -> Split:
        return Split(self.intra * nbytes, self.inter * nbytes)
