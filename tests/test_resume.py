"""kill -9 mid-run, rerun the same command: it resumes from the newest valid checkpoint, reaches
the target, and the MLflow run for that point is one complete run (no duplicate metric steps)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, TINY_DLRM, mlflow_client, seed_mlflow_store, train
from pinchpoint.telemetry.mlperf_log import compliance_check

pytestmark = pytest.mark.slow
# Emulated per-request latency slows each step to ~0.15 s so the kill lands mid-run.
ARGS = [*TINY_DLRM, "checkpoint.interval=4", "storage=nfs", "storage.emulation.latency_ms=5",
        "dataset.prefetch=0"]


def test_kill_9_then_resume(tmp_path):
    out = tmp_path / "outputs"
    cmd = [sys.executable, str(ROOT / "train.py"), *ARGS, f"output_root={out}"]
    seed_mlflow_store(out)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    ckpt_root = out / "storage" / "nfs" / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and not list(ckpt_root.glob("*/step_*.json")):
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    (ckpt_dir,) = list(ckpt_root.iterdir())
    killed_at = max(int(p.name[5:13]) for p in ckpt_dir.glob("step_*.json"))
    reached = json.loads((ckpt_dir / "progress.json").read_text())["step"]

    second = train(ARGS, out)
    assert f"resuming run {ckpt_dir.name}" in second.stdout
    folder = sorted(out.glob("runs/*"))[-1]
    summary = json.loads((folder / "phase_summary.json").read_text())
    assert summary["status"] == "success" and summary["restarts"] == 1
    assert summary["steps"] > killed_at
    # Exactly the steps done after the checkpoint it resumed from (the marker is per step).
    assert summary["steps_redone"] == reached - killed_at
    ok, output = compliance_check(str(folder / "mlperf.log"))
    assert ok, output

    client = mlflow_client(out)
    exp = client.get_experiment_by_name("dlrm_dcnv2")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1, [r.info.run_name for r in runs]  # continued, not doubled
    (r,) = runs
    assert r.info.status == "FINISHED" and r.data.tags["status"] == "success"
    steps = [m.step for m in client.get_metric_history(r.info.run_id, "train_loss")]
    assert len(steps) == len(set(steps)) and steps == sorted(steps)
    assert r.data.metrics["restarts"] == 1
    assert not list(ckpt_dir.glob("step_*"))  # the finished point cleans its checkpoints


def test_damaged_or_unpublished_checkpoints_are_skipped(tmp_path):
    """The newest checkpoint with a damaged shard, and a step whose manifest was never
    published (killed mid-save), are both ignored: resume takes the newest intact one."""
    import torch

    from pinchpoint.storage.checkpoint import CheckpointManager
    from pinchpoint.storage.tier import StorageTier

    mgr = CheckpointManager(StorageTier("t", str(tmp_path)), "key", keep=3)
    mgr.save({"x": torch.ones(3)}, {"note": "first"}, 4, is_main=True)
    mgr.save({"x": torch.full((3,), 2.0)}, {"note": "second"}, 8, is_main=True)
    (shard,) = [p for p in os.listdir(mgr.step_dir(8)) if p.endswith(".distcp")]
    with open(os.path.join(mgr.step_dir(8), shard), "r+b") as f:  # a torn write
        f.seek(10)
        f.write(b"garbage")
    assert mgr.latest()["step"] == 4 and mgr.latest()["note"] == "first"
    template = {"x": torch.zeros(3)}
    mgr.load(template, 4)
    assert template["x"].tolist() == [1.0, 1.0, 1.0]
    os.makedirs(mgr.step_dir(12))   # shards written, manifest never published
    assert mgr.latest()["step"] == 4


@pytest.mark.full   # the conformance suite resumes DLRM's ep2 checkpoint in one process too
def test_resume_into_another_world_size(tmp_path):
    """An ep2 run dies after its step-4 checkpoint; a single-process run continues it. Its
    evaluation at step 8 equals an uninterrupted ep2 run's to float rounding: the checkpoint
    holds the whole state (every sharded table and its Adagrad sums, under single-process names),
    so the outcome does not hinge on whether a tiny run happens to reach a target."""
    args = [*TINY_DLRM, "checkpoint.interval=4", "train.max_steps=8"]   # evals every 8 steps
    whole = _summary_of(train([*args, "parallel=ep2"], tmp_path / "whole"), tmp_path / "whole")
    out = tmp_path / "outputs"
    failed = train([*args, "parallel=ep2", "fault=raise_at_step:6"], out, check=False)
    assert failed.returncode != 0
    (ckpt_dir,) = list((out / "storage" / "local" / "checkpoints").iterdir())
    assert list(ckpt_dir.glob("step_00000004.json"))
    resumed = _summary_of(train([*args, "parallel=single",
                                 f"checkpoint.resume_from={ckpt_dir.name}"], out), out)
    assert resumed["restarts"] == 1 and resumed["world_size"] == 1 and resumed["steps"] == 8
    assert resumed["final_quality"] == pytest.approx(whole["final_quality"], abs=1e-4)
    client = mlflow_client(out)
    runs = client.search_runs([client.get_experiment_by_name("dlrm_dcnv2").experiment_id],
                              "tags.status != 'failed'")
    assert runs[0].data.tags["resumed_from"].endswith("@step4")


def _summary_of(proc, out) -> dict:
    return json.loads((sorted(out.glob("runs/*"))[-1] / "phase_summary.json").read_text())


def test_resume_from_nothing_is_a_clear_error(tmp_path):
    proc = train([*TINY_DLRM, "checkpoint.resume_from=no-such-run"], tmp_path / "out",
                 check=False)
    assert proc.returncode != 0
    assert "checkpoint.resume_from='no-such-run' is not allowed" in proc.stdout + proc.stderr
