"""Node-aware layouts and where collective bytes travel, without a cluster: the placement's rank
grid and its refusals, the intra/inter-node split of each collective kind, the fabric's sysfs
reading and tc arguments, and the Slurm request for a job that spans nodes."""
from __future__ import annotations

import pytest

from conftest import compose
from pinchpoint.cluster.fabric import counters, read_ib_ports, tbf_args
from pinchpoint.errors import ConfigError
from pinchpoint.parallel.dims import ParallelDims
from pinchpoint.parallel.placement import Placement
from pinchpoint.parallel.traffic import NodeMap, Traffic
from pinchpoint.runner.validation import validate

MB = 1 << 20


def layout(nodes: int, ep: int = 1, placement: dict | None = None, **degrees) -> Placement:
    sizes = {"pp": 1, "dp_replicate": 1, "dp_shard": 1, "cp": 1, "tp": 1, **degrees}
    return Placement(sizes, ep, nodes, placement or {})


# --- placement -------------------------------------------------------------------------------------
def test_default_placement_keeps_tp_and_hsdp_shard_inside_and_replicates_across():
    hsdp = layout(2, dp_replicate=2, dp_shard=2)
    assert hsdp.spans() == {"dp_shard": 1, "dp_replicate": 2}
    assert hsdp.groups("dp_shard") == [[0, 1], [2, 3]]      # ranks 0,1 on node 0
    tp = layout(2, tp=2, dp_shard=2)
    assert tp.groups("tp") == [[0, 1], [2, 3]] and tp.crossing() == ["dp_shard"]
    pp = layout(4, pp=2, dp_shard=2, tp=2)                   # 8 ranks, 2 per node
    assert pp.spans()["tp"] == 1 and pp.spans()["pp"] == 2
    assert "across 4 nodes: dp_shard2 pp2" in pp.describe()


def test_default_grid_is_init_device_mesh_row_major_grid():
    """One node, default placement: nothing changes from the plain row-major layout."""
    import numpy as np
    p = layout(1, pp=2, dp_replicate=2, dp_shard=2, tp=2)
    assert (p.grid.ravel() == np.arange(16)).all()


def test_a_dimension_placed_across_crosses_nodes_on_purpose():
    tp = layout(2, tp=2, dp_shard=2, placement={"tp": "across"})
    assert tp.groups("tp") == [[0, 2], [1, 3]] and tp.crossing() == ["tp"]
    ep = layout(2, ep=2, dp_shard=4, placement={"ep": "across"})
    assert ep.groups("ep") == [[0, 2], [1, 3]]
    assert layout(2, ep=2, dp_shard=4).groups("ep") == [[0, 1], [2, 3]]   # default: inside


@pytest.mark.parametrize("nodes,placement,degrees,field,says", [
    (2, {}, {"tp": 4}, "parallel.tp", "at most the 2 ranks of one node"),
    (2, {}, {"cp": 2, "tp": 2}, "parallel.cp", "at most the 2 ranks"),   # tp fits, cp not
    (1, {"tp": "across"}, {"tp": 2}, "parallel.placement.tp", "with one node it cannot"),
    (2, {"dp_shard": "sideways"}, {"dp_shard": 4}, "parallel.placement.dp_shard",
     "inside, auto, across"),
])
def test_a_placement_that_does_not_fit_is_refused_naming_the_field(nodes, placement, degrees,
                                                                   field, says):
    with pytest.raises(ConfigError) as err:
        layout(nodes, placement=placement, **degrees).check()
    assert err.value.field == field and says in str(err.value)


def test_validation_places_the_layout_on_the_slurm_nodes_before_submission():
    cfg = compose(["cluster=slurm", "cluster.nodes=2", "parallel=tp2", "model=llama31_8b",
                   "model.scale=smoke"])     # one rank per node: TP would cross
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert err.value.field == "parallel.tp" and "parallel.placement.tp=across" in str(err.value)
    # Locally (one node) the same degrees are fine: every rank is on this machine.
    validate(compose(["parallel=tp2", "model=llama31_8b", "model.scale=smoke"]))


