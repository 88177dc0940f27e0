"""A Hydra multirun is one MLflow parent run with one child per point."""
import pytest

from conftest import TINY_DLRM, mlflow_client, train

pytestmark = pytest.mark.slow


def test_two_point_sweep_parent_and_children(tmp_path):
    out = tmp_path / "outputs"
    train(["-m", "storage=local,nvme", *TINY_DLRM], out)
    client = mlflow_client(out)
    exp = client.get_experiment_by_name("dlrm_dcnv2")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("pinchpoint.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("pinchpoint.kind") == "point"]
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.metrics["points"] == 2
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    names = sorted(c.info.run_name for c in children)
    assert names[0].startswith("dlrm_dcnv2 local mmap=on bs=512")
    assert names[1].startswith("dlrm_dcnv2 nvme mmap=on bs=512")
    for c in children:
        assert c.info.status == "FINISHED" and c.data.tags["status"] == "success"
        assert {"time_to_train_s", "throughput_samples_per_s", "phase/data_wait_fraction",
                "eval_auroc"} <= set(c.data.metrics)
    emulated = {c.data.tags["storage_tier"]: c.data.tags["storage_emulated"] for c in children}
    assert emulated == {"local": "false", "nvme": "true"}
    assert len(list(out.glob("sweeps/*/[01]/mlperf.log"))) == 2
