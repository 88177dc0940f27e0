"""The ``storage`` group before launch (runner/validation.py calls ``validate_storage``)."""
from __future__ import annotations

from typing import Any

from pinchpoint.config.validate import writable_dir
from pinchpoint.errors import non_negative, one_of, require
from pinchpoint.storage.object_store import check_reachable

# The environment variable each file tier's root comes from (named when the root is refused).
STORAGE_ENV = {"local": "PINCHPOINT_LOCAL_ROOT", "nfs": "PINCHPOINT_NFS_ROOT",
               "nvme": "PINCHPOINT_NVME_ROOT"}


def validate_storage(storage: Any) -> None:
    """A known cache-clear method, a reachable endpoint (storage=object), a writable root, a
    positive emulated bandwidth."""
    one_of(storage.cache_clear, "storage.cache_clear", ["none", "fadvise", "drop_caches"])
    if getattr(storage, "object_store", None) is not None:
        check_reachable(storage)   # one short try: an unreachable endpoint fails before launch
    writable_dir(storage.root, "storage.root", STORAGE_ENV.get(storage.name))
    e = storage.emulation
    if e.enabled:
        for key in ("read_mb_per_s", "write_mb_per_s"):
            require(getattr(e, key), f"storage.emulation.{key}", lambda v: v > 0,
                    "a bandwidth > 0 MB/s (or storage.emulation.enabled=false)")
        non_negative(e.latency_ms, "storage.emulation.latency_ms")
