"""The bad-input catalogue (issue 15): every way a user can hand pinchpoint something it cannot
run, grouped as users meet them. Each case asserts what a user sees: a non-zero exit, a
message naming the field or file and what is allowed, on one line with no traceback, before
any training step, and no MLflow run left behind (none opened, or none RUNNING).

Config-level cases go through ``validate()`` in-process (what train.py runs first) and through
train.py's own error handler (``user_error``: the exit code and the line it prints); a few
cases run train.py itself in a subprocess, sharing one output root.
"""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import compose, load_script, train
from pinchpoint.data import criteo
from pinchpoint.data.npy_format import DataFormatError
from pinchpoint.errors import ConfigError
from pinchpoint.runner.validation import validate
from pinchpoint.workloads import spec, workload_names

train_entry = load_script("train.py", "train_entry")


def shown(err: BaseException) -> tuple[int, str]:
    """What train.py prints for ``err`` and the exit code (a traceback would mean None)."""
    known = train_entry.user_error(err)
    assert known is not None, f"train.py would print a traceback for {err!r}"
    code, message = known
    assert code != 0 and "\n" not in message and "Traceback" not in message
    return code, message


# --- config values, storage, parallel degrees, cluster, tracking (in-process) ---------------------
CASES = [  # (group, overrides, field named, words of what is allowed)
    ("config", ["dataset.batch_size=-8"], "dataset.batch_size", "a positive integer"),
    ("config", ["dataset.eval_batch_size=0"], "dataset.eval_batch_size", "a positive integer"),
    ("config", ["checkpoint.interval=-1"], "checkpoint.interval", "an integer >= 0"),
    ("config", ["checkpoint.keep=0"], "checkpoint.keep", "a positive integer"),
    ("config", ["train.evals_per_epoch=0"], "train.evals_per_epoch", "a positive integer"),
    ("config", ["train.max_epochs=0"], "train.max_epochs", "a number > 0"),
    ("config", ["train.max_steps=-3"], "train.max_steps", "a number >= 0"),
    ("config", ["telemetry.attribution=cuda_events"], "telemetry.attribution",
     "one of auto, events, sync, off"),
    ("config", ["telemetry.profile_steps=[5,2]"], "telemetry.profile_steps", "[first, last]"),
    ("config", ["train.device=tpu"], "train.device", "auto, cpu, cuda"),
    ("config", ["train.threads=-1"], "train.threads", "a number >= 0"),
    ("config", ["seed=-5"], "seed", "a number >= 0"),
    ("config", ["mlperf.submission_division=secret"], "mlperf.submission_division",
     "open, closed"),
    ("config", ["dataset.num_days=1"], "dataset.num_days", "an integer >= 2"),
    ("config", ["dataset.target_margin=0"], "dataset.target_margin", "(0, 0.5)"),
    ("config", ["dataset.target_auroc=1.5"], "dataset.target_auroc", "(0.5, 1]"),
    ("config", ["dataset.num_workers=2", "dataset.prefetch=0"], "dataset.prefetch", ">= 1"),
    ("config", ["dataset.teacher.id_skew=0.5"], "dataset.teacher.id_skew", "a number >= 1"),
    ("config", ["model.scale=huge"], "model.scale", "proxy, full, smoke"),
    ("config", ["model.proxy.top_mlp=[64,2]"], "model.proxy.top_mlp", "ending at 1"),
    ("config", ["model.proxy.learning_rate=0"], "model.proxy.learning_rate", "> 0"),
    ("config", ["+dataset.shuffle_buffer=3"], "dataset.shuffle_buffer", "a field of"),
    ("data", ["dataset=criteo_multihot", "dataset.path=/nonexistent/criteo"], "dataset.path",
     "a folder holding day_N_dense.npy"),
    ("storage", ["storage.cache_clear=sometimes"], "storage.cache_clear",
     "none, fadvise, drop_caches"),
    ("storage", ["storage=nfs", "storage.emulation.read_mb_per_s=0"],
     "storage.emulation.read_mb_per_s", "a bandwidth > 0"),
    ("storage", ["storage=nfs", "storage.emulation.latency_ms=-1"],
     "storage.emulation.latency_ms", "a number >= 0"),
    ("storage", ["storage.root=/proc/pinchpoint"], "storage.root", "a writable directory"),
    ("storage", ["output_root=/proc/pinchpoint"], "output_root", "a writable directory"),
    ("parallel", ["parallel.backend=mpi"], "parallel.backend", "auto, gloo, nccl"),
    ("parallel", ["parallel=ep4", "parallel.ep=2"], "parallel.ep", "sharded over every rank"),
    ("config", ["model=llama2_70b_lora", "model.smoke.recompute=true", "model.scale=smoke"],
     "model.smoke.recompute", "not read by llama2_70b_lora"),
    ("parallel", ["parallel=ddp4", "dataset.batch_size=1022"], "dataset.batch_size",
     "a multiple of the world size 4"),
    ("cluster", ["cluster=slurm", "cluster.nodes=0"], "cluster.nodes", "a positive integer"),
    ("cluster", ["cluster=slurm", "cluster.time_limit_min=0"], "cluster.time_limit_min",
     "a whole number of minutes > 0"),
    ("cluster", ["cluster=slurm", "cluster.mem=lots"], "cluster.mem", "16G or 500M"),
    ("cluster", ["cluster=slurm", "cluster.signal_delay_s=-1"], "cluster.signal_delay_s",
     "an integer >= 0"),
    ("tracking", ["tracking=server", "tracking.uri=http://127.0.0.1:9"], "tracking.uri",
     "a reachable MLflow tracking server"),
    ("tracking", ["tracking.uri=sqlite:////proc/pinchpoint/mlflow.db"], "tracking.uri",
     "a writable directory"),
]
# Parallel degrees, per registered workload: the degrees must multiply to the world size.
CASES += [("parallel", [f"model={name}", *spec(name).smoke, "parallel.tp=2",
                        "parallel.world_size=3"], "parallel.world_size", "product of the degrees")
          for name in workload_names()]
