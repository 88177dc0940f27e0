"""pinchpoint's Hydra sweepers, found by Hydra through the ``hydra_plugins`` namespace package:
``hydra/sweeper=optuna`` (Optuna search; pyproject.toml pins the version) and
``hydra/sweeper=crossover`` (adaptive crossover)."""
