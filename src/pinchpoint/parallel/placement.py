"""Which parallel dimension stays inside a node and which crosses the node boundary.

Ranks are numbered node by node (Slurm's block distribution, torchrun's node rank): ranks
``k*R .. k*R+R-1`` run on node ``k`` for ``R`` ranks per node. The world mesh is a grid of
ranks over (pp, dp_replicate, dp_shard, cp, tp); which ranks share a row of the grid along a
dimension decides whether that dimension's collectives stay on the node's own links (loopback,
NVLink) or cross its NIC. The grid is laid out innermost dimension first:

    1. dimensions placed ``inside`` (default: tp, cp): must fit in a node, else refused;
    2. dimensions placed ``auto`` (default: dp_shard, then dp_replicate, then pp): inside a node
       while they fit, the rest crossing nodes, so HSDP shards inside a node and replicates
       across, and pipeline stages are the first to be split over nodes;
    3. dimensions placed ``across`` (a user's choice, to measure why one does not): outermost,
       so their groups span nodes.

``ep`` borrows data-parallel ranks: its groups are consecutive data-parallel ranks (inside a
node while they fit) or, placed ``across``, every (dp/ep)-th one. With the default placement
the grid is the plain row-major one (init_device_mesh's): nothing changes for one node.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from pinchpoint.errors import ConfigError

GRID_DIMS = ("pp", "dp_replicate", "dp_shard", "cp", "tp")   # the mesh's axis order
INNER_FIRST = ("tp", "cp", "dp_shard", "dp_replicate", "pp")  # who stays inside, by default
PLACEMENTS = ("inside", "auto", "across")
DEFAULT = {"tp": "inside", "cp": "inside", "dp_shard": "auto", "dp_replicate": "auto",
           "pp": "auto", "ep": "auto"}


def rank_grid(sizes: Mapping[str, int], placement: Mapping[str, str]) -> np.ndarray:
    """Global ranks as an array over GRID_DIMS, laid out by ``placement``."""
    rank = {p: i for i, p in enumerate(PLACEMENTS)}
    inner_first = sorted(INNER_FIRST, key=lambda d: (rank[placement.get(d, DEFAULT[d])],
                                                     INNER_FIRST.index(d)))
    outer_first = inner_first[::-1]
    world = int(np.prod([sizes[d] for d in GRID_DIMS]))
    grid = np.arange(world).reshape([sizes[d] for d in outer_first])
    return grid.transpose([outer_first.index(d) for d in GRID_DIMS])


def dim_groups(grid: np.ndarray, dim: str) -> list[list[int]]:
    """The rank groups of one grid dimension (each a fibre along that axis)."""
    axis = GRID_DIMS.index(dim)
    return np.moveaxis(grid, axis, -1).reshape(-1, grid.shape[axis]).tolist()


def dp_rows(grid: np.ndarray) -> list[list[int]]:
    """Each (pp, cp, tp) coordinate's data-parallel ranks in dp order (replicate-major)."""
    dp = grid.shape[1] * grid.shape[2]
    return grid.transpose(0, 3, 4, 1, 2).reshape(-1, dp).tolist()


def ep_groups(row: Sequence[int], ep: int, placement: str) -> list[list[int]]:
    """A data-parallel row cut into its expert-parallel groups: ``ep`` consecutive ranks, or
    (placed ``across``) every (dp/ep)-th rank."""
    row = list(row)
    if placement == "across":
        stride = len(row) // ep
        return [row[i::stride] for i in range(stride)]
    return [row[i:i + ep] for i in range(0, len(row), ep)]


