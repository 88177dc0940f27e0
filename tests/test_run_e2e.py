"""End to end: train.py reaches the target, logs MLPerf-compliant, records everything in MLflow."""
import json
import math

import pytest

from conftest import TINY_DLRM, mlflow_client, train
from pinchpoint.telemetry.mlperf_log import compliance_check, time_to_train_s

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e") / "outputs"
    proc = train([*TINY_DLRM, "tracking.system_metrics=true",
                  "tracking.system_metrics_interval_s=0.5"], out)
    folder = next(out.glob("runs/*"))
    return out, folder, proc


def test_reaches_target_and_prints_summary(run):
    out, folder, proc = run
    summary = json.loads((folder / "phase_summary.json").read_text())
    assert summary["status"] == "success"
    assert summary["final_quality"] >= summary["quality_target"]
    assert summary["quality_target"] < summary["quality_best_reachable"]
    assert "status           success" in proc.stdout and "time_to_train_s" in proc.stdout


def test_mlperf_log_is_compliant_and_ttt_is_the_summarizers(run):
    out, folder, _ = run
    log = folder / "mlperf.log"
    ok, output = compliance_check(str(log))
    assert ok, output
    summary = json.loads((folder / "phase_summary.json").read_text())
    assert summary["time_to_train_s"] == time_to_train_s(str(log))
    lines = [json.loads(l.split(":::MLLOG ", 1)[1]) for l in log.read_text().splitlines()]
    start = next(l["time_ms"] for l in lines if l["key"] == "run_start")
    stop = next(l for l in lines if l["key"] == "run_stop")
    assert math.isclose(summary["time_to_train_s"], (stop["time_ms"] - start) / 1000)
    assert stop["metadata"]["status"] == "success"
    keys = {l["key"] for l in lines}
    assert {"cache_clear", "init_start", "init_stop", "global_batch_size", "opt_name",
            "opt_adagrad_epsilon", "eval_accuracy", "train_samples", "eval_samples"} <= keys


def test_phases_tile_the_loop(run):
    _, folder, _ = run
    s = json.loads((folder / "phase_summary.json").read_text())
    phases = [k for k in s if k.startswith("phase_") and k.endswith("_s")]
    assert len(phases) == 6
    assert sum(s[k] for k in phases) == pytest.approx(s["train_loop_seconds"], rel=1e-9)
    assert sum(s[f"{k[6:-2]}_fraction"] for k in phases) == pytest.approx(1.0)
    assert s["bottleneck"] == max(phases, key=s.get)[6:-2]
    assert s["step_time_p95_s"] >= s["step_time_p50_s"] > 0


def test_timeline_trace(run):
    _, folder, _ = run
    trace = json.loads((folder / "timeline.json").read_text())
    names = {e["name"] for e in trace["traceEvents"]}
    assert {"run_start (start)", "eval_accuracy", "data_wait", "forward_backward",
            "eval"} <= names
    assert any(n.startswith("step ") for n in names)


def test_mlflow_run_has_metrics_tags_and_artifacts(run):
    out, folder, _ = run
    client = mlflow_client(out)
    exp = client.get_experiment_by_name("dlrm_dcnv2")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    (r,) = client.search_runs([exp.experiment_id])
    assert r.info.status == "FINISHED" and r.data.tags["status"] == "success"
    assert r.info.run_name.startswith("dlrm_dcnv2 local mmap=on bs=512")
    m = r.data.metrics
    for key in ("time_to_train_s", "samples_to_target", "throughput_samples_per_s",
                "step_time/p50_s", "step_time/p95_s", "phase/data_wait_fraction",
                "phase/forward_backward_fraction", "phase/eval_fraction", "data/bytes_read",
                "data/read_mb_per_s", "eval_auroc", "train_loss", "success"):
        assert key in m, key
    assert not any(k.startswith("comm/") for k in m)   # one process: no collective was called
    assert m["time_to_train_s"] == json.loads((folder / "phase_summary.json").read_text())[
        "time_to_train_s"]
    assert any(k.startswith("system/cpu_utilization") for k in m), sorted(m)
    t = r.data.tags
    assert t["bottleneck"] in ("data_wait", "forward_backward", "optimizer", "eval")
    assert t["storage_emulated"] == "false" and t["git_sha"] and t["host"]
    assert r.data.params["dataset.batch_size"] == "512"
    assert not any(k.startswith(("model.full.", "model.smoke.", "gpu.")) for k in r.data.params)
    assert {a.path for a in client.list_artifacts(r.info.run_id, "plots")} == {"plots/phases.png"}
    artifacts = {a.path for a in client.list_artifacts(r.info.run_id)}
    assert {"mlperf.log", "timeline.json", "config_resolved.yaml",
            "phase_summary.json"} <= artifacts
