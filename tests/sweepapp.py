"""Run tests/sweep_app/app.py (a fast fake task with a known answer) under a sweeper."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

APP = Path(__file__).resolve().parent / "sweep_app" / "app.py"
XS = list(range(500, 9000, 500))   # 17 ordered values: the dense grid


def run_app(args: list[str], out: Path, check: bool = True) -> subprocess.CompletedProcess:
    if not any(a.startswith(("hydra.sweeper.validator", "hydra/sweeper=basic")) for a in args):
        args = [*args, "hydra.sweeper.validator=null"]   # the fake config is not a run config
    cmd = [sys.executable, str(APP), "-m", *args, f"output_root={out}"]
    proc = subprocess.run(cmd, cwd=APP.parent, capture_output=True, text=True, timeout=180,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if check and proc.returncode != 0:
        raise AssertionError(f"app failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-4000:]}")
    return proc


def sweep_dirs(out: Path) -> list[Path]:
    return sorted((out / "sweeps").iterdir())


def job_dirs(sweep: Path) -> list[Path]:
    return [p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()]
