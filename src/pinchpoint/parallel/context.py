"""Where this process sits in the run: rank, world size, device, process group."""
from __future__ import annotations

import socket
from dataclasses import dataclass, field

import torch


@dataclass
class RankContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str = "none"      # none (single process) | gloo | nccl
    launcher: str = "in_process"  # in_process | spawn | submitit | torchrun
    hosts: tuple = field(default_factory=lambda: (socket.gethostname(),))  # rank -> host name

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def node_list(self) -> list[str]:
        """The run's hosts, each once, in rank order."""
        return list(dict.fromkeys(self.hosts))

    @property
    def nodes(self) -> int:
        return len(self.node_list)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def pick_device(requested: str, local_rank: int = 0) -> torch.device:
    """'auto' takes the local GPU when CUDA is present, else the CPU."""
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
    return torch.device("cpu")


def pick_backend(requested: str, device: torch.device) -> str:
    """'auto' is NCCL on a GPU, gloo on the CPU."""
    return requested if requested != "auto" else ("nccl" if device.type == "cuda" else "gloo")


def init_process_group(backend_requested: str, device_requested: str, threads: int,
                       launcher: str) -> RankContext:
    """Join the process group described by the env:// variables (RANK, WORLD_SIZE, MASTER_*)."""
    import os
    from datetime import timedelta

    import torch.distributed as dist
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = pick_device(device_requested, local_rank)
    backend = pick_backend(backend_requested, device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # Ranks sharing a node split its cores: oversubscribed intra-op threads make gloo ranks
    # spin against each other (measured: 20x slower on 2 cores with 2 ranks x 2 threads).
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    torch.set_num_threads(threads or max(1, (os.cpu_count() or 1) // local_world))
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world,
                                timeout=timedelta(seconds=600))
    # Which rank runs on which node: the placement, the traffic split and the MLflow node list
    # read it (ranks are numbered node by node: Slurm's block distribution, torchrun's).
    hosts: list = [None] * world
    dist.all_gather_object(hosts, socket.gethostname())
    return RankContext(rank, world, local_rank, device, backend, launcher, tuple(hosts))


def shutdown() -> None:
    """Leave the process group (every rank, before its process exits: a group destroyed by
    the interpreter's teardown instead can abort in gloo's threads). Garbage is collected
    first: FSDP/pipeline modules hold groups in reference cycles, and a group that outlives
    ``destroy_process_group`` is torn down at interpreter exit, where gloo's worker threads
    abort the process ("terminate called without an active exception")."""
    import gc

    import torch.distributed as dist
    if dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
        gc.collect()
