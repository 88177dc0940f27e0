"""Hydra plugin shell for pinchpoint.sweepers.crossover (see optuna_sweeper.py for why)."""
from pinchpoint.sweepers.crossover import CrossoverSearch

from . import config  # noqa: F401  (registers hydra/sweeper=crossover)


class CrossoverSweeper(CrossoverSearch):
    pass