CASES += [("parallel", ["parallel.tp=2"], "parallel.tp", "1 for DLRM"),
          ("parallel", ["model=llama31_8b", *spec("llama31_8b").smoke, "parallel.cp=2"],
           "parallel.cp", "context parallelism is planned by plan_only=true")]


@pytest.mark.parametrize("group,overrides,field,allowed", CASES,
                         ids=[f"{c[0]}-{c[2]}-{i}" for i, c in enumerate(CASES)])
def test_config_case(tmp_path, group, overrides, field, allowed):
    out = tmp_path / "out"
    own_root = any(o.startswith("output_root=") for o in overrides)  # else compose sets it
    with pytest.raises(ConfigError) as err:
        validate(compose(overrides, None if own_root else out))
    assert err.value.field == field
    code, message = shown(err.value)
    assert code == 2 and message.startswith(f"Invalid config: {field}=")
    assert allowed in message, message
    assert not out.exists()   # nothing created: no data, no MLflow store, no run


def test_storage_root_env_var_is_named(tmp_path, monkeypatch):
    """A storage root set by environment variable is named by the variable too."""
    monkeypatch.setenv("PINCHPOINT_LOCAL_ROOT", "/proc/pinchpoint-tier")
    with pytest.raises(ConfigError) as err:
        validate(compose([], tmp_path / "out"))
    _, message = shown(err.value)
    assert "storage.root (or the PINCHPOINT_LOCAL_ROOT environment variable)" in message


def test_storage_root_under_a_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError) as err:
        validate(compose([f"storage.root={blocker}/tier"], tmp_path / "out"))
    assert "storage.root" in shown(err.value)[1] and "not a directory" in shown(err.value)[1]


# --- data files (the header checks train.py runs before any MLflow run is opened) ------------------
HOT = None


