"""NCCL's own log (``telemetry.nccl_debug=true``): what NCCL decided at communicator init.

``nccl_env`` gives the variables a rank sets before its process group forms: ``NCCL_DEBUG=INFO``,
``NCCL_DEBUG_SUBSYS=INIT,COLL,NET`` and ``NCCL_DEBUG_FILE`` -- one file per process (NCCL expands
``%h`` to the host name and ``%p`` to the process id; docs.nvidia.com/deeplearning/nccl, "Logging"),
named by the rank so that a rank finds its own file again (``rank_log``).

``parse`` reads NCCL's INFO lines (``host:pid:tid [cudaDev] NCCL INFO <message>``, the format of
NCCL's debug.cc, as quoted in its issue threads; see tests/data/nccl/) into a ``NcclInit``:

    NCCL version 2.21.5+cuda12.4                                   version
    comm 0x.. rank 6 nRanks 16 nNodes 2 localRanks 8 localRank 6 MNNVL 0
                                                                   one communicator (init.cc)
    Channel 00/08 :    0   5   4   7 ...                           a ring (printed by rank 0)
    Trees [0] 2/-1/-1->1->0 [1] ...                                this rank's trees
    Channel 03/0 : 5[5] -> 12[4] [send] via NET/IB/3               a connection and its transport
    NET/IB : Using [0]mlx5_0:1/IB [1]mlx5_1:1/IB ; OOB eth0:...    the IB devices
    Connected all rings / Connected all trees
    ncclCommInitRank comm 0x.. rank 6 nranks 16 ... - Init COMPLETE
    Init timings: rank 6 nranks 16 total 1.08 (kernels 0.50, ...)  seconds

Lines of other subsystems, and lines this parser does not know, are skipped. A line belongs to
the communicator whose ``comm ... rank`` line came last from the same host, process and device
(the connection threads are not the init thread, but share its device).

``params`` names the summary for MLflow (``nccl.*``); ``draw`` puts it on the timeline.
"""
from __future__ import annotations

import glob
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

DEBUG_SUBSYS = "INIT,COLL,NET"
PARAM_CHARS = 500     # MLflow params are short strings; longer rings/trees are cut, with "..."


def nccl_env(rank_dir: str, rank: int) -> dict[str, str]:
    """The variables that make NCCL write its INFO log for this rank under ``rank_dir``."""
    return {"NCCL_DEBUG": "INFO", "NCCL_DEBUG_SUBSYS": DEBUG_SUBSYS,
            "NCCL_DEBUG_FILE": os.path.join(os.path.abspath(rank_dir),
                                            f"nccl.rank{rank:05d}.%h.%p.log")}


def log_dir(output_dir: str) -> str:
    """Where a run's ranks write their NCCL logs."""
    return os.path.join(output_dir, "nccl")


def rank_log(rank_dir: str, rank: int) -> Optional[str]:
    """This rank's NCCL log, the newest if an earlier attempt left one; None when NCCL wrote
    none (no communicator was created)."""
    found = glob.glob(os.path.join(rank_dir, f"nccl.rank{rank:05d}.*.log"))
    return max(found, key=os.path.getmtime) if found else None


# --- the lines -------------------------------------------------------------------------------------
_PREFIX = re.compile(r"^(?:\[[^\]]*\] )?(?P<host>[^\s:]+):(?P<pid>\d+):(?P<tid>\d+) "
                     r"\[(?P<dev>\d+)\] NCCL INFO (?P<msg>.*)$")
_VERSION = re.compile(r"NCCL version (\S+)")
_COMM = re.compile(r"^comm (0x[0-9a-f]+) rank (\d+) nRanks (\d+) nNodes (\d+) localRanks (\d+) "
                   r"localRank (\d+)(?: MNNVL (\d+))?")
_RING = re.compile(r"^Channel (\d+)/(\d+) :\s+((?:-?\d+\s*)+)$")
_TREES = re.compile(r"^Trees (\[\d+\].*)$")
_CONNECT = re.compile(r"^(?:Channel|Ring) (\d+)(?:/\d+)? : (\d+)\[\w+\] -> (\d+)\[\w+\]"
                      r"(?: \[(send|receive)\])? via (.+)$")
