"""Hydra plugin shell for pinchpoint.sweepers.optuna_sweeper (Hydra only instantiates plugin
classes defined under hydra_plugins; the implementation stays in the package)."""
# The module, not the class: Hydra lists every Plugin class it finds in a hydra_plugins
# module, and the implementation is not a plugin of its own.
from pinchpoint.sweepers import optuna_sweeper as _impl

from . import config  # noqa: F401  (registers hydra/sweeper=optuna and the samplers)


class OptunaSweeper(_impl.OptunaSearch):
    pass
