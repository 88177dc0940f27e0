"""What the runner needs from Hydra, read once at the entry (the rest of the code is Hydra-free)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional


@dataclass
class JobInfo:
    output_dir: str
    overrides: list[str] = field(default_factory=list)
    choices: dict[str, str] = field(default_factory=dict)
    sweep_dir: Optional[str] = None   # set for multirun points
    job_num: Optional[int] = None


def from_hydra(default_output_dir: str) -> JobInfo:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
        hc = HydraConfig.get()
    except Exception:  # called outside @hydra.main (tests, benchmarks)
        os.makedirs(default_output_dir, exist_ok=True)
        return JobInfo(default_output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    return JobInfo(output_dir=hc.runtime.output_dir, overrides=list(hc.overrides.task),
                   choices=dict(hc.runtime.choices),
                   sweep_dir=hc.sweep.dir if multirun else None,
                   job_num=hc.job.num if multirun else None)
