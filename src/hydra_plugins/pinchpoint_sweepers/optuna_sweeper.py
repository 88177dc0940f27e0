"""Hydra plugin shell for pinchpoint.sweepers.optuna_sweeper (Hydra only instantiates plugin
classes defined under hydra_plugins; the implementation stays in the package)."""
from pinchpoint.sweepers.optuna_sweeper import OptunaSearch

from . import config  # noqa: F401  (registers hydra/sweeper=optuna and the samplers)


class OptunaSweeper(OptunaSearch):
    pass