def nodes_spanned(groups: Sequence[Sequence[int]], ranks_per_node: int) -> int:
    """The most nodes any one group spans."""
    return max((len({r // ranks_per_node for r in g}) for g in groups), default=1)


class Placement:
    """The grid of one layout on ``nodes`` nodes, and what crosses the node boundary."""

    def __init__(self, sizes: Mapping[str, int], ep: int, nodes: int,
                 placement: Mapping[str, str]):
        self.sizes, self.ep, self.nodes = dict(sizes), ep, nodes
        self.placement = {**DEFAULT, **placement}
        for dim, value in self.placement.items():
            if value not in PLACEMENTS:
                raise ConfigError(f"parallel.placement.{dim}", value, ", ".join(PLACEMENTS))
        self.world = int(np.prod([self.sizes[d] for d in GRID_DIMS]))
        self.ranks_per_node = self.world // nodes
        self.grid = rank_grid(self.sizes, self.placement)

    def groups(self, dim: str) -> list[list[int]]:
        if dim == "ep":
            return [g for row in dp_rows(self.grid)
                    for g in ep_groups(row, self.ep, self.placement["ep"])]
        return dim_groups(self.grid, dim)

    def size(self, dim: str) -> int:
        return self.ep if dim == "ep" else self.sizes[dim]

    def spans(self) -> dict[str, int]:
        """Nodes spanned by each dimension above 1 (1 = inside a node). Counted on the grid as
        arrays: a full-scale plan checks layouts of tens of thousands of ranks per point."""
        return {d: self._span(d) for d in (*INNER_FIRST, "ep") if self.size(d) > 1}

    def _span(self, dim: str) -> int:
        """``nodes_spanned(self.groups(dim), ...)`` without the lists."""
        if self.nodes == 1:
            return 1
        if dim == "ep":
            rows = self.grid.transpose(0, 3, 4, 1, 2).reshape(-1, self.grid.shape[1] *
                                                              self.grid.shape[2])
            if self.placement["ep"] == "across":   # every (dp/ep)-th rank of a dp row
                groups = rows.reshape(rows.shape[0], self.ep, -1).transpose(0, 2, 1)
            else:                                  # ep consecutive ranks of a dp row
                groups = rows.reshape(rows.shape[0], -1, self.ep)
            groups = groups.reshape(-1, self.ep)
        else:
            axis = GRID_DIMS.index(dim)
            groups = np.moveaxis(self.grid, axis, -1).reshape(-1, self.grid.shape[axis])
        node = np.sort(groups // self.ranks_per_node, axis=1)
        return int((1 + (np.diff(node, axis=1) != 0).sum(axis=1)).max(initial=1))

    def check(self, prefix: str = "parallel") -> None:
        """Refuse a dimension placed ``inside`` that cannot stay in a node, and one placed
        ``across`` that cannot cross (one node, or a size-1 dimension)."""
        if self.world % self.nodes:
            raise ConfigError("cluster.nodes", self.nodes,
                              f"a divisor of {prefix}.world_size={self.world}")
        spans = self.spans()
        for dim, value in self.placement.items():
            n = spans.get(dim, 1)
            if value == "inside" and n > 1:
                raise ConfigError(
                    f"{prefix}.{dim}", self.size(dim),
                    f"at most the {self.ranks_per_node} ranks of one node (cluster.nodes="
                    f"{self.nodes}) while {prefix}.placement.{dim}=inside: its groups would "
                    f"span {n} nodes; set {prefix}.placement.{dim}=across to cross on purpose")
            if value == "across" and n < 2:
                why = "one node" if self.nodes < 2 else f"{prefix}.{dim}={self.size(dim)}"
                raise ConfigError(f"{prefix}.placement.{dim}", "across",
                                  f"inside or auto: with {why} it cannot cross nodes")

    def describe(self) -> str:
        """E.g. 'inside a node: tp2 dp_shard2; across 2 nodes: dp_replicate2'."""
        spans = self.spans()
        inside = [f"{d}{self.size(d)}" for d, n in spans.items() if n == 1]
        across = [f"{d}{self.size(d)}" for d, n in spans.items() if n > 1]
        if self.nodes < 2:
            return "one node: " + (" ".join(inside) or "single")
        text = f"inside a node: {' '.join(inside) or '-'}; "
        return text + f"across {self.nodes} nodes: {' '.join(across) or '- (nothing crosses)'}"

    def crossing(self) -> list[str]:
        return [d for d, n in self.spans().items() if n > 1]


def placement_of(parallel) -> dict[str, str]:
    """``parallel.placement`` (typed object, DictConfig or absent) as a plain dict."""
    raw: Optional[object] = getattr(parallel, "placement", None)
    if raw is None and hasattr(parallel, "get"):
        raw = parallel.get("placement")
    if raw is None:
        return {}
    if hasattr(raw, "items"):
        return dict(raw.items())
    return {k: getattr(raw, k) for k in DEFAULT if hasattr(raw, k)}
