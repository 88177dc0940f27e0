"""Config schemas of the sweepers, registered in Hydra's ConfigStore when Hydra scans plugins.

Names and fields follow hydra-optuna-sweeper (group hydra/sweeper option ``optuna``, samplers in
hydra/sweeper/sampler), so a config written for that plugin runs unchanged. Sampler options are
plain dicts: every key is passed to the Optuna sampler (null = Optuna's default).
"""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

VALIDATOR = "pinchpoint.config.validate"


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.pinchpoint_sweepers.optuna_sweeper.OptunaSweeper"
    _recursive_: bool = False          # the sweeper builds the sampler (grid needs the space)
    defaults: List[Any] = field(default_factory=lambda: [{"sampler": "tpe"}])
    sampler: Any = MISSING
    direction: Any = "minimize"        # or a list, one per objective
    objective: Any = "time_to_train_s"  # recorded metric(s); null = the task's return value
    storage: Optional[str] = None      # null = sqlite:///<output_root>/optuna.db
    study_name: Optional[str] = None   # null = tracking.experiment (a re-run resumes it)
    n_trials: int = 20                 # new trials per invocation
    n_jobs: int = 2                    # trials per launcher batch
    max_failure_rate: float = 1.0      # failed runs count as the worst value; stop above this
    search_space: Optional[Dict[str, Any]] = None  # pre-1.2 syntax: refused with a hint
    custom_search_space: Optional[str] = None
    params: Optional[Dict[str, str]] = None
    validator: Optional[str] = VALIDATOR  # pre-flight check of every trial's config
    plots: bool = True                 # optuna plots as artifacts of the parent MLflow run


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
    validator: Optional[str] = VALIDATOR


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
}

cs = ConfigStore.instance()
cs.store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="pinchpoint")
cs.store(group="hydra/sweeper", name="crossover", node=CrossoverSweeperConf,
         provider="pinchpoint")
for _name, _node in SAMPLERS.items():
    cs.store(group="hydra/sweeper/sampler", name=_name, node=_node, provider="pinchpoint")
