"""The object tier (``storage=object``): a StorageTier whose datasets and checkpoints live in a
bucket, reached through the S3 API of storage/object_store.py. Built by ``make_tier``
(pinchpoint.storage) from a storage config with an ``object_store`` block.

Datasets are *staged*: the reader code is the same mmap reader as for every other tier, so the run
publishes the dataset files to the bucket once (at cache-clear time) and, after run_start, fetches
them back through S3 GETs into the tier's local cache folder (``storage.root``) with ``stage``.
That fetch is the object store's read cost and is what the tier's read accounting counts; later
reads of the staged copy are local-disk reads and are not object-store traffic. (Why not ranged
GETs per batch: the readers memory-map the real formats; staging keeps one reader for every tier,
as MLPerf submitters on object storage stage to node-local disk.) Checkpoints go straight to the
bucket (storage/s3_checkpoint.py).
"""
from __future__ import annotations

import os
from typing import Iterable, Optional

from pinchpoint.storage.object_store import Endpoint, ObjectStore
from pinchpoint.storage.tier import IOCharge, StorageTier


class ObjectStoreTier(StorageTier):
    """A StorageTier whose datasets and checkpoints live in a bucket. ``root`` is the local cache
    the datasets are staged into; emulation (when on) applies to the S3 requests only."""

    def __init__(self, name: str, root: str, endpoint: Endpoint, **tier_kwargs):
        super().__init__(name, root, **tier_kwargs)
        self.endpoint = endpoint
        self.store = ObjectStore(endpoint, throttle=self._request_throttle)

    def _request_throttle(self, nbytes: int, requests: int, started: float,
                          write: bool) -> IOCharge:
        return StorageTier.throttle(self, nbytes, requests, started, write)

    def throttle(self, nbytes: int, requests: int, started: float, write: bool) -> IOCharge:
        """Reads of the staged local copy (the data readers call this) are local-disk reads, not
        object-store traffic: neither slowed nor counted. Writes keep the tier's model."""
        if write:
            return super().throttle(nbytes, requests, started, write)
        return IOCharge(0, 0, 0.0, 0.0, False)

    def checkpoint_url(self, run_key: str) -> str:
        return self.store.url("checkpoints", run_key)

    # --- checkpoints: DCP through the S3 API (storage/s3_checkpoint.py, which imports torch) ---
    def checkpoint_manager(self, run_key: str, keep: int = 2):
        """This run's checkpoints in the bucket, under ``checkpoints/<run_key>``."""
        from pinchpoint.storage.s3_checkpoint import S3CheckpointManager
        return S3CheckpointManager(self, run_key, keep)

    def checkpoint_source(self, where: str):
        """Another run's checkpoints (checkpoint.resume_from): an ``s3://`` URL, or a run key
        in this bucket."""
        from pinchpoint.storage.s3_checkpoint import S3CheckpointManager
        return S3CheckpointManager.source(self, where)

    def dataset_key(self, path: str) -> Optional[str]:
        rel = os.path.relpath(os.path.abspath(path), self.datasets_dir())
        return None if rel.startswith("..") else self.store.key("datasets", rel)

    def describe(self) -> dict:
        return {**super().describe(), "storage_object_endpoint": self.endpoint.url,
                "storage_object_bucket": self.endpoint.bucket}

    # --- datasets ----------------------------------------------------------------------------
    def publish(self, files: Iterable[str]) -> int:
        """Upload dataset files that the bucket lacks (or holds at another size); returns the
        number uploaded. Data preparation, like generation: not charged to the run."""
        files = [f for f in files if self.dataset_key(f) is not None]
        present = self.store.sizes(self.store.key("datasets") + "/")
        uploaded = 0
        for path in files:
            key, size = self.dataset_key(path), os.path.getsize(path)
            if present.get(key) != size:
                with open(path, "rb") as f:
                    self.store.client.upload_fileobj(f, self.store.bucket, key)
                uploaded += 1
        return uploaded

    def stage(self, files: Iterable[str]) -> IOCharge:
        """Fetch each dataset file from the bucket into the local cache (replacing the copy
        there, atomically: a reader never sees half a file), charged to the tier's read
        accounting at the emulated profile. The runner calls it once per run after run_start
        (MLPerf: data is first touched inside the clock), so it lands in the first step's
        data_wait and in time_to_train."""
        total = IOCharge(0, 0, 0.0, 0.0)
        for path in files:
            key = self.dataset_key(path)
            if key is None:
                continue
            charge = self.account(self.store.download(key, path))
            total = IOCharge(total.nbytes + charge.nbytes, total.requests + charge.requests,
                             total.seconds + charge.seconds,
                             total.emulated_delay_seconds + charge.emulated_delay_seconds)
        return total

    def clear_cache(self, files: Iterable[str]) -> str:
        """MLPerf cache_clear (before init): publish what the bucket lacks and evict the local
        copies from the page cache. The read through S3 itself is ``stage``, after run_start."""
        files = list(files)
        inside = [f for f in files if self.dataset_key(f) is not None]
        if inside:
            self.publish(inside)
        method = super().clear_cache(files)
        return f"s3_publish+{method}" if inside else method