_NET_USING = re.compile(r"^NET/(\w+) : Using (.*?)(?: ?; OOB .*)?$")
_NET_DEVICE = re.compile(r"\[\d+\](\S+)")
_NETWORK = re.compile(r"^Using network (\S+)")
_COMPLETE = re.compile(r"comm (0x[0-9a-f]+) rank (\d+) nranks (\d+) .*- Init COMPLETE")
_TIMINGS = re.compile(r"^Init timings(?: - \S+)?: rank (\d+) nranks (\d+) total ([\d.]+)")
_COLL_CHANNELS = re.compile(r"^(\d+) coll channels")


@dataclass
class Communicator:
    comm: str
    rank: int
    nranks: int
    nnodes: Optional[int] = None
    local_ranks: Optional[int] = None
    local_rank: Optional[int] = None
    mnnvl: Optional[int] = None
    channels: Optional[int] = None
    rings: dict[int, str] = field(default_factory=dict)   # channel -> ring order
    trees: Optional[str] = None
    init_s: Optional[float] = None
    complete: bool = False


@dataclass
class NcclInit:
    version: Optional[str] = None
    communicators: dict[str, Communicator] = field(default_factory=dict)
    transports: Counter = field(default_factory=Counter)    # "P2P/CUMEM" -> connections
    net_devices: list[str] = field(default_factory=list)     # "mlx5_0:1/IB"
    net: Optional[str] = None                                # NET/IB, NET/Socket, ...
    network: Optional[str] = None                            # "Using network IB"
    connected_rings: int = 0
    connected_trees: int = 0
    lines: int = 0                                           # NCCL INFO lines read

    @property
    def world(self) -> Optional[Communicator]:
        """The widest communicator (the default process group's), first seen of those."""
        comms = list(self.communicators.values())
        return max(comms, key=lambda c: c.nranks) if comms else None

    def params(self) -> dict[str, str]:
        """The summary as MLflow params (``nccl.*``); empty when no NCCL line was read."""
        if not self.lines and self.version is None:
            return {}
        out: dict[str, str] = {}
        if self.version:
            out["nccl.version"] = self.version
        out["nccl.communicators"] = str(len(self.communicators))
        w = self.world
        if w is not None:
            for key, name in (("nranks", "ranks"), ("nnodes", "nodes"),
                              ("local_ranks", "local_ranks"), ("mnnvl", "mnnvl"),
                              ("channels", "channels")):
                value = getattr(w, key)
                if value is not None and value >= 0:
                    out[f"nccl.{name}"] = str(value)
            if w.rings:
                out["nccl.rings"] = _cut(" | ".join(w.rings[c] for c in sorted(w.rings)))
            if w.trees:
                out["nccl.trees"] = _cut(w.trees)
            if w.init_s is not None:
                out["nccl.init_s"] = f"{w.init_s:g}"
        timed = [c.init_s for c in self.communicators.values() if c.init_s is not None]
        if timed:
            out["nccl.init_s_all_communicators"] = f"{sum(timed):g}"
        if self.transports:
            out["nccl.transports"] = _cut(", ".join(f"{t}={n}" for t, n in
                                                    sorted(self.transports.items())))
        if self.net_devices:
            out["nccl.net_devices"] = _cut(",".join(self.net_devices))
        if self.net:
            out["nccl.net"] = self.net
        if self.network:
            out["nccl.network"] = self.network
        if self.connected_rings or self.connected_trees:
            out["nccl.connected"] = ", ".join(
                f"{n}x all {what}" for what, n in (("rings", self.connected_rings),
                                                   ("trees", self.connected_trees)) if n)
        return out

    def draw(self, timeline, t: Optional[float] = None) -> None:
        """One instant per communicator on the ``nccl`` track, at ``t`` (when the process group
        was ready: NCCL's lines carry no time of their own), plus the whole summary."""
        if not self.lines:
            return
        timeline.instant("NCCL init", "nccl", t, {**self.params(),
                                                  "rings": {c: r for c, r in sorted(
                                                      (self.world.rings if self.world else
                                                       {}).items())}})
        for c in self.communicators.values():
            timeline.instant(f"NCCL comm {c.comm} ({c.nranks} ranks)", "nccl", t,
                             {k: v for k, v in vars(c).items() if v not in (None, {})})


