"""Storage tiers: where data and checkpoints live, optional emulation, cache clearing, atomic I/O.

``make_tier(storage)`` is the one place a ``storage`` config becomes a tier; the tier then gives
its checkpoint manager (``tier.checkpoint_manager``, ``tier.checkpoint_source``).
``validate_storage`` checks the group before launch (runner/validation.py calls it)."""
from typing import Any

from pinchpoint.config.validate import writable_dir
from pinchpoint.errors import non_negative, one_of, require
from pinchpoint.storage.object_store import Endpoint, check_reachable
from pinchpoint.storage.object_tier import ObjectStoreTier
from pinchpoint.storage.tier import StorageTier

# The environment variable each file tier's root comes from (named when the root is refused).
STORAGE_ENV = {"local": "PINCHPOINT_LOCAL_ROOT", "nfs": "PINCHPOINT_NFS_ROOT",
               "nvme": "PINCHPOINT_NVME_ROOT"}


def make_tier(storage) -> StorageTier:
    """The tier a ``storage`` config group describes: the object tier when it has an
    ``object_store`` block (storage=object), else a file tier at ``storage.root``."""
    emu = storage.emulation
    options = dict(emulated=bool(emu.enabled), read_mb_per_s=emu.read_mb_per_s,
                   write_mb_per_s=emu.write_mb_per_s, latency_ms=emu.latency_ms,
                   cache_clear=storage.cache_clear)
    if getattr(storage, "object_store", None) is not None:
        return ObjectStoreTier(storage.name, storage.root, Endpoint.from_config(storage),
                               **options)
    return StorageTier(storage.name, storage.root, **options)


def validate_storage(storage: Any) -> None:
    """The ``storage`` group before launch: a known cache-clear method, a reachable endpoint
    (storage=object), a writable root, a positive emulated bandwidth."""
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
