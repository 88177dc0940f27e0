"""Hydra plugin shell for pinchpoint.sweepers.crossover (see optuna_sweeper.py for why)."""
# The module, not the class: Hydra lists every Plugin class it finds in a hydra_plugins
# module, and the implementation is not a plugin of its own.
from pinchpoint.sweepers import crossover as _impl

from . import config  # noqa: F401  (registers hydra/sweeper=crossover)


class CrossoverSweeper(_impl.CrossoverSearch):
    pass
