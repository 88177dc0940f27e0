"""End to end through train.py: a GPT-OSS run with experts over 2 ranks records the router
statistics, the all-to-all traffic and its dispatch/combine timeline slices; EP4 trains the
same losses as one process."""
from __future__ import annotations

import json

import pytest

import harness
from conftest import mlflow_client, train

SMOKE = ["model=gpt_oss_20b", "model.scale=smoke", "train.max_steps=4",
         "tracking.system_metrics=false", "dataset.train_tokens=40000",
         "dataset.validation_tokens=4000"]


@pytest.mark.slow
def test_ep2_run_records_router_and_all_to_all(out):
    train(SMOKE + ["parallel=ep2"], out, timeout=600)
    client = mlflow_client(out)
    exp = client.get_experiment_by_name("gpt_oss_20b")
    run = client.search_runs([exp.experiment_id])[0]
    m = run.data.metrics
    for key in ("moe_tokens_per_expert_min", "moe_tokens_per_expert_max", "moe_load_imbalance",
                "moe_dropped_fraction", "moe_router_entropy", "moe_balancing_loss",
                "active_parameters", "total_parameters"):
        assert key in m, key
    assert m["moe_load_imbalance"] >= 1.0 and m["moe_dropped_fraction"] == 0.0
    assert m["active_parameters"] < m["total_parameters"]
    assert m["comm/all_to_all/calls_per_step"] > 0
    assert 0 < m["moe_all_to_all_offrank_bytes_per_step"] < m["comm/all_to_all/bytes_per_step"]
    folder = next((out / "runs").iterdir())
    trace = json.loads((folder / "timeline.json").read_text())
    names = {e["name"] for e in trace["traceEvents"]}
    assert {"moe dispatch", "moe combine", "moe dispatch backward",
            "moe combine backward"} <= names
    log = (folder / "mlperf.log").read_text()
    assert '"key": "expert_parallelism", "value": 2' in log


@pytest.mark.slow
def test_ep4_matches_single_process(tmp_path):
    base = SMOKE[:2] + SMOKE[4:] + ["tracking.enabled=false"]
    root = str(tmp_path)
    single = harness.run_layout(base, root, 3)["losses"]
    ep4 = harness.run_layout(base + ["parallel=ep4"], root, 3)["losses"]
    assert ep4 == pytest.approx(single, abs=2e-5)
