"""Pipeline parallelism with torch.distributed.pipelining: layer splits (even or uneven) and the
schedules (GPipe, 1F1B, interleaved 1F1B with virtual stages)."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

SCHEDULES = ("gpipe", "1f1b")


def split_layers(n_layers: int, stages: int, stage: int) -> list[int]:
    """Contiguous layers of ``stage``; when ``stages`` does not divide ``n_layers`` the first
    ``n_layers % stages`` stages take one layer more (e.g. 126 layers on 8 stages: 16 x 6, 15 x 2)."""
    base, extra = divmod(n_layers, stages)
    start = stage * base + min(stage, extra)
    return list(range(start, start + base + (1 if stage < extra else 0)))


def build_schedule(stage_module: nn.Module, stage: int, stages: int, device: torch.device,
                   group, kind: str, n_microbatches: int, loss_fn: Callable):
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe
    if kind not in SCHEDULES:
        raise ValueError(f"pipeline schedule {kind!r}: one of {', '.join(SCHEDULES)}")
    pipe_stage = PipelineStage(stage_module, stage, stages, device, group=group)
    schedule = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}[kind]
    return schedule(pipe_stage, n_microbatches=n_microbatches, loss_fn=loss_fn)