def _cut(text: str) -> str:
    return text if len(text) <= PARAM_CHARS else text[:PARAM_CHARS - 3] + "..."


def transport_name(via: str) -> str:
    """A connection's transport as counted: ``NET/IB/3/GDRDMA`` -> ``NET/IB/GDRDMA`` (the NIC
    index dropped), ``SHM/direct/direct`` and the P2P kinds kept as NCCL names them."""
    parts = via.strip().split("/")
    if parts[0] == "NET" and len(parts) >= 3 and parts[2].isdigit():
        parts = parts[:2] + parts[3:]
    return "/".join(parts)


def parse(text: str) -> NcclInit:
    out = NcclInit()
    current: dict[tuple[str, str, str], Communicator] = {}   # (host, pid, dev) -> comm

    def comm_of(m) -> Optional[Communicator]:
        return current.get((m["host"], m["pid"], m["dev"]))

    def comm_or_world(m, nranks: int = 0) -> Communicator:
        """A ring or tree line's communicator: the one open on its device, else the widest seen
        (an excerpt, or a thread whose ``comm`` line came first), else an unnamed one."""
        comm = comm_of(m) or out.world
        if comm is None:
            comm = out.communicators.setdefault("?", Communicator("?", -1, nranks))
        comm.nranks = max(comm.nranks, nranks)
        return comm

    for line in text.splitlines():
        line = line.rstrip()
        m = _PREFIX.match(line)
        if m is None:
            v = _VERSION.search(line)      # printed without the prefix by some versions
            if v and out.version is None:
                out.version = v.group(1)
            continue
        out.lines += 1
        msg = m["msg"].strip()
        if (v := _VERSION.match(msg)) and out.version is None:
            out.version = v.group(1)
        elif c := _COMM.match(msg):
            comm = out.communicators.get(c.group(1)) or Communicator(c.group(1), int(c.group(2)),
                                                                     int(c.group(3)))
            comm.nnodes, comm.local_ranks, comm.local_rank = (int(c.group(i)) for i in (4, 5, 6))
            comm.mnnvl = int(c.group(7)) if c.group(7) is not None else None
            out.communicators[comm.comm] = comm
            current[(m["host"], m["pid"], m["dev"])] = comm
        elif r := _RING.match(msg):
            order = r.group(3).split()
            comm = comm_or_world(m, len(order))
            comm.channels = int(r.group(2))
            comm.rings[int(r.group(1))] = " ".join(order)
        elif t := _TREES.match(msg):
            comm_or_world(m).trees = t.group(1).strip()
        elif x := _CONNECT.match(msg):
            out.transports[transport_name(x.group(5))] += 1
        elif n := _NET_USING.match(msg):
            devices = _NET_DEVICE.findall(n.group(2))
            if devices and not out.net_devices:
                out.net, out.net_devices = f"NET/{n.group(1)}", devices
        elif n := _NETWORK.match(msg):
            out.network = n.group(1)
        elif msg.startswith("Connected all rings"):    # 2.2x adds ", use ring PXN 0 GDR 1"
            out.connected_rings += 1
        elif msg.startswith("Connected all trees"):
            out.connected_trees += 1
        elif d := _COMPLETE.search(msg):
            comm = out.communicators.get(d.group(1)) or Communicator(d.group(1), int(d.group(2)),
                                                                     int(d.group(3)))
            comm.complete = True
            out.communicators[comm.comm] = comm
            current[(m["host"], m["pid"], m["dev"])] = comm   # its "Init timings" line follows
        elif t := _TIMINGS.match(msg):
            comm = comm_of(m)
            if comm is not None and comm.rank == int(t.group(1)):
                comm.init_s = float(t.group(3))
        elif k := _COLL_CHANNELS.match(msg):
            comm = comm_of(m)
            if comm is not None and comm.channels is None:
                comm.channels = int(k.group(1))
    return out


def parse_file(path: str) -> NcclInit:
    with open(path, errors="replace") as f:
        return parse(f.read())
