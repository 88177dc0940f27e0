"""Sweep resume (pinchpoint_grid): skip points whose config already succeeded, rerun the rest,
validate every point before launching any, and a dry run that launches nothing. Local launcher:
no Slurm needed (the Slurm rerun-after-scancel case is in test_slurm_cluster.py)."""
from __future__ import annotations

from types import SimpleNamespace

from conftest import TINY_DLRM, compose, mlflow_client, train
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


def seed_store(out, outcomes: dict[int, tuple[str, str]]) -> dict[int, str]:
    """Runs as earlier sweeps would have left them: seed -> (MLflow status, status tag)."""
    uri = f"sqlite:///{out}/mlflow.db"
    ensure_store(uri)
    exp = ensure_experiment(uri, "dlrm_dcnv2", str(out / "mlartifacts"))
    client, ids = mlflow_client(out), {}
    for seed, (status, tag) in outcomes.items():
        key = run_key(compose([*QUICK, f"seed={seed}"], out))
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
