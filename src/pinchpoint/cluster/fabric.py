"""The network between nodes: read it (every cluster), shape it (an emulated one), count it.

On a real cluster the fabric is read, never changed: the inter-node interface (the one holding
the address the node's hostname resolves to, or ``fabric.interface``), its link speed and MTU,
and the InfiniBand ports under /sys/class/infiniband (rate, state, link layer). On the emulated
cluster (launchers/slurm_up.sh --nodes N: nodes are network namespaces whose eth0 sits on a
bridge) ``fabric.gbps`` shapes each node's link with a token bucket (``tc tbf``) on its egress,
so each direction of every node link carries at most that rate. The shaper is installed under
its own handle, so a later run that asks for no shaping removes only what pinchpoint put there.

Measured (benchmarks/fabric_allreduce.py, 2 nodes x 2 ranks, 64 MiB all-reduce, a quiet 2-core
machine; benchmarks/data/fabric_allreduce.json): bus bandwidth 119.1, 59.4 and 23.6 MB/s at 1,
0.5 and 0.2 Gbit/s, i.e. 0.953, 0.950 and 0.945 of the shaped rate (tbf counts frame bytes:
headers take the rest); unshaped, gloo reaches 833 MB/s. Every collective kind's bytes on each
node's eth0 and lo are within 0.1-1.5 % of parallel.traffic's model.
tc cannot add delay here (netem is not in this kernel), so the emulated fabric has bandwidth, not
latency.
"""
from __future__ import annotations

import glob
import logging
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from typing import Any, Optional

from pinchpoint.config.validate import cluster_nodes
from pinchpoint.errors import ConfigError, positive_int, require

log = logging.getLogger(__name__)
HANDLE = "7070:"     # the qdisc handle that marks a shaper pinchpoint installed


class FabricError(RuntimeError):
    """A node's link cannot be shaped or read as the config asks."""


@dataclass
class Link:
    """One node's inter-node interface, as read from the kernel."""
    interface: Optional[str]
    address: Optional[str] = None
    speed_mbps: Optional[int] = None     # what the driver reports (None: virtual/unknown)
    mtu: Optional[int] = None
    ib_ports: list = field(default_factory=list)   # [{device, port, rate, state, link_layer}]

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"fabric_interface": self.interface or "none",
                               "fabric_link_speed_mbps": self.speed_mbps,
                               "fabric_mtu": self.mtu}
        if self.ib_ports:
            out["fabric_ib_ports"] = ", ".join(
                f"{p['device']}/{p['port']} {p['rate']} {p['state']}" for p in self.ib_ports)
        return {k: v for k, v in out.items() if v is not None}


# --- reading -------------------------------------------------------------------------------------
def inter_node_interface(requested: str = "auto") -> Optional[str]:
    """``requested``, or (auto) the interface holding the address this host's name resolves to;
    None when that is loopback (a single machine: nothing leaves the node)."""
    if requested != "auto":
        return requested
    try:
        address = socket.gethostbyname(socket.gethostname())
    except OSError:
        return None
    if address.startswith("127."):
        return None
    import psutil
    for name, addresses in psutil.net_if_addrs().items():
        if any(a.family == socket.AF_INET and a.address == address for a in addresses):
            return name
    return None


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def read_link(requested: str = "auto", sysfs: str = "/sys") -> Link:
    """What the kernel says of this node's inter-node link and its InfiniBand ports."""
    name = inter_node_interface(requested)
    link = Link(name, ib_ports=read_ib_ports(sysfs))
    if name is None:
        return link
    speed = _read(f"{sysfs}/class/net/{name}/speed")
    link.speed_mbps = int(speed) if speed and speed.lstrip("-").isdigit() and int(speed) > 0 \
        else None
    mtu = _read(f"{sysfs}/class/net/{name}/mtu")
    link.mtu = int(mtu) if mtu and mtu.isdigit() else None
    import psutil
    for a in psutil.net_if_addrs().get(name, []):
        if a.family == socket.AF_INET:
            link.address = a.address
    return link


def read_ib_ports(sysfs: str = "/sys") -> list[dict]:
    """Every InfiniBand (or RoCE) port: device, port, rate ('400 Gb/sec (4X NDR)'), state
    ('4: ACTIVE'), link layer."""
    ports = []
    for port in sorted(glob.glob(f"{sysfs}/class/infiniband/*/ports/*")):
        device = port.split("/")[-3]
        ports.append({"device": device, "port": os.path.basename(port),
                      "rate": _read(f"{port}/rate") or "?", "state": _read(f"{port}/state") or "?",
                      "link_layer": _read(f"{port}/link_layer") or "?"})
    return ports


