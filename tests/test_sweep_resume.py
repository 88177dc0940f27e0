"""Sweep resume (pinchpoint_grid): skip points whose config already succeeded, rerun the rest,
validate every point before launching any, and a dry run that launches nothing. Local launcher:
no Slurm needed (the Slurm rerun-after-scancel case is in test_slurm_cluster.py)."""
from __future__ import annotations

from types import SimpleNamespace

from conftest import TINY_DLRM, compose, mlflow_client, seed_mlflow_store, train
from pinchpoint.runner.run_key import run_key
from pinchpoint.tracking.points import decide
from pinchpoint.tracking.store import ensure_experiment, ensure_store

QUICK = [*TINY_DLRM, "train.max_steps=2"]


def fake(status: str, tag: str | None, run_id: str = "abcdef0123456789"):
    return SimpleNamespace(info=SimpleNamespace(status=status, run_id=run_id),
                           data=SimpleNamespace(tags={"status": tag} if tag else {},
                                                metrics={"time_to_train_s": 12.5}))


def test_decisions():
    assert decide([]).run and "missing" in decide([]).reason
    ok = decide([fake("FAILED", "failed", "f" * 16), fake("FINISHED", "success")])
    assert not ok.run and "succeeded in run abcdef01" in ok.reason and "12.5" in ok.reason
    assert decide([fake("FINISHED", "aborted")]).run
    assert "aborted" in decide([fake("FINISHED", "aborted")]).reason
    assert "failed" in decide([fake("FAILED", "failed")]).reason
    assert "unfinished" in decide([fake("RUNNING", None)]).reason


def point_key(seed: int, out) -> str:
    """The point's run key as the sweep computes it: after validation, which fills in derived
    fields (parallel.world_size)."""
    from pinchpoint.runner.validation import validate
    cfg = compose([*QUICK, f"seed={seed}"], out)
    validate(cfg)
    return run_key(cfg)


def seed_store(out, outcomes: dict[int, tuple[str, str]]) -> dict[int, str]:
    """Runs as earlier sweeps would have left them: seed -> (MLflow status, status tag)."""
    uri = f"sqlite:///{out}/mlflow.db"
    ensure_store(uri)
    exp = ensure_experiment(uri, "dlrm_dcnv2", str(out / "mlartifacts"))
    client, ids = mlflow_client(out), {}
    for seed, (status, tag) in outcomes.items():
        key = point_key(seed, out)
        run = client.create_run(exp, tags={"pinchpoint.run_key": key, "pinchpoint.kind": "point",
                                           "status": tag})
        client.set_terminated(run.info.run_id, status)
        ids[seed] = run.info.run_id
    return ids


def points(out) -> list:
    client = mlflow_client(out)
    exp = client.get_experiment_by_name("dlrm_dcnv2")
    return client.search_runs([exp.experiment_id], "tags.`pinchpoint.kind` = 'point'")


def test_dry_run_lists_what_would_run_and_why_and_launches_nothing(out):
    ids = seed_store(out, {0: ("FINISHED", "success"), 1: ("FAILED", "failed"),
                           3: ("FINISHED", "aborted")})
    proc = train(["-m", *QUICK, "seed=0,1,2,3", "hydra.sweeper.dry_run=true"], out, timeout=120)
    text = proc.stdout + proc.stderr
    assert "4 point(s), 3 to run, 1 already succeeded (dry run" in text
    assert f"skip seed=0" in text and f"succeeded in run {ids[0][:8]}" in text
    assert f"run  seed=1" in text and f"failed in run {ids[1][:8]}" in text
    assert "run  seed=2" in text and "missing" in text
    assert "run  seed=3" in text and "aborted" in text
    assert len(points(out)) == 3 and not (out / "sweeps").exists()  # no parent, no job
    off = train(["-m", *QUICK, "seed=0", "hydra.sweeper.resume=false",
                 "hydra.sweeper.dry_run=true"], out, timeout=120)
    assert "1 to run, 0 already succeeded" in off.stdout + off.stderr


