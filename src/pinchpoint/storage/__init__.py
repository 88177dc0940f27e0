"""Storage tiers: where data and checkpoints live, optional emulation, cache clearing, atomic I/O."""
from pinchpoint.storage.tier import StorageTier

__all__ = ["StorageTier"]
