"""A storage tier = a root path + optional bandwidth/latency emulation + page-cache clearing.

Emulation is a what-if model for laptops: every read or write on the tier is charged
``requests * latency + bytes / bandwidth`` and, when the real device finished sooner, the caller
sleeps the difference. It can only slow I/O down, never speed it up, and runs that use it are
tagged ``storage_emulated=true``. Reads are charged as cold reads: the run clears the cache first.
``time.sleep`` wakes late (more so on a busy machine); the lateness is carried over and taken
off the next wait, so over a run the tier delivers the configured rate, not a few % less.

``make_tier`` (pinchpoint.storage) builds the tier a ``storage`` config describes: this file tier,
or for ``storage=object`` (a config with an ``object_store`` block) an ObjectStoreTier
(storage/object_tier.py): same API, data staged through S3, checkpoints in a bucket. Each tier
gives its own checkpoint manager (``checkpoint_manager``, ``checkpoint_source``), so nothing
else decides between folders and objects.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Iterable

from pinchpoint.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class IOCounters:
    read_bytes: int = 0
    read_requests: int = 0
    read_seconds: float = 0.0       # wall time spent in reads, emulation delay included
    write_bytes: int = 0
    write_seconds: float = 0.0
    emulated_delay_seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


@dataclass
class IOCharge:
    nbytes: int
    requests: int
    seconds: float
    emulated_delay_seconds: float
    write: bool = False


class StorageTier:
    def __init__(self, name: str, root: str, emulated: bool = False, read_mb_per_s: float = 0.0,
                 write_mb_per_s: float = 0.0, latency_ms: float = 0.0, cache_clear: str = "fadvise"):
        self.name = name
        self.root = os.path.abspath(os.path.expanduser(root))
        self.emulated = bool(emulated)
        self.read_bytes_per_s = read_mb_per_s * 1e6
        self.write_bytes_per_s = write_mb_per_s * 1e6
        self.latency_s = latency_ms / 1e3
        self.cache_clear_method = cache_clear
        self.io = IOCounters()
        self._late_s = 0.0            # sleep overshoot not yet taken off a later wait
        self._late_lock = threading.Lock()

    # --- layout ------------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def datasets_dir(self) -> str:
        return self.path("datasets")

    def checkpoints_dir(self, run_key: str) -> str:
        return self.path("checkpoints", run_key)

    def checkpoint_url(self, run_key: str) -> str:
        """Where the run's checkpoints go: a folder here, ``s3://...`` on the object tier."""
        return self.checkpoints_dir(run_key)

    # --- checkpoints -------------------------------------------------------------------------
    # storage/checkpoint.py imports torch.distributed: loaded when a run checkpoints, not when
    # a config is validated or a dataset is read.
    def checkpoint_manager(self, run_key: str, keep: int = 2):
        """This run's checkpoints on this tier: DCP folders under ``checkpoints/<run_key>``."""
        from pinchpoint.storage.checkpoint import CheckpointManager
        return CheckpointManager(self, run_key, keep)

    def checkpoint_source(self, where: str):
        """Another run's checkpoints (checkpoint.resume_from): a run key (a folder under this
        tier) or a folder's path."""
        from pinchpoint.storage.checkpoint import CheckpointManager
        if where.startswith("s3://"):
            raise ConfigError("checkpoint.resume_from", where, "a run key or a folder: an "
                              f"s3:// URL is read by storage=object (this tier, {self.name}, "
                              "holds files)")
        return CheckpointManager.source(self, where)

    # --- emulation ---------------------------------------------------------------------------
    def charge_read(self, nbytes: int, requests: int, started: float) -> "IOCharge":
        """Throttle (when emulated) and account a read that began at ``started`` (perf_counter)."""
        return self.account(self.throttle(nbytes, requests, started, write=False))

    def charge_write(self, nbytes: int, requests: int, started: float) -> "IOCharge":
        return self.account(self.throttle(nbytes, requests, started, write=True))

    def throttle(self, nbytes: int, requests: int, started: float, write: bool) -> "IOCharge":
        """Sleep until the emulated device would have finished. Safe in loader worker processes;
        the returned charge is accounted by the training process (``account``)."""
        slept = 0.0
        if self.emulated:
            bandwidth = self.write_bytes_per_s if write else self.read_bytes_per_s
            modelled = requests * self.latency_s + nbytes / bandwidth
            slept = self._sleep(modelled - (time.perf_counter() - started))
        return IOCharge(nbytes, requests, time.perf_counter() - started, slept, write)

    def _sleep(self, wait: float) -> float:
        """Sleep ``wait`` seconds less any earlier overshoot; returns the seconds slept."""
        if wait <= 0:   # the real device was slower than the model: nothing to add
            return 0.0
        with self._late_lock:
            credit = min(self._late_s, wait)
            self._late_s -= credit
        wait -= credit
        if wait <= 0:
            return 0.0
        began = time.perf_counter()
        time.sleep(wait)
        slept = time.perf_counter() - began
        with self._late_lock:
            self._late_s += max(slept - wait, 0.0)
        return slept

    def account(self, charge: "IOCharge") -> "IOCharge":
        with self.io.lock:
            if charge.write:
                self.io.write_bytes += charge.nbytes
                self.io.write_seconds += charge.seconds
            else:
                self.io.read_bytes += charge.nbytes
                self.io.read_requests += charge.requests
                self.io.read_seconds += charge.seconds
            self.io.emulated_delay_seconds += charge.emulated_delay_seconds
        return charge

    def stage(self, files: Iterable[str]) -> "IOCharge":
        """Bring the dataset files to where the readers open them, once per run after run_start.
        A file tier reads in place: nothing to do. The object tier fetches them through S3."""
        return IOCharge(0, 0, 0.0, 0.0)

    def describe(self) -> dict:
        out = {"storage_tier": self.name, "storage_root": self.root,
               "storage_emulated": self.emulated}
        if self.emulated:
            out.update(storage_emulated_read_mb_per_s=self.read_bytes_per_s / 1e6,
                       storage_emulated_write_mb_per_s=self.write_bytes_per_s / 1e6,
                       storage_emulated_latency_ms=self.latency_s * 1e3)
        return out

    # --- cache clearing (MLPerf cache_clear) ------------------------------------------------
    def clear_cache(self, files: Iterable[str]) -> str:
        """Evict ``files`` from the page cache; returns the method that actually ran."""
        method = self.cache_clear_method
        if method == "none":
            return "none"
        if method == "drop_caches":
            try:
                os.sync()
                with open("/proc/sys/vm/drop_caches", "w") as f:
                    f.write("3\n")
                return "drop_caches"
            except OSError as err:  # not privileged: fall back to per-file eviction
                log.warning("drop_caches failed (%s); evicting dataset files with fadvise", err)
        for path in files:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
        return "fadvise"
