"""Optuna search as a Hydra sweeper, on a current Optuna (hydra-optuna-sweeper pins optuna < 3).

Reads hydra-optuna-sweeper's config unchanged (params, direction, n_trials, n_jobs, storage,
study_name, sampler, max_failure_rate, custom_search_space) and adds:
- objective: metric name(s) read from what each run recorded (MLflow run, else its
  phase_summary.json, else the return value); null = the task's return value, as upstream.
  A run that is not a success gets the worst value (inf for minimize).
- a persistent study by default (sqlite under output_root, study named after the experiment),
  so re-running the command resumes it; a proposal equal to an earlier trial is re-asked, so the
  study holds no duplicate trials.
- pre-flight: every trial's config is composed and validated before its batch launches; a trial
  whose swept values are infeasible is pruned (never run), any other invalid field stops the sweep.
"""
from __future__ import annotations

import itertools
import json
import logging
import math
import os
from typing import Any, Optional, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf

from pinchpoint.sweepers import common
from pinchpoint.sweepers.space import Axis, Space, SweepError, check_keys, parse, render

log = logging.getLogger(__name__)
PROPOSALS = 64   # re-asks before falling back to an unseen grid point


class OptunaSearch(common.LaunchingSweeper):
    def __init__(self, sampler: Any, direction: Any = "minimize",
                 objective: Any = "time_to_train_s", storage: Optional[str] = None,
                 study_name: Optional[str] = None, n_trials: int = 20, n_jobs: int = 2,
                 max_failure_rate: float = 1.0, params: Optional[DictConfig] = None,
                 search_space: Any = None, custom_search_space: Optional[str] = None,
                 validator: Optional[str] = common.DEFAULT_VALIDATOR, plots: bool = True,
                 **unused: Any) -> None:
        self.sampler_cfg = sampler
        self.directions = _directions(direction)
        self.objectives = _objectives(objective, len(self.directions))
        self.storage, self.study_name = storage, study_name
        if not isinstance(n_trials, int) or n_trials < 1:
            raise SweepError(f"hydra.sweeper.n_trials={n_trials!r}: must be an integer >= 1")
        if not isinstance(n_jobs, int) or n_jobs < 1:
            raise SweepError(f"hydra.sweeper.n_jobs={n_jobs!r}: must be an integer >= 1")
        if search_space:
            raise SweepError("hydra.sweeper.search_space is the pre-1.2 syntax; write the same "
                             "axes as hydra.sweeper.params (e.g. x: interval(0, 1))")
        self.n_trials, self.n_jobs = n_trials, n_jobs
        self.max_failure_rate = max_failure_rate
        self.params = params
        self.custom_search_space = custom_search_space
        self.validator, self.plots = validator, plots
        self.job_idx = 0

    # --- the sweep ---------------------------------------------------------------------------
    def sweep(self, arguments: list[str]) -> list[common.PointResult]:
        import optuna

        space = parse(self.params, arguments)
        if not space.axes:
            raise SweepError("empty search space: give hydra.sweeper.params or sweep overrides "
                             "such as dataset.batch_size=choice(512,1024,2048)")
        check_keys(space, self.config)
        checker = common.PointChecker(self.hydra_context, self.config, self.validator)
        dists = {k: _distribution(a) for k, a in space.axes.items()}
        extend = None
        if self.custom_search_space:
            from hydra.utils import get_method
            extend = get_method(self.custom_search_space)
        sampler = self._sampler(space)
        study = optuna.create_study(study_name=self._study_name(), storage=self._storage(),
                                    sampler=sampler, directions=self.directions,
                                    load_if_exists=True)
        _fail_stale(study)
        before = len(study.trials)
        log.info("Optuna study %r (%s): %d earlier trial(s), %d to run, %d per batch, sampler %s",
                 study.study_name, self._storage(), before, self.n_trials, self.n_jobs,
                 type(sampler).__name__)
        parent = common.ParentRun(self.config)
        parent.set_tags({"pinchpoint.sweeper": "optuna", "optuna.study_name": study.study_name,
                         "optuna.storage": _redact(self._storage()),
                         "pinchpoint.axes": ",".join(a.name for a in space.axes.values()),
                         "optuna.objective": ",".join(self.objectives or ["return_value"]),
                         "optuna.direction": ",".join(self.directions)})
        results: list[common.PointResult] = []
        told = 0
        while told < self.n_trials:
            batch, pruned = self._ask_batch(study, sampler, dists, space, checker, extend,
                                            min(self.n_jobs, self.n_trials - told))
            told += pruned
            if not batch:
                if pruned:
                    continue
                log.info("search space exhausted: every point has been tried")
                break
            returns = common.launch(self.launcher, [o for _, o in batch], self.job_idx)
            self.job_idx += len(returns)
            batch_results = common.read_results(returns)
            self._tell(study, batch, returns, batch_results)
            results.extend(batch_results)
            told += len(batch)
        self._finish(study, before, parent)
        return results

    # --- asking -------------------------------------------------------------------------------
    def _ask_batch(self, study, sampler, dists, space: Space, checker, extend, size: int):
        """Up to ``size`` new, distinct, feasible trials; infeasible ones are pruned (counted)."""
        import optuna

        batch, pruned = [], 0
        taken = {_freeze(t.params) for t in study.get_trials(deepcopy=False)
                 if t.state != optuna.trial.TrialState.FAIL}
        while len(batch) + pruned < size:
            params = self._propose(study, sampler, dists, space, taken)
            if params is None:
                break
            taken.add(_freeze(params))
            study.enqueue_trial(params)
            trial = study.ask(dists)
            if extend is not None:
                extend(self.config, trial)
            overrides = [*space.fixed_overrides(),
                         *(f"{k}={render(v)}" for k, v in trial.params.items())]
            err = checker.problem(overrides)
            if err is not None:
                if not _is_swept(err, space):
                    raise SweepError(f"point {' '.join(overrides)} is invalid: {err}") from err
                trial.set_user_attr("infeasible", str(err))
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                log.info("trial %d pruned before launch: %s", trial.number, err)
                pruned += 1
                continue
            trial.set_user_attr("overrides", " ".join(overrides))
            batch.append((trial, overrides))
        return batch, pruned

    def _propose(self, study, sampler, dists, space: Space, taken: set) -> Optional[dict]:
        """The sampler's next proposal that is not already in the study (asked on a scratch copy
        of the study, so discarded proposals leave no trial behind)."""
        import optuna

        level = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "study created" per proposal
        try:
            scratch = optuna.create_study(sampler=sampler, directions=self.directions)
        finally:
            optuna.logging.set_verbosity(level)
        scratch.add_trials([t for t in study.get_trials(deepcopy=False) if t.state.is_finished()
                            and t.state != optuna.trial.TrialState.FAIL])
        for _ in range(PROPOSALS):
            trial = scratch.ask(dists)
            if _freeze(trial.params) not in taken:
                return dict(trial.params)
            scratch.tell(trial, state=optuna.trial.TrialState.FAIL)
        for point in _grid(space):  # a small finite space: the first point not tried yet
            if _freeze(point) not in taken:
                return point
        return None

    # --- telling ------------------------------------------------------------------------------
    def _tell(self, study, batch, returns, results: list[common.PointResult]) -> None:
        failures = 0
        for (trial, _), ret, res in zip(batch, returns, results):
            values = self._values(ret, res)
            failures += res.status == "failed"
            for key, value in (("status", res.status), ("mlflow_run_id", res.run_id),
                               ("bottleneck", res.bottleneck), ("error", res.error)):
                if value is not None:
                    trial.set_user_attr(key, value)
            study.tell(trial, values if len(values) > 1 else values[0])
            log.info("trial %d: %s -> %s", trial.number, res.status,
                     ", ".join(f"{n}={v:.4g}" for n, v in
                               zip(self.objectives or ["return_value"], values)))
        if returns and failures / len(returns) > self.max_failure_rate:
            raise SweepError(f"{failures} of {len(returns)} jobs failed, above "
                             f"hydra.sweeper.max_failure_rate={self.max_failure_rate}")

    def _values(self, ret, res: common.PointResult) -> list[float]:
        if self.objectives:
            return [res.value(m, d) for m, d in zip(self.objectives, self.directions)]
        worst = [math.inf if d == "minimize" else -math.inf for d in self.directions]
        if res.status == "failed":
            return worst
        value = ret.return_value
        values = list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]
        if len(values) != len(self.directions):
            raise SweepError(f"the task returned {len(values)} value(s) for "
                             f"{len(self.directions)} direction(s) (hydra.sweeper.direction)")
        return [float(v) for v in values]

    # --- setup pieces -------------------------------------------------------------------------
    def _sampler(self, space: Space):
        from hydra.utils import instantiate

        cfg = OmegaConf.to_container(self.sampler_cfg, resolve=True) \
            if OmegaConf.is_config(self.sampler_cfg) else dict(self.sampler_cfg or {})
        target = cfg.get("_target_", "")
        kwargs = {k: v for k, v in cfg.items() if v is not None and k != "_partial_"}
        if target.endswith("CmaEsSampler"):
            try:
                import cmaes  # noqa: F401  (Optuna imports it only when it first samples)
            except ImportError as err:
                raise SweepError("hydra/sweeper/sampler=cmaes needs the 'cmaes' package "
                                 "(pip install cmaes)") from err
        if target.endswith("GridSampler"):
            grid = {}
            for key, axis in space.axes.items():
                if axis.kind == "interval":
                    raise SweepError(f"{key}: the grid sampler needs discrete values "
                                     "(choice or range), not interval(...)")
                grid[key] = axis.values
            kwargs["search_space"] = grid
            n = math.prod(len(v) for v in grid.values())
            if n < self.n_trials:
                log.info("grid has %d points: n_trials lowered from %d", n, self.n_trials)
                self.n_trials = n
        return instantiate(kwargs)

    def _storage(self) -> str:
        storage = self.storage
        if not storage:
            root = os.path.abspath(str(self.config.get("output_root", "outputs")))
            os.makedirs(root, exist_ok=True)
            return f"sqlite:///{root}/optuna.db"
        if storage.startswith("sqlite:///") and not os.path.isabs(storage[10:]):
            return "sqlite:///" + os.path.abspath(storage[10:])
        return storage

    def _study_name(self) -> str:
        return self.study_name or str(OmegaConf.select(self.config, "tracking.experiment",
                                                       default=None) or "pinchpoint")

    def _finish(self, study, before: int, parent: common.ParentRun) -> None:
        import optuna

        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        summary: dict[str, Any] = {"study_name": study.study_name, "trials": len(study.trials),
                                   "trials_this_sweep": len(study.trials) - before,
                                   "directions": self.directions,
                                   "objectives": self.objectives or ["return_value"]}
        if len(self.directions) == 1 and done and math.isfinite(study.best_value):
            summary.update(best_value=study.best_value, best_params=study.best_params,
                           best_trial=study.best_trial.number)
        elif len(self.directions) > 1:
            summary["best_trials"] = [{"number": t.number, "values": t.values,
                                       "params": t.params} for t in study.best_trials]
        out = os.path.join(self.config.hydra.sweep.dir, "optuna")
        os.makedirs(out, exist_ok=True)
        path = os.path.join(self.config.hydra.sweep.dir, "optimization_results.yaml")
        with open(path, "w") as f:
            f.write(OmegaConf.to_yaml(OmegaConf.create(json.loads(json.dumps(summary,
                                                                              default=str)))))
        log.info("study %s: %d trials in total; best %s", study.study_name, len(study.trials),
                 summary.get("best_value", "none"))
        parent.set_tags({"optuna.trials_total": len(study.trials),
                         "optuna.best_params": json.dumps(summary.get("best_params", {}))})
        parent.log_metrics({"optuna_trials_total": len(study.trials),
                            "optuna_trials_this_sweep": summary["trials_this_sweep"],
                            **({"optuna_best_value": summary["best_value"]}
                               if "best_value" in summary else {})})
        parent.log_artifact(path)
        if self.plots:
            from pinchpoint.sweepers.optuna_plots import save_plots
            for file in save_plots(study, out, self.objectives or ["return_value"]):
                parent.log_artifact(file, "optuna")