def hot_sizes() -> list[int]:
    global HOT
    if HOT is None:
        HOT = list(compose([]).model.proxy.multi_hot_sizes)
    return HOT


def good_days(folder: Path, rows: int = 64) -> None:
    for day in range(2):
        criteo.write_day(str(folder), day, np.zeros((rows, 13), np.float32),
                         np.zeros((rows, 1), np.int32),
                         [np.zeros((rows, h), np.int32) for h in hot_sizes()])


def _truncate(paths):
    npz = paths["sparse_multi_hot"]
    with open(npz, "r+b") as f:
        f.truncate(os.path.getsize(npz) - 100)
    return "day_1_sparse_multi_hot.npz"


def _compress(paths):
    with np.load(paths["sparse_multi_hot"]) as z:
        members = {k: z[k] for k in z.files}
    with open(paths["sparse_multi_hot"], "wb") as f:
        np.savez_compressed(f, **members)
    return "day_1_sparse_multi_hot.npz"


def _float64_dense(paths):
    np.save(paths["dense"], np.zeros((64, 13), np.float64))
    return "day_1_dense.npy"


def _labels_shape(paths):
    np.save(paths["labels"], np.zeros((64, 2), np.int32))
    return "day_1_labels.npy"


def _row_mismatch(paths):
    np.save(paths["labels"], np.zeros((63, 1), np.int32))
    return "day_1_labels.npy"


def _missing_member(paths):
    with np.load(paths["sparse_multi_hot"]) as z:
        members = {k: z[k] for k in z.files if k != "25"}
    with open(paths["sparse_multi_hot"], "wb") as f:
        np.savez(f, **members)
    return "day_1_sparse_multi_hot.npz"


def _not_npy(paths):
    Path(paths["dense"]).write_bytes(b"dense,values\n1,2,3\n")
    return "day_1_dense.npy"


def _missing_file(paths):
    os.remove(paths["labels"])
    return "day_1_labels.npy"


def _hotness(paths):
    with np.load(paths["sparse_multi_hot"]) as z:
        members = {k: z[k] for k in z.files}
    members["3"] = np.zeros((64, hot_sizes()[3] + 1), np.int32)
    with open(paths["sparse_multi_hot"], "wb") as f:
        np.savez(f, **members)
    return "day_1_sparse_multi_hot.npz"


DAMAGE = [_truncate, _compress, _float64_dense, _labels_shape, _row_mismatch, _missing_member,
          _not_npy, _missing_file, _hotness]


