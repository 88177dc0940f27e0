"""Runs across nodes on a real 4-node Slurm cluster on this machine (node1..node4, each a network
namespace whose eth0 sits on a bridge; launchers/slurm_up.sh --nodes 4): every workload's
multi-node layout through submitit on 2 nodes and on 4, the node map and the layout's crossing dimension in MLflow,
an emulated fabric shaping the node links, the collectives' modelled inter-node bytes against
the links' own counters, and layouts refused before anything is submitted.

Four workloads run by default on 2 nodes (DLRM's all-to-all, Llama's HSDP, GPT-OSS's experts,
FLUX.1) and DLRM on 4; the others with --full (each run is ~35-60 s of a 2-core machine)."""
from __future__ import annotations

import glob
import json
import re
import subprocess
from pathlib import Path

import pytest

from conftest import mlflow_client, train
from pinchpoint.workloads import spec, workload_names

pytestmark = pytest.mark.slurm
DEFAULT = ("dlrm_dcnv2", "llama31_8b", "gpt_oss_20b", "flux1")
FAST = ["tracking.system_metrics=false", "train.progress_every_s=1", "train.max_steps=4"]


def across_two_nodes(name: str, extra: list[str], out: Path, cluster, **kw):
    s = spec(name)
    return train(["-m", "cluster=slurm", "cluster.nodes=2", f"model={name}", *s.smoke,
                  *s.multi_node_layout, *FAST, *extra], out, env=cluster.env, **kw)


def point_run(out: Path, experiment: str):
    client = mlflow_client(out)
    exp = client.get_experiment_by_name(experiment)
    runs = [r for r in client.search_runs([exp.experiment_id])
            if r.data.tags.get("pinchpoint.kind") == "point"]
    assert len(runs) == 1, [r.data.tags for r in runs]
    return runs[0]


def summary(out: Path) -> dict:
    [path] = glob.glob(str(out / "sweeps" / "*" / "0" / "phase_summary.json"))
    return json.loads(Path(path).read_text())


def rank_hosts(out: Path) -> dict[int, tuple[str, int, int]]:
    """global rank -> (host, node index, local rank), as each task reported it."""
    found = {}
    for log in glob.glob(str(out / "sweeps" / "*" / ".submitit" / "*" / "*_log.out")):
        m = re.search(r"hostname=(\w+), local_rank=(\d+)\(\d+\), node=(\d+)\(\d+\), "
                      r"global_rank=(\d+)", Path(log).read_text())
        if m:
            found[int(m.group(4))] = (m.group(1), int(m.group(3)), int(m.group(2)))
    return found


def test_each_node_is_its_own_host_with_its_own_address(multinode_cluster):
    n = len(multinode_cluster.nodes)
    proc = subprocess.run(["srun", f"-N{n}", "--ntasks-per-node=1", "sh", "-c",
                           "echo $(hostname) $(cat /sys/class/net/eth0/address) "
                           "$(ip -4 -o addr show eth0 | awk '{print $4}')"],
                          env={**__import__("os").environ, **multinode_cluster.env},
                          capture_output=True, text=True, timeout=60, check=True)
    lines = sorted(proc.stdout.split("\n")[:-1])
    assert [l.split()[0] for l in lines] == multinode_cluster.nodes
    assert len({l.split()[1] for l in lines}) == n and len({l.split()[2] for l in lines}) == n


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n in DEFAULT else
                                               pytest.mark.full) for n in workload_names()])
def test_every_workload_runs_across_two_nodes(name, multinode_cluster, out):
    across_two_nodes(name, ["checkpoint.interval=2"], out, multinode_cluster)
    ranks = rank_hosts(out)
    # Ranks are placed node by node, and each knows its node and local rank.
    assert [ranks[r][1:] for r in range(4)] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert ranks[0][0] == ranks[1][0] != ranks[2][0] == ranks[3][0]
    run = point_run(out, name)
    tags = run.data.tags
    assert tags["node_list"] == f"{ranks[0][0]},{ranks[2][0]}" and tags["nodes"] == "2"
    assert tags["layout_across_nodes"] != "none" and tags["fabric_emulated"] == "false"
    assert tags["fabric_interface"] == "eth0"
    s = summary(out)
    # Something crossed the node boundary, and the links saw it.
    assert s["fabric_inter_node_bytes_model"] > 0 and s["fabric_tx_bytes_measured"] > 0
    assert any(v > 0 for k, v in s.items() if k.endswith("_inter_node_bytes_per_step"))
    assert run.info.status == "FINISHED"


