"""A workload defined entirely under tests/ (tests/plugin_workload) registers from its own
folder and runs through train.py: adding a workload touches no file of pinchpoint itself."""
from __future__ import annotations

import json
import os

from conftest import ROOT, train

PLUGIN = ROOT / "tests" / "plugin_workload"


def test_out_of_tree_workload_trains_through_train_py(out):
    env = {"PINCHPOINT_WORKLOADS": "toy_classifier",
           "PYTHONPATH": os.pathsep.join([str(PLUGIN), os.environ.get("PYTHONPATH", "")])}
    args = ["model=toy_classifier", f"hydra.searchpath=[file://{PLUGIN / 'conf'}]",
            "checkpoint.interval=2", "tracking.system_metrics=false", "train.max_epochs=4",
            "dataset.target_accuracy=0.9"]
    train(args, out, env=env)
    (summary,) = list(out.glob("runs/*/phase_summary.json"))
    s = json.loads(summary.read_text())
    assert s["status"] == "success" and s["quality_metric"] == "accuracy"
    assert s["final_quality"] >= 0.9 and s["checkpoint_writes"] >= 1
    refused = train([*args, "model.hidden=0"], out, env=env, check=False)
    assert refused.returncode == 2 and "model.hidden=0 is not allowed" in refused.stderr