def test_an_emulated_fabric_on_one_node_is_refused():
    with pytest.raises(ConfigError) as err:
        validate(compose(["fabric=ndr400", "parallel=ddp2"]))
    assert err.value.field == "fabric.gbps" and "cluster.nodes=2" in str(err.value)


def test_dims_build_their_layout_from_the_config():
    cfg = compose(["parallel=hsdp2x2", "parallel.placement.dp_replicate=inside",
                   "parallel.placement.dp_shard=across"])
    dims = ParallelDims.from_config(cfg.parallel, nodes=2)
    assert dims.layout().crossing() == ["dp_shard"]


# --- traffic -------------------------------------------------------------------------------------
TWO_BY_TWO = NodeMap(["node1", "node1", "node2", "node2"])


def split(rank: int, kind: str, nbytes: int, backend: str = "gloo", **kw):
    return Traffic(TWO_BY_TWO, rank, backend).split(kind, nbytes, **kw)


def test_ring_collectives_cross_where_the_ring_crosses_a_node_boundary():
    """Ranks 0,1 | 2,3: the ring's edges 1->2 and 3->0 cross, 0->1 and 2->3 do not."""
    assert split(1, "all_reduce", 64 * MB).inter_node == pytest.approx(1.5 * 64 * MB)
    assert split(0, "all_reduce", 64 * MB).inter_node == 0
    assert split(0, "all_reduce", 64 * MB).intra_node == pytest.approx(1.5 * 64 * MB)
    assert split(3, "all_gather", 16 * MB).inter_node == 3 * 16 * MB
    # gloo reduce-scatters as an all-reduce (measured); NCCL's ring sends (n-1)/n of it.
    assert split(1, "reduce_scatter", 64 * MB).inter_node == pytest.approx(1.5 * 64 * MB)
    assert split(1, "reduce_scatter", 64 * MB, "nccl").inter_node == pytest.approx(.75 * 64 * MB)
    # Inside one node (the HSDP shard group [0, 1]) nothing crosses.
    assert split(1, "all_gather", MB, group=[0, 1]).inter_node == 0


def test_all_to_all_and_point_to_point_follow_the_peers():
    a2a = split(0, "all_to_all", 4 * MB)               # a quarter to each rank, itself included
    assert (a2a.intra_node, a2a.inter_node) == (MB, 2 * MB)
    skewed = split(0, "all_to_all", 10, splits=[1, 1, 8, 0])
    assert (skewed.intra_node, skewed.inter_node) == (1, 8)
    assert split(1, "send_recv", 100, peer=2).inter_node == 100
    assert split(1, "send_recv", 100).inter_node == 0   # a receive: the sender counts it
    root = split(0, "broadcast", MB)                      # gloo: the root sends to each rank
    assert (root.intra_node, root.inter_node) == (MB, 2 * MB)
    assert split(2, "broadcast", MB).inter_node == 0


def test_a_rank_outside_the_group_sends_nothing():
    assert split(0, "all_reduce", MB, group=[2, 3]).inter_node == 0


# --- fabric: sysfs and tc ------------------------------------------------------------------------
def test_counters_and_infiniband_ports_are_read_from_sysfs(tmp_path):
    net = tmp_path / "class/net/eth0/statistics"
    net.mkdir(parents=True)
    (net / "tx_bytes").write_text("1000\n")
    (net / "rx_bytes").write_text("2000\n")
    port = tmp_path / "class/infiniband/mlx5_0/ports/1"
    (port / "counters").mkdir(parents=True)
    (port / "rate").write_text("400 Gb/sec (4X NDR)\n")
    (port / "state").write_text("4: ACTIVE\n")
    (port / "link_layer").write_text("InfiniBand\n")
    (port / "counters/port_xmit_data").write_text("250\n")   # 4-byte words
    (port / "counters/port_rcv_data").write_text("500\n")
    assert counters("eth0", str(tmp_path)) == {"eth0_tx_bytes": 1000, "eth0_rx_bytes": 2000,
                                               "ib_mlx5_0_1_tx_bytes": 1000,
                                               "ib_mlx5_0_1_rx_bytes": 2000}
    assert read_ib_ports(str(tmp_path)) == [{"device": "mlx5_0", "port": "1",
                                            "rate": "400 Gb/sec (4X NDR)", "state": "4: ACTIVE",
                                            "link_layer": "InfiniBand"}]


