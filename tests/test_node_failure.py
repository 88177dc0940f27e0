"""A node dies mid-run: one of a 2-node job's nodes loses its link and every process
(launchers/slurm_node.sh kill), Slurm sets it DOWN and requeues the job, the next attempt runs on
the nodes it gets and resumes from the newest checkpoint in the same MLflow run, and the run's
timeline shows both attempts with their node lists."""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, TINY_DLRM, mlflow_client, seed_mlflow_store

pytestmark = pytest.mark.slurm
# Emulated NFS latency (65 ms x 28 reads a step) makes a step ~2 s: the kill lands mid-run.
SLOW = ["cluster=slurm", "cluster.nodes=2", "parallel=ep4", *TINY_DLRM,
        "dataset.target_margin=0.3", "storage=nfs", "storage.emulation.latency_ms=65",
        "checkpoint.interval=2", "train.max_steps=10", "tracking.experiment=node_failure"]


def slurm(*args: str, env: dict) -> str:
    return subprocess.run(args, env={**os.environ, **env}, capture_output=True, text=True,
                          check=True).stdout


def wait_for(what: str, check, timeout: float, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = check()
        if found:
            return found
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the sweep ended before {what}:\n{proc.stdout.read()[-4000:]}")
        time.sleep(0.5)
    pytest.fail(f"no {what} within {timeout:.0f} s")


def test_a_node_dies_the_job_is_requeued_and_resumes_in_the_same_run(multinode_cluster,
                                                                     tmp_path):
    out, storage, env = tmp_path / "outputs", tmp_path / "nfs", multinode_cluster.env
    seed_mlflow_store(out)
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "-m", *SLOW, f"storage.root={storage}",
         f"output_root={out}"], cwd=ROOT, env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    victim = None
    try:
        wait_for("checkpoint", lambda: glob.glob(str(storage / "checkpoints/*/step_*.json")),
                 240, proc)
        job = wait_for("job", lambda: slurm("squeue", "-h", "-n", "pinchpoint-node_failure",
                                            "-o", "%i %N", env=env).split(), 30)
        first_nodes = slurm("scontrol", "show", "hostnames", job[1], env=env).split()
        victim = first_nodes[1]             # the node of ranks 2 and 3
        subprocess.run([str(ROOT / "launchers/slurm_node.sh"), "kill", victim],
                       env={**os.environ, **env}, check=True)
        text, _ = proc.communicate(timeout=420)
    finally:
        if proc.poll() is None:
            proc.kill()
        if victim:
            subprocess.run([str(ROOT / "launchers/slurm_node.sh"), "revive", victim],
                           env={**os.environ, **env})
    assert proc.returncode == 0, text[-4000:]
    assert "a node failed: resumes from its newest checkpoint" in text, text[-3000:]

    client = mlflow_client(out)
    exp = client.get_experiment_by_name("node_failure")
    [run] = [r for r in client.search_runs([exp.experiment_id])
             if r.data.tags.get("pinchpoint.kind") == "point"]
    m, tags = run.data.metrics, run.data.tags
    assert run.info.status == "FINISHED" and tags["status"] in ("success", "aborted")
    assert m["restarts"] == 1 and m["slurm_attempts"] == 2 and m["slurm_requeues"] == 1
    # Each attempt's nodes: the second ran without the dead node.
    assert victim in tags["node_list_attempt_0"].split(",")
    assert victim not in tags["node_list_attempt_1"].split(",")
    assert tags["node_list"] == tags["node_list_attempt_1"]
    # One run: its loss history has every eval step once, across both attempts.
    steps = [x.step for x in client.get_metric_history(run.info.run_id, "train_loss")]
    assert steps == sorted(set(steps)), steps

    [timeline] = glob.glob(str(out / "sweeps" / "*" / "0" / "timeline.json"))
    events = json.loads(Path(timeline).read_text())["traceEvents"]
    attempts = sorted(e["args"]["name"] for e in events
                      if e.get("name") == "thread_name" and e["args"]["name"].startswith("attempt"))
    assert len(attempts) == 2, attempts
    assert attempts[0].startswith("attempt 0 (NODE_FAIL) on ") and victim in attempts[0]
    # The run draws the job from accounting as it ends: its second attempt is still running.
    assert attempts[1].startswith("attempt 1 (RUNNING) on ") and victim not in attempts[1]
    ranks = {e["args"]["name"] for e in events if e.get("name") == "process_name"}
    assert {"attempt 0 rank 0", "attempt 1 rank 0"} <= ranks, ranks   # both attempts' tracks