# --- helpers ----------------------------------------------------------------------------------
def _directions(direction: Any) -> list[str]:
    items = list(direction) if isinstance(direction, (list, tuple, ListConfig)) else [direction]
    out = [getattr(d, "name", str(d)).lower() for d in items]
    for d in out:
        if d not in ("minimize", "maximize"):
            raise SweepError(f"hydra.sweeper.direction={d!r}: must be minimize or maximize")
    if not out:
        raise SweepError("hydra.sweeper.direction is empty: give minimize or maximize")
    return out


def _objectives(objective: Any, n: int) -> Optional[list[str]]:
    if objective is None:
        return None
    names = [str(o) for o in objective] if isinstance(objective, (list, tuple, ListConfig)) \
        else [str(objective)]
    if len(names) != n:
        raise SweepError(f"hydra.sweeper.objective names {len(names)} metric(s) but "
                         f"hydra.sweeper.direction has {n}: give one metric per direction "
                         "(or objective: null to use the task's return value)")
    return names


def _distribution(axis: Axis):
    from optuna.distributions import (CategoricalDistribution, FloatDistribution,
                                      IntDistribution)

    if axis.kind == "interval":
        cls = IntDistribution if axis.integer else FloatDistribution
        return cls(axis.low, axis.high, log=axis.log)
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in axis.values)
    if axis.kind == "range" and ints and len(axis.values) > 1:
        step = axis.values[1] - axis.values[0]
        return IntDistribution(axis.values[0], axis.values[-1], step=step)
    return CategoricalDistribution(axis.values)


