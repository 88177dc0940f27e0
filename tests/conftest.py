"""Shared fixtures: compose configs like train.py does, and run train.py in a subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A DLRM proxy run that takes a few seconds: 3 small days, a loose target.
TINY_DLRM = ["dataset.num_days=3", "dataset.samples_per_day=8192", "dataset.batch_size=512",
             "dataset.eval_batch_size=4096", "dataset.target_margin=0.25",
             "train.evals_per_epoch=4", "tracking.system_metrics=false",
             "train.progress_every_s=1"]


def compose(overrides: list[str], output_root: Path | str | None = None):
    """The config train.py would run with these overrides (no Hydra job is started)."""
    from hydra import compose as hydra_compose, initialize_config_dir

    from pinchpoint.config import setup

    setup()
    extra = [f"output_root={output_root}"] if output_root is not None else []
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=[*overrides, *extra],
                             return_hydra_config=False)


def train(args: list[str], output_root: Path, timeout: float = 300, check: bool = True,
          env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python train.py ARGS output_root=...`` from the repo root; returns the process."""
    cmd = [sys.executable, str(ROOT / "train.py"), *args, f"output_root={output_root}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"train.py failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-6000:]}")
    return proc


def mlflow_client(output_root: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{output_root}/mlflow.db")


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "outputs"


from slurm_cluster import slurm_cluster  # noqa: E402,F401  (session fixture for -m slurm tests)
