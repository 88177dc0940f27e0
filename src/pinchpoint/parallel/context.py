"""Where this process sits in the run: rank, world size, device, process group."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class RankContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str = "none"      # none (single process) | gloo | nccl
    launcher: str = "in_process"  # in_process | spawn | submitit | torchrun

    @property
    def is_main(self) -> bool:
        return self.rank == 0

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
