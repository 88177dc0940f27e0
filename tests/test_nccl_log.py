"""NCCL's own log (telemetry/nccl_log.py): the variables set before the process group forms, and
the parser over NCCL INFO lines quoted from NCCL's issue threads (tests/data/nccl/*.nccl.txt, each
file naming its thread)."""
from __future__ import annotations

import os

import pytest
from omegaconf import OmegaConf

from pinchpoint.runner import ranks
from pinchpoint.runner.info import JobInfo
from pinchpoint.telemetry import nccl_log
from pinchpoint.telemetry.timeline import Timeline

DATA = os.path.join(os.path.dirname(__file__), "data", "nccl")
NCCL_VARS = ("NCCL_DEBUG", "NCCL_DEBUG_SUBSYS", "NCCL_DEBUG_FILE")


def fixture(name: str) -> nccl_log.NcclInit:
    return nccl_log.parse_file(os.path.join(DATA, name))


# --- the parser on NCCL's real lines ---------------------------------------------------------------
def test_two_nodes_ib_init():
    got = fixture("ib_2nodes_16ranks.nccl.txt")
    p = got.params()
    assert (p["nccl.ranks"], p["nccl.nodes"], p["nccl.local_ranks"], p["nccl.mnnvl"]) == \
        ("16", "2", "8", "0")
    assert p["nccl.channels"] == "8"                          # "Channel 00/08 :"
    w = got.world
    assert sorted(w.rings) == [0, 1, 2, 3, 4]
    assert w.rings[1] == "0 5 4 7 6 3 10 9 8 13 12 15 14 11 2 1"
    assert w.trees.startswith("[0] 2/-1/-1->1->0 [1] -1/-1/-1->1->0")
    assert got.transports == {"P2P/direct pointer/read": 10, "NET/IB": 4}
    assert p["nccl.transports"] == "NET/IB=4, P2P/direct pointer/read=10"
    # seven communicator handles (8 ranks in one process; rank 2's comm line is not quoted)
    assert len(got.communicators) == 7
    assert got.communicators["0x8d57d40"].complete                   # rank 0: Init COMPLETE
    assert got.communicators["0x8d57d40"].init_s == 1.08             # its "Init timings" line
    assert got.communicators["0x8ec0ac0"].init_s == 1.08
    assert not got.communicators["0x8e0c400"].complete               # rank 3: not quoted
    assert p["nccl.init_s"] == "1.08"


def test_version_and_cumem_transport():
    got = fixture("version_p2p_cumem.nccl.txt")
    assert got.version == "2.21.5+cuda12.4"                # a line without NCCL's prefix
    assert got.transports == {"P2P/CUMEM": 8}
    assert got.params()["nccl.version"] == "2.21.5+cuda12.4"


@pytest.mark.parametrize("name, net, devices, network", [
    ("net_devices.nccl.txt", "NET/IB", ["mlx5_0:1/IB", "mlx5_1:1/IB", "mlx5_2:1/IB", "mlx5_3:1/IB"],
     "IB"),
    ("roce_version.nccl.txt", "NET/IB", ["mlx5_10:1/RoCE", "mlx5_11:1/RoCE"], "IB"),
    ("sharp_devices.nccl.txt", "NET/IB", ["mlx5_0:1/IB/SHARP", "mlx5_1:1/IB/SHARP",
                                     "mlx5_4:1/IB/SHARP", "mlx5_5:1/IB/SHARP"], "IBext"),
])
def test_ib_devices(name, net, devices, network):
    got = fixture(name)
    assert (got.net, got.net_devices, got.network) == (net, devices, network)
    assert got.params()["nccl.net_devices"] == ",".join(devices)


def test_roce_version():
    assert fixture("roce_version.nccl.txt").version == "2.19.3+cuda12.3"


def test_socket_shm_gdrdma_transports():
    got = fixture("socket_shm.nccl.txt")
    assert got.transports == {"P2P/IPC/read": 2, "NET/Socket": 2, "SHM/direct/direct": 4,
                              "NET/IB/GDRDMA": 3, "P2P/CUMEM": 1}
    assert got.connected_rings == 4
    assert got.params()["nccl.connected"] == "4x all rings"