@pytest.fixture(scope="module")
def valid_days(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("criteo")
    good_days(folder)
    return folder


@pytest.mark.parametrize("damage", DAMAGE, ids=[d.__name__.strip("_") for d in DAMAGE])
def test_data_file_case(tmp_path, valid_days, damage):
    folder = tmp_path / "criteo"
    shutil.copytree(valid_days, folder)
    name = damage(criteo.day_files(str(folder), 1))
    with pytest.raises(DataFormatError) as err:   # what prepare_data runs for every day
        for day in range(2):
            criteo.inspect_day(str(folder), day, hot_sizes())
    code, message = shown(err.value)
    assert code == 2 and message.startswith("Invalid data: ") and name in message, message


# --- sweepers and report -------------------------------------------------------------------------
def test_crossover_axis_not_swept():
    from pinchpoint.sweepers.crossover import CrossoverSearch
    from pinchpoint.sweepers.space import SweepError, parse
    with pytest.raises(SweepError, match=r"hydra.sweeper.axis='xx' is not swept"):
        CrossoverSearch(axis="xx")._axes(parse(None, ["x=choice(1,2)", "alt=a,b"]))


@pytest.mark.parametrize("kwargs,args,message", [
    ({"direction": "fastest"}, ["x=choice(1,2)"], "hydra.sweeper.direction='fastest'"),
    ({"n_trials": 0}, ["x=choice(1,2)"], "hydra.sweeper.n_trials=0"),
    ({}, ["x=interval(5,5)"], "empty search space interval"),
])
def test_optuna_settings(kwargs, args, message):
    from pinchpoint.sweepers import optuna_sweeper
    from pinchpoint.sweepers.space import SweepError
    with pytest.raises(SweepError) as err:
        sweeper = optuna_sweeper.OptunaSearch(sampler={}, **kwargs)
        sweeper.config, sweeper.own_app = None, False
        sweeper.objectives = optuna_sweeper._objectives(sweeper.objective,
                                                        len(sweeper.directions), False)
        sweeper._sweep(args)
    assert message in str(err.value) and "\n" not in str(err.value).strip()


def test_report_without_a_store(tmp_path, capsys):
    from pinchpoint.cli import main
    assert main(["report", "--tracking-uri", f"sqlite:///{tmp_path}/none.db"]) == 2
    err = capsys.readouterr().err
    assert "no MLflow store" in err and "Traceback" not in err
    assert not (tmp_path / "none.db").exists()


def test_report_unknown_experiment(tmp_path, capsys):
    from pinchpoint.cli import main
    from pinchpoint.tracking.store import ensure_store
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    ensure_store(uri)
    assert main(["report", "--tracking-uri", uri, "--experiment", "nope", "--no-log",
                 "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "--experiment 'nope' does not exist" in err and "Traceback" not in err


# --- checkpoints: disk full, a resume whose MLPerf log is gone ---------------------------------------
def _tier(root: Path):
    from pinchpoint.storage.tier import StorageTier
    return StorageTier("local", str(root))


def test_disk_full_during_a_checkpoint(tmp_path, monkeypatch):
    import torch
    import torch.distributed.checkpoint as dcp

    from pinchpoint.storage.checkpoint import CheckpointManager
    manager = CheckpointManager(_tier(tmp_path), "run", keep=2)
    manager.save({"w": torch.zeros(4)}, {}, 1, True)        # a good one first

    def full(state, checkpoint_id):
        # As torch.distributed.checkpoint reports it: every rank's failure gathered, wrapped.
        from torch.distributed.checkpoint.api import CheckpointException, _wrap_exception
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as e:
            raise CheckpointException("save", {0: _wrap_exception(e)}) from None
    monkeypatch.setattr(dcp, "save", full)
    with pytest.raises(OSError) as err:
        manager.save({"w": torch.ones(4)}, {}, 2, True)
    code, message = shown(err.value)
    assert code == 1 and message.startswith("Disk full: ")
    for words in (manager.step_dir(2), "storage tier 'local'", "newest valid checkpoint is step 1",
                  "checkpoint.keep", "storage.root"):
        assert words in message, message
    assert manager.latest()["step"] == 1 and not os.path.exists(manager.step_dir(2) + ".tmp")


@pytest.fixture
def small_disk(tmp_path):
    """A 48 MB tmpfs as the storage root (the dataset, then checkpoints, fill it)."""
    import subprocess
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(disk)],
                      capture_output=True).returncode:
        from slurm_cluster import under_ci
        if under_ci():
            pytest.fail("CI runs as root and can mount a tmpfs: this one could not be mounted")
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)])


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["parallel=single", "parallel=ddp2"])
def test_a_real_full_disk_during_a_checkpoint_is_one_line_and_leaves_no_debris(
        layout, small_disk, tmp_path):
    """On a real full tmpfs: the step-2 checkpoint fits, the step-4 one does not. One line names
    the checkpoint, the tier and the newest valid one; no step_4.tmp is left; step 2 resumes."""
    from conftest import TINY_DLRM
    from pinchpoint.storage.checkpoint import CheckpointManager
    out, root = tmp_path / "outputs", small_disk / "tier"
    run = [*TINY_DLRM, layout, f"storage.root={root}", "tracking.enabled=false",
           "checkpoint.interval=2", "checkpoint.keep=2"]
    # One checkpoint's size, measured: a run that crashes after its step-2 checkpoint.
    train([*run, "train.max_steps=4", "fault=raise_at_step:3"], out, check=False)
    [ckpt_dir] = (root / "checkpoints").iterdir()
    ckpt = sum(f.stat().st_size for f in ckpt_dir.rglob("*") if f.is_file())
    shutil.rmtree(ckpt_dir)
    # Leave room for one and a half checkpoints.
    free = shutil.disk_usage(small_disk).free
    with open(small_disk / "filler", "wb") as f:
        f.truncate(0)
        f.write(b"\0" * max(0, free - int(1.5 * ckpt)))
    proc = train([*run, "train.max_steps=8"], out, check=False)
    lines = [l for l in proc.stderr.splitlines() if l.startswith("Disk full: ")]
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    [ckpt_dir] = (root / "checkpoints").iterdir()
    manager = CheckpointManager.__new__(CheckpointManager)
    manager.dir = str(ckpt_dir)
    assert manager.steps() == [2]
    for words in (manager.step_dir(4), "storage tier 'local'", "newest valid checkpoint is step 2"):
        assert words in lines[0], lines[0]
    assert not list(ckpt_dir.glob("*.tmp")) and not (ckpt_dir / "step_00000004").exists()


