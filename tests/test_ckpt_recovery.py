"""The recovery measurement's machinery: ``fault=kill_at_step:N`` SIGKILLs the run's own process
group at step N (leaving killed.json behind), the same command then resumes from the newest
checkpoint, and the seconds from kill to training resumed, the steps redone and the time-to-train
lost are readable from what the two attempts left (as benchmarks/ckpt_recovery.py reads them)."""
from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from conftest import ROOT, TINY_DLRM
from pinchpoint.errors import ConfigError
from pinchpoint.runner.faults import parse, read_kill

sys.path.insert(0, str(ROOT / "benchmarks"))
from ckpt_recovery import first_event_after  # noqa: E402

ARGS = [*TINY_DLRM, "train.max_steps=8", "checkpoint.interval=3", "tracking.enabled=false"]


def run(args: list[str], out) -> subprocess.CompletedProcess:
    # Its own session: the fault kills the whole process group, which must not be pytest's.
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args, f"output_root={out}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=240,
                          start_new_session=True)


def test_fault_specs_are_checked():
    assert parse("kill_at_step:7") == ("kill_at_step", 7)
    assert parse(None) == (None, None)
    for bad in ("kill_at_step", "kill_at_step:0", "explode:3", "raise_at_step:x"):
        with pytest.raises(ConfigError, match="kill_at_step:N or requeue_at_step:N"):
            parse(bad)


def test_kill_at_step_then_resume_measures_recovery(tmp_path):
    out = tmp_path / "outputs"
    killed = run([*ARGS, "fault=kill_at_step:5"], out)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    (first,) = sorted(out.glob("runs/*"))
    record = read_kill(str(first))
    assert record["step"] == 5 and not (first / "phase_summary.json").exists()

    resumed = run(ARGS, out)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    second = sorted(out.glob("runs/*"))[-1]
    summary = json.loads((second / "phase_summary.json").read_text())
    # Checkpointed at step 3, killed after step 5: steps 4 and 5 are done again.
    assert summary["restarts"] == 1 and summary["steps_redone"] == 2
    assert summary["steps"] == 8 and summary["checkpoint_load_bytes"] > 0
    at, key = first_event_after(second / "mlperf.log", record["killed_at"])
    assert key == "epoch_start" and at > record["killed_at"]
    # MLPerf's clock spans both attempts: the downtime is inside time-to-train.
    assert summary["time_to_train_s"] > at - record["killed_at"]


def test_a_requeued_run_stays_running_between_attempts(tmp_path):
    """requeue_at_step does what submitit does after Slurm requeues the job (mark, exit): the
    MLflow run is left RUNNING with status=requeued, not FAILED; the next attempt continues it."""
    from mlflow.tracking import MlflowClient

    out = tmp_path / "outputs"
    args = [a for a in ARGS if a != "tracking.enabled=false"] + ["tracking.system_metrics=false"]
    first = run([*args, "fault=requeue_at_step:4"], out)
    assert first.returncode != 0
    client = MlflowClient(tracking_uri=f"sqlite:///{out}/mlflow.db")
    exp = client.get_experiment_by_name("dlrm_dcnv2")
    [between] = client.search_runs([exp.experiment_id])
    assert between.info.status == "RUNNING" and between.data.tags["status"] == "requeued"
    assert run(args, out).returncode == 0
    [after] = client.search_runs([exp.experiment_id])
    assert after.info.run_id == between.info.run_id and after.info.status == "FINISHED"
    assert after.data.tags["status"] in ("success", "aborted")
