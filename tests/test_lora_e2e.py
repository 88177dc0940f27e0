"""python train.py model=llama2_70b_lora end to end: the MLPerf log carries the LoRA keys and the
base's eval loss is recorded; the proxy (slow) reaches its target with a compliant open log."""
import json
import subprocess
import sys

import pytest
from conftest import train

from pinchpoint.workloads.registry import spec


def run_folder(out):
    (folder,) = (out / "runs").iterdir()
    return folder


def mlperf_keys(folder) -> dict:
    events = {}
    for line in open(folder / "mlperf.log"):
        if ":::MLLOG" in line:
            event = json.loads(line.split(":::MLLOG", 1)[1])
            events.setdefault(event["key"], event["value"])
    return events


@pytest.mark.slow
def test_smoke_run_logs_lora_keys_and_base_loss(tmp_path):
    train(["model=llama2_70b_lora", *spec("llama2_70b_lora").smoke, "tracking.enabled=false",
           "train.threads=1"], tmp_path)
    folder = run_folder(tmp_path)
    keys = mlperf_keys(folder)
    assert keys["submission_benchmark"] == "llama2_70b_lora"
    assert keys["lora_rank"] == 16 and keys["lora_alpha"] == 32.0
    assert keys["opt_gradient_clip_norm"] == 0.3 and keys["opt_adamw_weight_decay"] == 1e-4
    summary = json.load(open(folder / "phase_summary.json"))
    assert summary["base_eval_loss"] > summary["quality_best_reachable"]
    assert 0 < summary["trainable_parameters"] < summary["base_parameters"]


@pytest.mark.slow
def test_proxy_reaches_target_with_a_compliant_log(tmp_path):
    train(["model=llama2_70b_lora", "tracking.enabled=false"], tmp_path, timeout=1800)
    folder = run_folder(tmp_path)
    summary = json.load(open(folder / "phase_summary.json"))
    assert summary["status"] == "success"
    assert summary["final_quality"] <= summary["quality_target"] < summary["base_eval_loss"]
    check = subprocess.run([sys.executable, "-m", "mlperf_logging.compliance_checker", "--usage",
                            "training", "--ruleset", "6.0.0", str(folder / "mlperf.log")],
                           capture_output=True, text=True, cwd=tmp_path)
    assert "SUCCESS" in check.stdout + check.stderr, check.stdout + check.stderr
