"""pinchpoint's Hydra sweepers, found by Hydra through the ``hydra_plugins`` namespace package:
``hydra/sweeper=optuna`` (Optuna 5 search) and ``hydra/sweeper=crossover`` (adaptive crossover)."""
