"""DDP with its gradient all-reduce going through the run's collective profile (so its calls,
bytes and seconds are counted in the communication phase)."""
from __future__ import annotations

import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pinchpoint.parallel.collectives import CollectiveProfile, ddp_comm_hook


def wrap_ddp(module: nn.Module, profile: CollectiveProfile) -> DistributedDataParallel:
    ddp = DistributedDataParallel(module)
    ddp.register_comm_hook(dist.get_world_size(), ddp_comm_hook(profile))
    return ddp