def counters(interface: Optional[str], sysfs: str = "/sys") -> dict[str, int]:
    """Bytes sent and received so far: the interface's, and each InfiniBand port's
    (port_xmit_data/port_rcv_data count 4-byte words)."""
    out: dict[str, int] = {}
    if interface:
        for what in ("tx", "rx"):
            value = _read(f"{sysfs}/class/net/{interface}/statistics/{what}_bytes")
            if value is not None:
                out[f"{interface}_{what}_bytes"] = int(value)
    for port in sorted(glob.glob(f"{sysfs}/class/infiniband/*/ports/*/counters")):
        name = "_".join(port.split("/")[-4:-1:2])   # device_port
        for what, key in (("tx", "port_xmit_data"), ("rx", "port_rcv_data")):
            value = _read(f"{port}/{key}")
            if value is not None:
                out[f"ib_{name}_{what}_bytes"] = int(value) * 4
    return out


# --- shaping (an emulated cluster only) ----------------------------------------------------------
def tbf_args(interface: str, gbps: float, burst_kb: int) -> list[str]:
    """tc's arguments for a token bucket of ``gbps`` on ``interface``'s egress."""
    rate_kbit = max(1, round(gbps * 1_000_000))
    return ["tc", "qdisc", "replace", "dev", interface, "root", "handle", HANDLE, "tbf",
            "rate", f"{rate_kbit}kbit", "burst", f"{burst_kb}kb", "latency", "50ms"]


def _tc(args: list[str]) -> str:
    if shutil.which("tc") is None:
        raise FabricError("tc is not installed (Debian: iproute2): cannot shape the node link")
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode:
        raise FabricError(f"{' '.join(args)} failed: {proc.stderr.strip() or proc.stdout}")
    return proc.stdout


def shaped_by_us(interface: str) -> bool:
    return f"qdisc tbf {HANDLE}" in _tc(["tc", "qdisc", "show", "dev", interface])


def apply(fabric: Any, interface: Optional[str]) -> str:
    """Make this node's link what ``fabric`` asks: shaped to fabric.gbps, or (gbps null) rid of
    a shaper an earlier run left. Returns what it did, for the log."""
    if fabric.gbps is None:
        if interface and shutil.which("tc") and shaped_by_us(interface):
            _tc(["tc", "qdisc", "del", "dev", interface, "root"])
            return f"{interface}: removed an earlier run's shaper"
        return f"{interface or 'no inter-node interface'}: as it is"
    if interface is None:
        raise FabricError("fabric.gbps is set but this node has no inter-node interface "
                          "(its hostname resolves to loopback); set fabric.interface")
    _tc(tbf_args(interface, fabric.gbps, fabric.burst_kb))
    return f"{interface}: shaped to {fabric.gbps:g} Gbit/s per direction"


def prepare_node(fabric: Any, local_rank: int) -> Optional[str]:
    """Before a multi-node process group forms: the node's first rank shapes (or unshapes) its
    link, and every rank names the socket interface for gloo and NCCL when the config does."""
    interface = inter_node_interface(fabric.interface)
    if fabric.interface != "auto":
        os.environ.setdefault("GLOO_SOCKET_IFNAME", fabric.interface)
        os.environ.setdefault("NCCL_SOCKET_IFNAME", fabric.interface)
    if local_rank == 0:
        log.info("fabric %s on %s: %s", fabric.name, socket.gethostname(),
                 apply(fabric, interface))
    return interface


def validate_fabric(run: Any) -> None:
    """The ``fabric`` group before launch (runner/validation.py calls it). An emulated fabric
    shapes the links between nodes: it needs a job that spans nodes."""
    f = run.fabric
    if f.gbps is not None:
        require(f.gbps, "fabric.gbps", lambda v: v > 0,
                "a bandwidth > 0 Gbit/s, or null (fabric=none) to leave the links unshaped")
        if cluster_nodes(run) < 2:
            raise ConfigError("fabric.gbps", f.gbps,
                              "null (fabric=none) for a run on one node: it shapes the links "
                              "between nodes (use it with cluster=slurm cluster.nodes=2 or more "
                              "on an emulated cluster: launchers/slurm_up.sh --nodes N)")
    positive_int(f.burst_kb, "fabric.burst_kb")
    require(f.interface, "fabric.interface", lambda v: isinstance(v, str) and v.strip() != "",
            "auto or a network interface name (eth0, ib0)")
