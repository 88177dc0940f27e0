"""The node links' own counters over the training loop, beside what the collectives say.

On a run that spans nodes, the first rank of every node reads its inter-node interface's byte
counters (and InfiniBand ports') at the start and end of the training loop, both after a
barrier, and once a second in between (a background thread, wall-clock stamped). At the end
rank 0 gathers every node's counters and every rank's modelled intra/inter-node bytes
(``parallel.traffic``), and reports per node and in total: bytes the link sent (measured),
bytes the collectives sent across nodes (modelled), and their ratio. The samples become one
counter track per node on the run's timeline and an MLflow series per node.

Nothing is sent over the network while the loop runs: the gather happens after it.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Optional

from pinchpoint.cluster import fabric

log = logging.getLogger(__name__)
MB = 1e6
INTERVAL_S = 1.0


class FabricMeter:
    def __init__(self, ctx, interface: Optional[str], interval_s: float = INTERVAL_S):
        self.ctx, self.interface, self.interval_s = ctx, interface, interval_s
        self.reads = ctx.local_rank == 0 and interface is not None
        self.first: dict[str, int] = {}
        self.last: dict[str, int] = {}
        self.samples: list[tuple[float, dict[str, int]]] = []   # (unix time, counters)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @staticmethod
    def wanted(ctx) -> bool:
        return ctx.distributed and ctx.nodes > 1

    # --- the loop's bounds (every rank calls these, right after a barrier) -----------------------
    def start(self) -> "FabricMeter":
        if self.reads:
            self.first = fabric.counters(self.interface)
            self.samples.append((time.time(), self.first))
            self._thread = threading.Thread(target=self._loop, name="fabric-meter", daemon=True)
            self._thread.start()
        return self

    def stop(self, profile) -> Optional[dict[str, Any]]:
        """Every rank: end the reading, gather; rank 0 gets the report (others None)."""
        import torch.distributed as dist
        dist.barrier()
        if self.reads:
            self._stop.set()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self.last = fabric.counters(self.interface)
            self.samples.append((time.time(), self.last))
        mine = {"host": self.ctx.hosts[self.ctx.rank], "reads": self.reads,
                "interface": self.interface, "first": self.first, "last": self.last,
                "samples": self.samples, "sent": profile.sent_bytes(),
                "kinds": profile.kind_splits()}
        gathered: list = [None] * self.ctx.world_size
        dist.all_gather_object(gathered, mine)
        return report(gathered) if self.ctx.is_main else None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.samples.append((time.time(), fabric.counters(self.interface)))
            except OSError as err:   # telemetry must never take the run down
                log.warning("fabric meter stopped: %s", err)
                return


def report(gathered: list[dict]) -> dict[str, Any]:
    """Per node: link bytes sent (measured) and the collectives' inter-node bytes (modelled)."""
    nodes: dict[str, dict[str, Any]] = {}
    for r in gathered:
        node = nodes.setdefault(r["host"], {"model_inter": 0.0, "model_intra": 0.0,
                                            "reader": None})
        node["model_intra"] += r["sent"][0]
        node["model_inter"] += r["sent"][1]
        if r["reads"]:
            node["reader"] = r
    out: dict[str, Any] = {"per_node": {}}
    measured_total = model_total = 0.0
    for host, node in nodes.items():
        reader = node["reader"]
        entry = {"inter_node_bytes_model": node["model_inter"],
                 "intra_node_bytes_model": node["model_intra"]}
        if reader is not None:
            iface = reader["interface"]
            tx = f"{iface}_tx_bytes"
            entry["interface"] = iface
            entry["tx_bytes"] = reader["last"].get(tx, 0) - reader["first"].get(tx, 0)
            rx = f"{iface}_rx_bytes"
            entry["rx_bytes"] = reader["last"].get(rx, 0) - reader["first"].get(rx, 0)
            entry["samples"] = reader["samples"]
            measured_total += entry["tx_bytes"]
            model_total += node["model_inter"]
        out["per_node"][host] = entry
    kinds: dict[str, list[float]] = {}
    for r in gathered:   # every rank's training collectives, by kind: the job's, not rank 0's
        for kind, (intra, inter) in r["kinds"].items():
            total = kinds.setdefault(kind, [0.0, 0.0])
            total[0] += intra
            total[1] += inter
    out["kinds"] = kinds
    out["tx_bytes_measured"] = measured_total
    out["inter_node_bytes_model"] = model_total
    out["measured_over_model"] = measured_total / model_total if model_total else None
    return out


def summary_metrics(rep: dict[str, Any], steps: int) -> dict[str, float]:
    """The report's numbers under the summary's flat names (MLflow: fabric/..., and per kind
    comm/<kind>/{intra,inter}_node_bytes_per_step: what all ranks sent per training step)."""
    out = {f"comm_{kind}_{where}_node_bytes_per_step": value / max(steps, 1)
           for kind, pair in rep["kinds"].items() for where, value in zip(("intra", "inter"), pair)}
    out["fabric_tx_bytes_measured"] = float(rep["tx_bytes_measured"])
    out["fabric_inter_node_bytes_model"] = float(rep["inter_node_bytes_model"])
    if rep["measured_over_model"] is not None:
        out["fabric_measured_over_model"] = float(rep["measured_over_model"])
    for host, e in rep["per_node"].items():
        out[f"fabric_{host}_inter_node_bytes_model"] = float(e["inter_node_bytes_model"])
        if "tx_bytes" in e:
            out[f"fabric_{host}_tx_bytes"] = float(e["tx_bytes"])
            out[f"fabric_{host}_rx_bytes"] = float(e["rx_bytes"])
    return out


def rates(samples: list[tuple[float, dict[str, int]]], interface: str):
    """(unix time, tx MB/s, rx MB/s) between consecutive samples."""
    tx, rx = f"{interface}_tx_bytes", f"{interface}_rx_bytes"
    for (t0, a), (t1, b) in zip(samples, samples[1:]):
        dt = max(t1 - t0, 1e-6)
        yield t1, (b.get(tx, 0) - a.get(tx, 0)) / MB / dt, (b.get(rx, 0) - a.get(rx, 0)) / MB / dt


def draw(rep: dict[str, Any], timeline) -> None:
    """One counter track per node's link on the run's timeline (same clock as the steps)."""
    for host, e in rep["per_node"].items():
        if "samples" not in e:
            continue
        for t, tx, rx in rates(e["samples"], e["interface"]):
            timeline.counter(f"fabric {host} {e['interface']} MB/s", {"sent": tx, "received": rx},
                             timeline.from_unix(t))
