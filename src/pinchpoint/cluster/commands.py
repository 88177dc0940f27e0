"""Asking Slurm's command-line tools (sinfo, sacct, squeue, sacctmgr) for their output."""
from __future__ import annotations

import subprocess
from typing import Optional


def slurm_output(cmd: list[str]) -> Optional[str]:
    """stdout of a Slurm query, or None when the tool is missing, hangs or fails."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None
