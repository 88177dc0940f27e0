"""System metrics sampled by the run itself, drawn as counter tracks on its timeline.

A background thread reads psutil every ``interval_s`` and stamps each sample with
``time.perf_counter()``, the clock of the MLPerf events, phases and collectives on the same
timeline. Tracks: ``cpu %`` (machine; this process and its children, in % of one core),
``memory MB`` (this process tree's RSS; machine used), ``disk MB/s`` (machine block devices;
this process tree's storage reads/writes), ``network MB/s`` (all interfaces, loopback included:
an S3 server on loopback and gloo between local ranks show up there). Rates are deltas between
consecutive samples. ``summary()`` gives the run's totals for MLflow.

Why our own thread rather than MLflow's system metrics: those go to MLflow on MLflow's clock,
10 s apart by default, and not onto the trace; this puts them beside the steps they explain.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Optional

import psutil

log = logging.getLogger(__name__)
MB = 1e6


# A run samples once a second. Each sample preempts an intra-op thread on a busy machine, and
# under a 2-core DLRM run a sample costs ~2 ms of CPU (0.36 ms on an idle machine): at the
# former 0.5 s that was 0.4 % of the run's throughput, measured by
# benchmarks/dlrm_overhead_interleaved.py. One second still resolves a step-phase change.
RUN_INTERVAL_S = 1.0
# Finding the process tree scans every /proc entry (0.5 ms on an idle machine, more than the
# rest of a sample): it is refreshed every this many samples (it once ran three times a sample).
TREE_REFRESH_SAMPLES = 5


class _Totals:
    """Cumulative byte counters at one instant (None where this machine does not expose them)."""

    def __init__(self, tree: list[psutil.Process]):
        disk = _safe(psutil.disk_io_counters)
        net = _safe(psutil.net_io_counters)
        self.t = time.perf_counter()
        self.disk = (disk.read_bytes, disk.write_bytes) if disk else None
        self.net = (net.bytes_recv, net.bytes_sent) if net else None
        self.proc_io = _tree_io(tree)
        self.proc_cpu = _tree_cpu_seconds(tree)
        cpu = psutil.cpu_times()   # our own deltas: psutil.cpu_percent(None) is process-global
        self.cpu_busy_idle = (sum(cpu) - _idle(cpu), _idle(cpu))


def _idle(cpu) -> float:
    return cpu.idle + getattr(cpu, "iowait", 0.0)


def _safe(fn):
    try:
        return fn()
    except (OSError, RuntimeError, psutil.Error):
        return None


def _tree(process: psutil.Process) -> list[psutil.Process]:
    try:
        return [process, *process.children(recursive=True)]
    except psutil.Error:
        return [process]


def _tree_io(tree: list[psutil.Process]) -> Optional[tuple[int, int]]:
    read = write = 0
    for p in tree:
        io = _safe(p.io_counters) if hasattr(p, "io_counters") else None
        if io is None:
            if p is tree[0]:
                return None
            continue
        read, write = read + io.read_bytes, write + io.write_bytes
    return read, write


def _tree_cpu_seconds(tree: list[psutil.Process]) -> float:
    total = 0.0
    for p in tree:
        times = _safe(p.cpu_times)
        if times is not None:
            total += times.user + times.system
    return total


def _tree_rss(tree: list[psutil.Process]) -> float:
    return sum(getattr(_safe(p.memory_info), "rss", 0) for p in tree)


class SystemSampler:
    """``with SystemSampler(timeline): ...`` or ``start()``/``stop()``; rank 0 of a node.

    ``gpu_counters``: each tick also reads every GPU the machine shows (telemetry/gpu_counters:
    NVML or amdsmi) as ``gpu<i>/...`` tracks; on a machine without GPUs it adds nothing."""

    def __init__(self, timeline=None, interval_s: float = RUN_INTERVAL_S,
                 gpu_counters: bool = False):
        self.timeline, self.interval_s = timeline, float(interval_s)
        self.want_gpus = gpu_counters
        self.gpus = None
        self.process = psutil.Process()
        self._tree_members: Optional[list[psutil.Process]] = None
        self._tree_age = 0    # samples since the tree was found
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.first: Optional[_Totals] = None
        self.last: Optional[_Totals] = None
        self.samples = 0
        self.cpu_sum = 0.0
        self.rss_peak = 0.0

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> "SystemSampler":
        if self.want_gpus:
            from pinchpoint.telemetry.gpu_counters import open_gpu_counters
            self.gpus = open_gpu_counters()
        self.first = self.last = _Totals(self._members())
        self._thread = threading.Thread(target=self._loop, name="system-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict[str, float]:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)
            self._thread = None
            self.sample()          # the tail since the last tick
        out = self.summary()
        if self.gpus is not None:
            self.gpus.close()
        return out

    def __enter__(self) -> "SystemSampler":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sample()
            except Exception as err:   # telemetry must never take the run down
                log.warning("system sampler stopped: %s", err)
                return

    # --- one sample ------------------------------------------------------------------------------
    def _members(self) -> list[psutil.Process]:
        """This process and its children (loader workers, local ranks), found again every
        TREE_REFRESH_SAMPLES samples; one that exited meanwhile reads as absent (_safe)."""
        if self._tree_members is None or self._tree_age >= TREE_REFRESH_SAMPLES:
            self._tree_members, self._tree_age = _tree(self.process), 0
        self._tree_age += 1
        return self._tree_members

    def sample(self) -> None:
        tree = self._members()
        now, prev = _Totals(tree), self.last
        dt = max(now.t - prev.t, 1e-6)
        busy = now.cpu_busy_idle[0] - prev.cpu_busy_idle[0]
        cpu = 100.0 * busy / max(busy + now.cpu_busy_idle[1] - prev.cpu_busy_idle[1], 1e-9)
        rss = _tree_rss(tree)
        self.samples += 1
        self.cpu_sum += cpu
        self.rss_peak = max(self.rss_peak, rss)
        self.last = now
        if self.gpus is not None:   # gpu<i>/... tracks (and the run's per-GPU means and peaks)
            self.gpus.sample(self.timeline, now.t)
        if self.timeline is None:
            return
        tl, t = self.timeline, now.t
        tl.counter("cpu %", {"machine": cpu,
                             "process tree": 100.0 * (now.proc_cpu - prev.proc_cpu) / dt}, t)
        tl.counter("memory MB", {"process tree rss": rss / MB,
                                 "machine used": psutil.virtual_memory().used / MB}, t)
        disk = {}
        if now.disk and prev.disk:
            disk.update(machine_read=(now.disk[0] - prev.disk[0]) / MB / dt,
                        machine_write=(now.disk[1] - prev.disk[1]) / MB / dt)
        if now.proc_io and prev.proc_io:
            disk.update(process_read=(now.proc_io[0] - prev.proc_io[0]) / MB / dt,
                        process_write=(now.proc_io[1] - prev.proc_io[1]) / MB / dt)
        if disk:
            tl.counter("disk MB/s", disk, t)
        if now.net and prev.net:
            tl.counter("network MB/s", {"received": (now.net[0] - prev.net[0]) / MB / dt,
                                        "sent": (now.net[1] - prev.net[1]) / MB / dt}, t)

    def summary(self) -> dict[str, float]:
        """Totals over the sampled interval, named for MLflow (bytes, seconds, percent)."""
        if self.first is None or self.last is None:
            return {}
        a, b = self.first, self.last
        out = {"system_sampled_seconds": b.t - a.t, "system_samples": float(self.samples),
               "system_cpu_percent_mean": self.cpu_sum / max(self.samples, 1),
               "process_cpu_seconds": b.proc_cpu - a.proc_cpu,
               "process_rss_peak_bytes": self.rss_peak}
        if a.disk and b.disk:
            out.update(system_disk_read_bytes=float(b.disk[0] - a.disk[0]),
                       system_disk_write_bytes=float(b.disk[1] - a.disk[1]))
        if a.proc_io and b.proc_io:
            out.update(process_disk_read_bytes=float(b.proc_io[0] - a.proc_io[0]),
                       process_disk_write_bytes=float(b.proc_io[1] - a.proc_io[1]))
        if a.net and b.net:
            out.update(system_net_received_bytes=float(b.net[0] - a.net[0]),
                       system_net_sent_bytes=float(b.net[1] - a.net[1]))
        if self.gpus is not None:
            out.update(self.gpus.summary())
        return out
