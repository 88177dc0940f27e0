"""Shared fixtures: compose configs like train.py does, and run train.py in a subprocess."""
from __future__ import annotations

import os
import shutil
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
    from pinchpoint.sweepers.plan_grid import compose as compose_run
    return compose_run(overrides, output_root, ROOT / "conf")


def plan_of(overrides: list[str], output_root: Path | str | None = None):
    """The PlanResult ``pinchpoint plan`` gives for one point (composed as train.py does)."""
    from omegaconf import OmegaConf

    from pinchpoint.workloads import plan_point
    return plan_point(OmegaConf.to_object(compose(overrides, output_root)))


def load_script(path: str, name: str):
    """A repository script that is not a package module (train.py, benchmarks/*.py, tools/*.py)
    imported by its path, as a module named ``name``."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_EMPTY_STORE: list[Path] = []


def empty_mlflow_store() -> Path:
    """An MLflow sqlite store with its schema migrated, made once per test session. Creating
    a store runs ~40 alembic migrations (2.6 s on a quiet 2-core box, more under load), paid
    by every test with a fresh output root; a copy of this file is the same store."""
    if not _EMPTY_STORE:
        import tempfile

        from mlflow.tracking import MlflowClient
        db = Path(tempfile.mkdtemp(prefix="pinchpoint-mlflow-")) / "mlflow.db"
        MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
        _EMPTY_STORE.append(db)
    return _EMPTY_STORE[0]


def seed_mlflow_store(output_root: Path) -> None:
    """Start ``output_root`` with an empty migrated MLflow store, unless it has one."""
    db = Path(output_root) / "mlflow.db"
    if not db.exists():
        db.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(empty_mlflow_store(), db)


def train(args: list[str], output_root: Path, timeout: float = 300, check: bool = True,
          env: dict | None = None, seed_store: bool = True) -> subprocess.CompletedProcess:
    """Run ``python train.py ARGS output_root=...`` from the repo root; returns the process.
    ``seed_store``: start from a copy of an empty migrated MLflow store (see
    ``empty_mlflow_store``); False where a test checks that nothing is created."""
    if seed_store:
        seed_mlflow_store(output_root)
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


def pytest_addoption(parser):
    parser.addoption("--full", action="store_true",
                     help="also run the tests marked full (longer variants; ~+5 min)")


def pytest_collection_modifyitems(config, items):
    """The default run stays inside CI's budget: a test marked ``full`` repeats, at greater
    length, a behaviour another default test covers, and runs with --full (or
    PINCHPOINT_FULL_TESTS=1)."""
    if config.getoption("--full") or os.environ.get("PINCHPOINT_FULL_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="a longer variant of a covered behaviour: run with --full")
    for item in items:
        if "full" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "outputs"


from slurm_cluster import multinode_cluster, slurm_cluster  # noqa: E402,F401  (session fixtures)
