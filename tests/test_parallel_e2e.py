"""Multi-rank runs end to end: the signature sweep, submitit-adopted ranks, a failing rank."""
import json

import psutil
import pytest

from conftest import TINY_DLRM, compose, mlflow_client, seed_mlflow_store, train

pytestmark = pytest.mark.slow
FAST = [*TINY_DLRM, "train.evals_per_epoch=2"]


def _children(out):
    client = mlflow_client(out)
    exp = client.get_experiment_by_name("dlrm_dcnv2")
    runs = client.search_runs([exp.experiment_id])
    return [r for r in runs if r.data.tags.get("pinchpoint.kind") == "point"]


def test_signature_sweep_ep8_on_nvme_and_nfs(tmp_path):
    """python train.py -m model=dlrm parallel=ep8 storage=nvme,nfs (at test scale)."""
    from omegaconf import OmegaConf

    from pinchpoint.workloads.dlrm_dcnv2.parallelize import all_to_all_bytes_per_step

    out = tmp_path / "outputs"
    train(["-m", "model=dlrm", "parallel=ep8", "storage=nvme,nfs", *FAST], out, timeout=600)
    children = _children(out)
    assert sorted(c.info.run_name for c in children) == [
        "dlrm_dcnv2 nfs ep8 mmap=on bs=512", "dlrm_dcnv2 nvme ep8 mmap=on bs=512"]
    arch = OmegaConf.to_object(compose(["model=dlrm"]).model).proxy
    expected = all_to_all_bytes_per_step(arch, world=8, per_rank_batch=512 // 8, rank=0)
    for c in children:
        m = c.data.metrics
        assert c.data.tags["status"] == "success" and m["world_size"] == 8
        assert c.data.tags["launcher"] == "spawn"
        assert m["comm/all_to_all/bytes_per_step"] == expected > 0
        assert m["comm/all_to_all/calls_per_step"] == 3
        assert m["comm/all_reduce/bytes_per_step"] > 0 and m["phase/communication_fraction"] > 0
        assert m["ranks/data_wait_s_max"] >= m["ranks/data_wait_s_mean"] \
            >= m["ranks/data_wait_s_min"]


def test_submitit_local_ranks_are_adopted(tmp_path):
    # 4 tasks, not 8: the adoption is the same, and 8 processes importing torch on a 2-core
    # CI box cost a minute (the signature sweep above already runs 8 ranks).
    out = tmp_path / "outputs"
    train(["-m", "hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=4",
           "parallel=ep4", *FAST], out, timeout=600)
    (child,) = _children(out)
    assert child.data.tags["launcher"] == "submitit"  # adopted, not spawned again
    assert child.data.metrics["world_size"] == 4 and child.data.tags["status"] == "success"
    logs = list(out.glob("sweeps/*/.submitit/*/*_log.out"))
    assert len(logs) == 4  # submitit's 4 tasks are the 4 ranks


def test_failing_rank_fails_the_run_fast_and_leaves_nothing(tmp_path):
    out = tmp_path / "outputs"
    proc = train(["parallel=ddp2", "fault=raise_at_step:3", *FAST], out, check=False,
                 timeout=300)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "rank 1 of 2 failed" in text and "injected fault on rank 1 at step 3" in text
    client = mlflow_client(out)
    (run,) = client.search_runs([client.get_experiment_by_name("dlrm_dcnv2").experiment_id])
    assert run.info.status == "FAILED" and run.data.tags["status"] == "failed"
    leftovers = [p for p in psutil.process_iter(["cmdline"])
                 if any(str(out) in part for part in (p.info["cmdline"] or []))]
    assert not leftovers, leftovers


def test_submitit_task_count_mismatch_is_a_clear_error(tmp_path):
    out = tmp_path / "outputs"
    proc = train(["-m", "hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=1",
                  "parallel=ep2", *FAST], out, check=False, timeout=300)
    assert proc.returncode != 0
    logs = "".join(p.read_text() for p in out.glob("sweeps/*/.submitit/*/*_log.err"))
    assert "hydra.launcher.tasks_per_node=2" in logs + proc.stderr


def test_torchrun_ranks_are_adopted(tmp_path):
    import subprocess
    import sys

    from conftest import ROOT
    from pinchpoint.runner.ranks import free_port as _free_port
    out = tmp_path / "outputs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           f"--master_port={_free_port()}", str(ROOT / "train.py"), "parallel=ddp2", *FAST,
           f"output_root={out}"]
    seed_mlflow_store(out)
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    client = mlflow_client(out)
    runs = client.search_runs([client.get_experiment_by_name("dlrm_dcnv2").experiment_id])
    assert len(runs) == 1  # only rank 0 talks to MLflow
    assert runs[0].data.tags["launcher"] == "torchrun"
    assert runs[0].data.metrics["world_size"] == 2