# Four nodes x 2 ranks: each workload's 2-node layout, the dimension that crossed 2 nodes now
# spanning 4 (and the smoke batch grown so every data-parallel rank still has a micro-batch).
FOUR_NODES = {
    "dlrm_dcnv2": ["parallel=ep8"],
    "llama31_8b": ["parallel.dp_replicate=4", "model.smoke.global_batch_size=16"],
    "llama31_405b": ["parallel.dp_shard=4"],
    "llama2_70b_lora": ["parallel.dp_replicate=4", "model.smoke.global_batch_size=16",
                        "model.smoke.eval_every_samples=16"],
    "flux1": ["parallel.dp_replicate=4"],
    "gpt_oss_20b": ["parallel.dp_shard=8", "model.smoke.global_batch_size=16"],
    "deepseek_v3_671b": ["parallel.dp_shard=4", "model.smoke.global_batch_size=16"],
}


def test_four_nodes_cover_every_workload():
    assert set(FOUR_NODES) == set(workload_names())


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n == "dlrm_dcnv2" else
                                               pytest.mark.full) for n in FOUR_NODES])
def test_every_workload_runs_across_four_nodes(name, multinode_cluster, out):
    s = spec(name)
    train(["-m", "cluster=slurm", "cluster.nodes=4", f"model={name}", *s.smoke,
           *s.multi_node_layout, *FOUR_NODES[name], *FAST], out, env=multinode_cluster.env)
    ranks = rank_hosts(out)
    assert [ranks[r][1:] for r in range(8)] == [(r // 2, r % 2) for r in range(8)]
    hosts = [ranks[r][0] for r in range(0, 8, 2)]
    assert len(set(hosts)) == 4 and all(ranks[r][0] == ranks[r + 1][0] for r in range(0, 8, 2))
    run = point_run(out, name)
    tags = run.data.tags
    assert tags["node_list"] == ",".join(hosts) and tags["nodes"] == "4"
    assert tags["layout_across_nodes"] != "none"
    assert run.info.status == "FINISHED"
    assert summary(out)["fabric_inter_node_bytes_model"] > 0


def test_an_emulated_fabric_shapes_the_links_and_the_counters_match_the_collectives(
        multinode_cluster, out):
    """DLRM ep4 over 2 nodes at 0.1 Gbit/s: the run is tagged with its fabric, no node link
    sends faster than the shaped rate, and the links' bytes match what the all-to-alls and
    all-reduces were modelled to send across nodes."""
    across_two_nodes("dlrm_dcnv2", ["fabric=eth25", "fabric.gbps=0.1", "train.max_steps=12",
                                    "train.evals_per_epoch=1"], out, multinode_cluster)
    tags = point_run(out, "dlrm_dcnv2").data.tags
    assert tags["fabric"] == "eth25" and tags["fabric_emulated"] == "true"
    assert float(tags["fabric_gbps"]) == 0.1 and "25 Gb Ethernet" in tags["fabric_stands_for"]
    s = summary(out)
    assert s["fabric_measured_over_model"] == pytest.approx(1.0, abs=0.05), s
    assert s["comm_all_to_all_inter_node_bytes_per_step"] > 0
    [timeline] = glob.glob(str(out / "sweeps" / "*" / "0" / "timeline.json"))
    events = json.loads(Path(timeline).read_text())["traceEvents"]
    tracks = {e["name"] for e in events if e.get("ph") == "C" and e["name"].startswith("fabric")}
    assert len(tracks) == 2, tracks
    shaped_mb_per_s = 0.1e9 / 8 / 1e6
    peak = max(e["args"]["sent"] for e in events if e.get("name") in tracks)
    assert 0 < peak <= shaped_mb_per_s * 1.1, (peak, shaped_mb_per_s)


def test_a_layout_that_does_not_fit_the_nodes_is_refused_before_submission(
        multinode_cluster, out):
    proc = train(["-m", "cluster=slurm", "cluster.nodes=2", "model=llama31_8b",
                  "model.scale=smoke", "parallel=tp2"], out, env=multinode_cluster.env,
                 check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "parallel.tp=2 is not allowed: at most the 1 ranks of one node" in proc.stderr
    assert not glob.glob(str(out / "sweeps" / "*" / ".submitit" / "*"))   # nothing submitted