def test_a_rerun_of_a_sweep_that_succeeded_launches_nothing(out):
    """(Rerunning only the failed point of a sweep: test_slurm_cluster.py's scancel test.)"""
    seed_store(out, {0: ("FINISHED", "success"), 1: ("FINISHED", "success")})
    proc = train(["-m", *QUICK, "seed=0,1"], out, timeout=120)
    assert "2 point(s), 0 to run, 2 already succeeded" in proc.stdout + proc.stderr
    client = mlflow_client(out)
    exp = client.get_experiment_by_name("dlrm_dcnv2")
    [parent] = client.search_runs([exp.experiment_id], "tags.`pinchpoint.kind` = 'sweep'")
    assert parent.info.status == "FINISHED" and parent.data.metrics["points"] == 0
    assert parent.data.tags["pinchpoint.points_skipped"] == "2"
    assert "seed=0: succeeded in run" in parent.data.tags["pinchpoint.skipped"]
    assert len(points(out)) == 2 and not list((out / "sweeps").rglob("mlperf.log"))


def test_every_point_is_validated_before_any_is_launched(out):
    proc = train(["-m", *QUICK, "train.max_epochs=1,-1"], out, timeout=120, check=False)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "sweep refused, nothing launched" in text and "train.max_epochs=-1" in text
    assert not (out / "sweeps").exists() or not any((out / "sweeps").rglob("mlperf.log"))


def test_a_point_whose_slurm_job_is_still_alive_is_skipped_not_relaunched(out, tmp_path):
    """An unfinished run whose Slurm job squeue still lists (here RUNNING, or PENDING between
    requeued attempts) is skipped and the plan says so; one whose job is gone is rerun."""
    uri = f"sqlite:///{out}/mlflow.db"
    ensure_store(uri)
    exp = ensure_experiment(uri, "dlrm_dcnv2", str(out / "mlartifacts"))
    client = mlflow_client(out)
    for seed, task in ((0, "3"), (1, "4")):
        client.create_run(exp, tags={"pinchpoint.run_key": point_key(seed, out),
                                     "pinchpoint.kind": "point",
                                     "slurm_array_job_id": "12", "slurm_array_task_id": task})
    bin_dir = tmp_path / "bin"   # a stand-in squeue: job 12_3 is alive, 12_4 has left the queue
    bin_dir.mkdir()
    (bin_dir / "squeue").write_text("#!/bin/sh\necho '12_3|RUNNING'\n")
    (bin_dir / "squeue").chmod(0o755)
    import os
    proc = train(["-m", *QUICK, "seed=0,1", "hydra.sweeper.dry_run=true"], out, timeout=120,
                 env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    text = proc.stdout + proc.stderr
    assert "2 point(s), 1 to run, 0 already succeeded, 1 still running (skipped)" in text
    assert "skip seed=0" in text and "still running (Slurm job 12_3 RUNNING" in text
    assert "run  seed=1" in text and "unfinished" in text


def test_a_point_resumed_from_an_earlier_sweep_becomes_a_child_of_the_current_one(out):
    """Sweep A dies with its point mid-run (kill_at_step SIGKILLs the whole process group);
    sweep B resumes the point from its checkpoint, continuing the same MLflow run, which now
    hangs under B's parent (A's is kept in a tag)."""
    import subprocess
    import sys

    from conftest import ROOT
    args = [sys.executable, str(ROOT / "train.py"), "-m", *TINY_DLRM, "train.max_steps=6",
            "checkpoint.interval=2", f"output_root={out}"]
    seed_mlflow_store(out)
    killed = subprocess.run([*args, "fault=kill_at_step:3"], cwd=ROOT, capture_output=True,
                            text=True, timeout=240, start_new_session=True)
    assert killed.returncode == -9, killed.stderr[-3000:]
    train(args[2:], out, timeout=240)
    first, second = sorted((out / "sweeps").iterdir())
    parent_a = (first / "mlflow_parent_run_id").read_text().strip()
    parent_b = (second / "mlflow_parent_run_id").read_text().strip()
    [run] = points(out)
    assert run.data.tags["mlflow.parentRunId"] == parent_b != parent_a
    assert run.data.tags["pinchpoint.earlier_parent"] == parent_a
    assert run.info.status == "FINISHED"
