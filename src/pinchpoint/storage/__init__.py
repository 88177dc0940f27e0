"""Storage tiers: where data and checkpoints live, optional emulation, cache clearing, atomic I/O.

``make_tier(storage)`` is the one place a ``storage`` config becomes a tier; the tier then gives
its checkpoint manager (``tier.checkpoint_manager``, ``tier.checkpoint_source``).
storage/validation.py checks the group before launch."""
from pinchpoint.storage.object_store import Endpoint
from pinchpoint.storage.object_tier import ObjectStoreTier
from pinchpoint.storage.tier import StorageTier


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
