"""One definition of the parallel degrees, checked once (after torchtitan's ParallelDims).

    dp_replicate x dp_shard x cp x tp x pp = world_size

``dp_replicate`` replicates the model (DDP, or HSDP's outer dimension), ``dp_shard`` shards it
(FSDP2, or HSDP's inner dimension), ``cp`` splits the sequence, ``tp`` splits layers, ``pp``
splits the stack into stages. ``ep`` is not a factor of the world size: it is the degree over
which the *sparse* part is sharded (DLRM's embedding tables, a MoE's experts), and it borrows
its ranks from the non-pipeline ranks (it must divide world_size / pp). ``world_size`` is
derived from the degrees unless given; a given world size with ``dp_shard=-1`` lets the
shard degree fill what the other degrees leave.

Given the number of nodes, the degrees are also placed on them (``parallel.placement``, see
``parallel.placement``): which dimension stays inside a node and which crosses, checked here
once too, and the world mesh is built from that placement's rank grid.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from pinchpoint.errors import ConfigError
from pinchpoint.parallel.placement import Placement, placement_of

FACTORS = ("dp_replicate", "dp_shard", "cp", "tp", "pp")
MESH_DIMS = ("pp", "dp_replicate", "dp_shard", "cp", "tp")   # outermost (slowest links) first


@dataclass(frozen=True)
class ParallelDims:
    dp_replicate: int = 1
    dp_shard: int = 1
    cp: int = 1
    tp: int = 1
    pp: int = 1
    ep: int = 1
    world_size: int = 1
    nodes: Optional[int] = None     # None: not known here (nothing about nodes is checked)
    placement: tuple = ()           # (dim, inside|auto|across) pairs given in the config

    # --- construction: the one place the degrees are checked ---------------------------------
    @classmethod
    def from_config(cls, parallel: Any, prefix: str = "parallel",
                    nodes: Optional[int] = None) -> "ParallelDims":
        """From the ``parallel`` config group (typed object or DictConfig); raises ConfigError
        naming the field when the degrees do not multiply to the world size, or (``nodes``
        given) when the placement does not fit the nodes."""
        get = (lambda k, d: parallel.get(k, d)) if hasattr(parallel, "get") else \
            (lambda k, d: getattr(parallel, k, d))
        degrees = {k: get(k, 1) for k in (*FACTORS, "ep")}
        for key, value in degrees.items():
            if key == "dp_shard" and value == -1:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{prefix}.{key}", value, "a positive integer"
                                  + (" (or -1: what the other degrees leave of "
                                     f"{prefix}.world_size)" if key == "dp_shard" else ""))
        world = get("world_size", None)
        others = degrees["dp_replicate"] * degrees["cp"] * degrees["tp"] * degrees["pp"]
        if degrees["dp_shard"] == -1:
            if not isinstance(world, int) or world < 1:
                raise ConfigError(f"{prefix}.world_size", world, "a positive integer when "
                                  f"{prefix}.dp_shard=-1 (the shard degree is what is left)")
            if world % others:
                raise ConfigError(f"{prefix}.world_size", world, f"a multiple of dp_replicate x"
                                  f" cp x tp x pp = {others} (dp_shard=-1 fills the rest)")
            degrees["dp_shard"] = world // others
        product = others * degrees["dp_shard"]
        if world is None:
            world = product
        elif not isinstance(world, int) or isinstance(world, bool) or world < 1:
            raise ConfigError(f"{prefix}.world_size", world, "a positive integer, or null to "
                              "derive it from the degrees")
        elif world != product:
            shown = " x ".join(f"{k}={degrees[k]}" for k in FACTORS)
            raise ConfigError(f"{prefix}.world_size", world,
                              f"the product of the degrees, {shown} = {product} (leave "
                              f"{prefix}.world_size unset to derive it, or change a degree)")
        dims = cls(world_size=world, nodes=nodes,
                   placement=tuple(sorted(placement_of(parallel).items())), **degrees)
        dims._check_ep(prefix)
        if nodes is not None:
            dims.layout().check(prefix)
        return dims

    def _check_ep(self, prefix: str) -> None:
        non_pipeline = self.world_size // self.pp
        if non_pipeline % self.ep:
            divisors = [d for d in range(1, non_pipeline + 1) if non_pipeline % d == 0]
            raise ConfigError(f"{prefix}.ep", self.ep,
                              f"a divisor of world_size / pp = {non_pipeline} (expert/embedding "
                              f"parallelism borrows the non-pipeline ranks): one of "
                              + ", ".join(map(str, divisors)))

    # --- derived degrees -----------------------------------------------------------------------
    @property
    def dp(self) -> int:
        """Data-parallel replicas of the batch (replicate x shard)."""
        return self.dp_replicate * self.dp_shard

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def degrees(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in (*FACTORS, "ep")}

    def describe(self) -> str:
        """Short layout name from the degrees above 1, e.g. 'fsdp2 tp2' or 'single'."""
        names = {"dp_replicate": "ddp", "dp_shard": "fsdp", "cp": "cp", "tp": "tp", "pp": "pp",
                 "ep": "ep"}
        if self.dp_replicate > 1 and self.dp_shard > 1:
            parts = [f"hsdp{self.dp_replicate}x{self.dp_shard}"]
            keys = ("cp", "tp", "pp", "ep")
        elif self.ep > 1 and self.dp_replicate == self.ep and self.dp_shard == 1:
            parts, keys = [], ("cp", "tp", "pp", "ep")   # 'ep8': the dense part is DDP over it
        else:
            parts, keys = [], ("dp_replicate", "dp_shard", "cp", "tp", "pp", "ep")
        parts += [f"{names[k]}{getattr(self, k)}" for k in keys if getattr(self, k) > 1]
        return " ".join(parts) or "single"

    def layout(self) -> Placement:
        """Where each dimension runs: inside a node or across nodes (one node when unknown)."""
        return Placement({d: getattr(self, d) for d in FACTORS}, self.ep, self.nodes or 1,
                         dict(self.placement))

    # --- runtime -------------------------------------------------------------------------------
    def mesh_dims(self) -> tuple[str, ...]:
        """The mesh dims a layout needs, in MESH_DIMS order: those above 1, plus dp_shard
        whenever dp_replicate is (FSDP2 replicates over the outer dim of a 2-D mesh)."""
        return tuple(d for d in MESH_DIMS if getattr(self, d) > 1
                     or (d == "dp_shard" and self.dp_replicate > 1))

    def build_mesh(self, device_type: str):
        """The world DeviceMesh over mesh_dims() (None for one process), its ranks laid out by
        the placement. Needs torch.distributed initialised. Size-1 dims are left out (each
        would cost a process group per rank); ``local_rank(mesh, dim)`` reads 0 for them."""
        names = self.mesh_dims()
        if not names:
            return None
        import torch
        from torch.distributed.device_mesh import DeviceMesh
        grid = self.layout().grid
        shape = tuple(getattr(self, d) for d in names)
        return DeviceMesh(device_type, torch.as_tensor(grid.reshape(shape)),
                          mesh_dim_names=names)

    def dp_rank(self, mesh) -> int:
        """This rank's data-parallel replica index (which share of the batch it reads)."""
        return local_rank(mesh, "dp_replicate") * self.dp_shard + local_rank(mesh, "dp_shard")


def local_rank(mesh, dim: str) -> int:
    """This rank's coordinate along ``dim`` (0 for a dim the mesh leaves out)."""
    if mesh is None or dim not in (mesh.mesh_dim_names or ()):
        return 0
    return mesh[dim].get_local_rank()