def test_rings_and_trees_without_a_comm_line():
    got = fixture("two_ranks_rings_trees.nccl.txt")
    p = got.params()
    assert (p["nccl.ranks"], p["nccl.channels"], p["nccl.rings"]) == ("2", "2", "0 1 | 0 1")
    assert p["nccl.trees"] == "[0] 1/-1/-1->0->-1 [1] -1/-1/-1->0->1"
    assert got.transports == {}        # old "Ring 00 : 1 -> 0 -> 1" lines are not connections


def test_transport_names():
    assert nccl_log.transport_name("NET/IB/3/GDRDMA") == "NET/IB/GDRDMA"
    assert nccl_log.transport_name("NET/IBext_v8/4") == "NET/IBext_v8"
    assert nccl_log.transport_name("NET/Socket/0") == "NET/Socket"
    assert nccl_log.transport_name("P2P/CUMEM/read") == "P2P/CUMEM/read"


def test_nothing_nccl_gives_no_params():
    assert nccl_log.parse("hello\n[rank 0] not nccl\n").params() == {}


def test_long_rings_are_cut_for_mlflow():
    got = fixture("ib_2nodes_16ranks.nccl.txt")
    got.world.rings.update({c: got.world.rings[0] for c in range(5, 40)})
    assert len(got.params()["nccl.rings"]) == nccl_log.PARAM_CHARS
    assert got.params()["nccl.rings"].endswith("...")


def test_draw_puts_instants_on_the_nccl_track():
    tl = Timeline()
    fixture("ib_2nodes_16ranks.nccl.txt").draw(tl, tl.origin)
    events = [e for e in tl.events if e["tid"] == tl.tracks["nccl"]]
    assert events[0]["name"] == "NCCL init" and events[0]["ph"] == "i"
    assert events[0]["args"]["nccl.ranks"] == "16" and events[0]["ts"] == 0
    assert len(events) == 1 + 7


# --- the variables, set before the process group forms ----------------------------------------------
def test_nccl_env(tmp_path):
    env = nccl_log.nccl_env(str(tmp_path), 3)
    assert env["NCCL_DEBUG"] == "INFO" and env["NCCL_DEBUG_SUBSYS"] == "INIT,COLL,NET"
    assert env["NCCL_DEBUG_FILE"] == str(tmp_path / "nccl.rank00003.%h.%p.log")
    # what NCCL writes for that pattern (%h host, %p pid) is found again by rank
    written = tmp_path / "nccl.rank00003.node1.4242.log"
    written.write_text("")
    assert nccl_log.rank_log(str(tmp_path), 3) == str(written)
    assert nccl_log.rank_log(str(tmp_path), 0) is None


def _cfg(nccl_debug: bool, backend: str):
    return OmegaConf.create({"telemetry": {"nccl_debug": nccl_debug},
                             "parallel": {"backend": backend}, "train": {"device": "cpu"}})


@pytest.fixture
def clean_env(monkeypatch):
    for k in NCCL_VARS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    yield
    for k in NCCL_VARS:                      # _nccl_debug writes os.environ directly
        os.environ.pop(k, None)


def _job(tmp_path) -> JobInfo:
    return JobInfo(output_dir=str(tmp_path), overrides=[], choices={}, sweep_dir=None)


def test_env_set_only_when_asked_and_on_nccl(tmp_path, clean_env):
    ranks._nccl_debug(_cfg(False, "nccl"), _job(tmp_path))
    assert not [k for k in NCCL_VARS if k in os.environ]
    ranks._nccl_debug(_cfg(True, "gloo"), _job(tmp_path))          # gloo: NCCL not in use
    assert not [k for k in NCCL_VARS if k in os.environ]
    ranks._nccl_debug(_cfg(True, "auto"), _job(tmp_path))          # auto on a CPU: gloo
    assert not [k for k in NCCL_VARS if k in os.environ]
    ranks._nccl_debug(_cfg(True, "nccl"), _job(tmp_path))
    assert os.environ["NCCL_DEBUG"] == "INFO"
    assert os.environ["NCCL_DEBUG_FILE"] == os.path.join(str(tmp_path), "nccl",
                                                         "nccl.rank00001.%h.%p.log")
    assert os.path.isdir(tmp_path / "nccl")