def _grid(space: Space, limit: int = 100_000):
    """Every point of a finite space (nothing when an axis is continuous or the grid is huge)."""
    axes = list(space.axes.items())
    if any(a.kind == "interval" for _, a in axes) or \
            math.prod(len(a.values) for _, a in axes) > limit:
        return
    for combo in itertools.product(*(a.values for _, a in axes)):
        yield {k: v for (k, _), v in zip(axes, combo)}


def _freeze(params: dict) -> tuple:
    return tuple(sorted((k, json.dumps(v)) for k, v in params.items()))


def _fail_stale(study) -> None:
    """Trials left RUNNING (or enqueued and never asked) by an interrupted sweep never finished:
    mark them failed, so their point can be proposed again and our own enqueues are not mixed up
    with theirs."""
    import optuna

    states = optuna.trial.TrialState
    for t in study.get_trials(deepcopy=False, states=(states.RUNNING,)):
        try:
            study.tell(t.number, state=states.FAIL)
            log.warning("trial %d was left unfinished by an earlier sweep: marked failed",
                        t.number)
        except Exception as err:  # another process finished it meanwhile
            log.debug("could not fail stale trial %d: %s", t.number, err)
    while study.get_trials(deepcopy=False, states=(states.WAITING,)):
        study.tell(study.ask(), state=states.FAIL)


def _is_swept(err, space: Space) -> bool:
    """Does this ConfigError come from the values Optuna chose (so the point is infeasible)?"""
    names = [a.name for a in space.axes.values()]
    text = f"{err.field} {err.allowed}"
    return any(err.field == n or err.field.startswith(n + ".") or n in text for n in names)


def _redact(url: str) -> str:
    """Hide a password in an RDB URL before it becomes a tag."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


__all__: Sequence[str] = ["OptunaSearch"]