def test_resume_whose_mlperf_log_is_gone(tmp_path):
    import torch

    from pinchpoint.runner.checkpointing import find_resume
    from pinchpoint.storage.checkpoint import CheckpointManager
    tier = _tier(tmp_path)
    manager = CheckpointManager(tier, "run", keep=2)
    manager.save({"w": torch.zeros(4)}, {"mlperf_log": str(tmp_path / "gone" / "mlperf.log")},
                 3, True)
    with pytest.raises(ConfigError) as err:   # refused before any step: nothing is redone
        find_resume(manager, tier, None)
    code, message = shown(err.value)
    assert code == 2 and "mlperf.log is gone" in message and "step 3" in message
    assert manager.where in message


# --- train.py itself: exit code, one line, no step, no MLflow run (one shared output root) ---------
@pytest.fixture(scope="module")
def shared_out(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bad_inputs") / "outputs"


def assert_refused(proc, out: Path, *words: str) -> None:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    for w in words:
        assert w in proc.stderr, proc.stderr[-3000:]
    assert "step " not in proc.stdout and not list(out.glob("runs/*/phase_summary.json"))
    db = out / "mlflow.db"
    if db.exists():
        from mlflow.tracking import MlflowClient
        client = MlflowClient(f"sqlite:///{db}")
        exps = [e.experiment_id for e in client.search_experiments()]
        assert not exps or client.search_runs(exps, run_view_type=1) == []


# Two ranks: each rank finds the damage; the launching process prints it once, as itself.
@pytest.mark.parametrize("layout", ["parallel=single", "parallel=ep2"])
def test_train_py_refuses_a_damaged_data_file(shared_out, valid_days, tmp_path, layout):
    folder = tmp_path / "criteo"
    shutil.copytree(valid_days, folder)
    _compress(criteo.day_files(str(folder), 1))
    proc = train(["dataset=criteo_multihot", f"dataset.path={folder}", "dataset.num_days=2",
                  "dataset.samples_per_day=64", "dataset.batch_size=32", layout,
                  "tracking.system_metrics=false"], shared_out, check=False)
    assert_refused(proc, shared_out, "Invalid data: ", "day_1_sparse_multi_hot.npz")


def test_train_py_refuses_a_dead_tracking_server(shared_out):
    proc = train(["tracking=server", "tracking.uri=http://127.0.0.1:9"], shared_out, check=False,
                 timeout=120)
    assert_refused(proc, shared_out, "Invalid config: tracking.uri=", "tracking.enabled=false")


def test_train_py_refuses_a_bad_value(shared_out):
    proc = train(["dataset.batch_size=-8"], shared_out, check=False)
    assert_refused(proc, shared_out, "Invalid config: dataset.batch_size=-8 is not allowed")
