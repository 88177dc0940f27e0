"""Config schemas of the sweepers, registered in Hydra's ConfigStore when Hydra scans plugins.

Names, fields and defaults follow hydra-optuna-sweeper (group hydra/sweeper option ``optuna``,
samplers in hydra/sweeper/sampler), so a config written for that plugin runs unchanged. Sampler
options are plain dicts: every key is passed to the Optuna sampler (null = Optuna's default,
which for every key equals the plugin's default).
"""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

AUTO = "auto"   # pinchpoint.runner.validation.validate for train.py's app, none for others


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.pinchpoint_sweepers.optuna_sweeper.OptunaSweeper"
    _recursive_: bool = False          # the sweeper builds the sampler (grid needs the space)
    defaults: List[Any] = field(default_factory=lambda: [{"sampler": "tpe"}])
    sampler: Any = MISSING
    direction: Any = "minimize"        # or a list, one per objective
    # Recorded metric(s) to optimise; null = the task's return value (a tuple for several
    # directions), except in pinchpoint's own app, where null = time_to_train_s.
    objective: Any = None
    storage: Optional[str] = None      # null = in memory; e.g. sqlite:///outputs/optuna.db
    study_name: Optional[str] = None   # null = Optuna's (pinchpoint's app: tracking.experiment)
    n_trials: int = 20                 # new trials per invocation
    n_jobs: int = 2                    # trials per launcher batch
    max_failure_rate: float = 0.0      # share of a batch that may fail; above it, stop
    search_space: Optional[Dict[str, Any]] = None  # pre-1.2 syntax: refused with a hint
    custom_search_space: Optional[str] = None
    params: Optional[Dict[str, str]] = None
    validator: Optional[str] = AUTO    # pre-flight check of every trial's config (null: none)
    plots: Optional[bool] = None       # the study's plots (PNG, also on the MLflow parent
    #                                    run); null = in pinchpoint's own app only


@dataclass
class CrossoverSweeperConf:
    _target_: str = "hydra_plugins.pinchpoint_sweepers.crossover_sweeper.CrossoverSweeper"
    axis: Optional[str] = None         # the ordered axis (a swept key); null = the numeric one
    by: Optional[str] = None           # the alternatives (a swept key), or dominant_phase
    metric: str = "time_to_train_s"
    direction: str = "minimize"
    coarse: int = 3                    # evenly spaced first-round points, both ends included
    resolution: Optional[float] = None  # interval axes: step (linear) or factor (log)
    params: Optional[Dict[str, str]] = None
    validator: Optional[str] = AUTO


SAMPLERS = {
    "tpe": {"_target_": "optuna.samplers.TPESampler", "seed": None, "n_startup_trials": None,
            "n_ei_candidates": None, "multivariate": None, "group": None,
            "constant_liar": None, "prior_weight": None, "consider_prior": None,
            "consider_magic_clip": None, "consider_endpoints": None,
            "warn_independent_sampling": None},
    "random": {"_target_": "optuna.samplers.RandomSampler", "seed": None},
    "grid": {"_target_": "optuna.samplers.GridSampler", "seed": None},
    "cmaes": {"_target_": "optuna.samplers.CmaEsSampler", "seed": None, "x0": None,
              "sigma0": None, "n_startup_trials": None, "restart_strategy": None,
              "popsize": None, "use_separable_cma": None, "with_margin": None,
              "consider_pruned_trials": None, "warn_independent_sampling": None},
    "nsgaii": {"_target_": "optuna.samplers.NSGAIISampler", "seed": None,
               "population_size": None, "mutation_prob": None, "crossover_prob": None,
               "swapping_prob": None},
    "qmc": {"_target_": "optuna.samplers.QMCSampler", "seed": None, "qmc_type": None,
            "scramble": None},
    "gp": {"_target_": "optuna.samplers.GPSampler", "seed": None, "n_startup_trials": None,
           "deterministic_objective": None},
    # Removed from Optuna 4; named so a config written for it gets the plugin's message.
    "motpe": {"_target_": "hydra_plugins.pinchpoint_sweepers.config.motpe_removed"},
}


def motpe_removed(**_: Any):
    raise ValueError("The 'motpe' sampler was removed in Optuna 4.0. Use "
                     "'hydra/sweeper/sampler=tpe' instead. TPESampler now handles "
                     "multi-objective optimization.")

cs = ConfigStore.instance()
cs.store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="pinchpoint")
cs.store(group="hydra/sweeper", name="crossover", node=CrossoverSweeperConf,
         provider="pinchpoint")
for _name, _node in SAMPLERS.items():
    cs.store(group="hydra/sweeper/sampler", name=_name, node=_node, provider="pinchpoint")