def test_the_shaper_is_a_token_bucket_under_pinchpoints_own_handle():
    args = tbf_args("eth0", 0.25, 256)
    assert args[:9] == ["tc", "qdisc", "replace", "dev", "eth0", "root", "handle", "7070:", "tbf"]
    assert "250000kbit" in args and "256kb" in args


# --- Slurm request -------------------------------------------------------------------------------
def test_a_job_across_nodes_gets_them_to_itself_and_an_emulated_fabric_its_feature():
    from pinchpoint.cluster.request import slurm_request
    cfg = compose(["cluster=slurm", "cluster.nodes=2", "parallel=ddp4", "fabric=eth100"])
    params = slurm_request(cfg, "x").params
    assert params["exclusive"] is True and params["constraint"] == "emulated_fabric"
    one = slurm_request(compose(["cluster=slurm", "parallel=ddp2"]), "x").params
    assert "exclusive" not in one and "constraint" not in one


def test_preflight_refuses_an_emulated_fabric_on_nodes_that_cannot_shape():
    from pinchpoint.cluster.preflight import ClusterInfo, check, parse_sinfo
    sinfo = ("debug*|up|infinite|node1|4|1000|(null)|emulated_fabric\n"
             "debug*|up|infinite|node2|4|1000|(null)|(null)\n")
    info = ClusterInfo(parse_sinfo(sinfo))
    cfg = compose(["cluster=slurm", "cluster.nodes=2", "parallel=ddp4", "fabric=ndr400"])
    with pytest.raises(ConfigError) as err:
        check(cfg, info)
    assert err.value.field == "fabric.gbps" and "has 1" in str(err.value)
    check(compose(["cluster=slurm", "cluster.nodes=2", "parallel=ddp4"]), info)


def test_the_sweep_names_the_rank_that_failed_first_not_the_ones_that_lost_it():
    from hydra.core.utils import JobReturn, JobStatus

    from pinchpoint.sweepers.slurm_launcher import root_cause
    lost = RuntimeError("[pair.cc:553] Connection closed by peer [10.77.0.12]:62621")
    cause = IndexError("index 0 is out of bounds")
    results = [JobReturn(status=JobStatus.FAILED, _return_value=e)
               for e in (lost, lost, cause, lost)]
    assert root_cause(results)._return_value is cause


def test_slurm_node_lists_are_expanded_to_names():
    from pinchpoint.cluster.accounting import expand_hostlist
    assert expand_hostlist("node[1-2]") == ["node1", "node2"]
    assert expand_hostlist("gpu[01-02,07],login1") == ["gpu01", "gpu02", "gpu07", "login1"]


def test_the_fabric_report_sums_every_rank_and_reads_each_node_once():
    """Per kind, what all ranks sent (rank 0 alone may send nothing across: its ring successor
    is on its own node); per node, the link counters of its first rank."""
    from pinchpoint.cluster.fabric_meter import report, summary_metrics
    ranks = []
    for rank, (host, reads) in enumerate([("n1", True), ("n1", False), ("n2", True),
                                          ("n2", False)]):
        inter = 100.0 if rank in (1, 3) else 0.0      # ring edges 1->2 and 3->0 cross
        ranks.append({"host": host, "reads": reads, "interface": "eth0",
                      "first": {"eth0_tx_bytes": 0, "eth0_rx_bytes": 0},
                      "last": {"eth0_tx_bytes": 102, "eth0_rx_bytes": 101} if reads else {},
                      "samples": [], "sent": (100.0 - inter, inter),
                      "kinds": {"all_reduce": (100.0 - inter, inter)}})
    rep = report(ranks)
    assert rep["per_node"]["n1"]["tx_bytes"] == 102 and rep["measured_over_model"] == 1.02
    metrics = summary_metrics(rep, steps=2)
    assert metrics["comm_all_reduce_inter_node_bytes_per_step"] == 100.0   # 200 over 2 steps
    assert metrics["comm_all_reduce_intra_node_bytes_per_step"] == 100.0
