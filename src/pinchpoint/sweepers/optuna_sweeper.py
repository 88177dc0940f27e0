"""Optuna search as a Hydra sweeper, on a current Optuna (hydra-optuna-sweeper pins optuna < 3).

A drop-in for hydra-optuna-sweeper: the same config (params, direction, n_trials, n_jobs,
storage, study_name, sampler, max_failure_rate, custom_search_space) behaves as it does there —
``storage: null`` is an in-memory study, the task's return value (a tuple for several
directions) is the objective, a failed job fails the sweep unless ``max_failure_rate`` allows
it, and ``optimization_results.yaml`` has the plugin's keys. On top of that:

- in pinchpoint's own app (train.py) the objective is a recorded metric (default
  time_to_train_s, or ``objective: [names]``), every trial's config is validated before its
  batch launches (a trial whose swept values are infeasible is pruned, never run; any other
  invalid field refuses the sweep before a study or trial exists), and the study is named after
  the experiment; a named sweep keeps its study by setting ``storage`` (sweeps/dlrm_optuna.yaml);
- a persistent study resumes without duplicate trials: a proposal equal to an earlier trial is
  re-asked (on a scratch copy of the study, with a sampler of its own);
- the study's plots and the best point go to the sweep's MLflow parent run.
"""
from __future__ import annotations

import logging
import math
import os
from typing import Any, Optional, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf

from pinchpoint.sweepers import common, optuna_results
from pinchpoint.sweepers.optuna_space import distribution, every_point, freeze, grid_choices
from pinchpoint.sweepers.space import (PointsFailed, Space, SweepError, check_keys,
                                       exits_cleanly, parse, render)

log = logging.getLogger(__name__)
PROPOSALS = 64   # re-asks before falling back to an unseen point of a finite space


class OptunaSearch(common.LaunchingSweeper):
    def __init__(self, sampler: Any, direction: Any = "minimize", objective: Any = None,
                 storage: Optional[str] = None, study_name: Optional[str] = None,
                 n_trials: int = 20, n_jobs: int = 2, max_failure_rate: float = 0.0,
                 params: Optional[DictConfig] = None, search_space: Any = None,
                 custom_search_space: Optional[str] = None,
                 validator: Optional[str] = common.AUTO, plots: Optional[bool] = None,
                 **unused: Any) -> None:
        self.sampler_cfg = sampler
        self.directions = _directions(direction)
        self.objective = objective
        self.storage, self.study_name = storage, study_name
        for name, value in (("n_trials", n_trials), ("n_jobs", n_jobs)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SweepError(f"hydra.sweeper.{name}={value!r}: must be an integer >= 1")
        if not isinstance(max_failure_rate, (int, float)) or not 0 <= max_failure_rate <= 1:
            raise SweepError(f"hydra.sweeper.max_failure_rate={max_failure_rate!r}: a number "
                             "from 0.0 (any failed trial stops the sweep) to 1.0")
        if search_space:
            raise SweepError("hydra.sweeper.search_space is the pre-1.2 syntax; write the same "
                             "axes as hydra.sweeper.params (e.g. x: interval(0, 1))")
        self.n_trials, self.n_jobs = n_trials, n_jobs
        self.max_failure_rate = float(max_failure_rate)
        self.params = params
        self.custom_search_space = custom_search_space
        self.validator, self.plots = validator, plots
        self.job_idx = 0

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.own_app = common.is_pinchpoint_app(config)
        if self.plots is None:   # other apps get what upstream writes, and start no faster
            self.plots = self.own_app
        self.objectives = _objectives(self.objective, len(self.directions), self.own_app)

    # --- the sweep ---------------------------------------------------------------------------
    @exits_cleanly
    def sweep(self, arguments: list[str]) -> list[common.PointResult]:
        with self.closing_parent():
            return self._sweep(arguments)

    def _sweep(self, arguments: list[str]) -> list[common.PointResult]:
        space = parse(self.params, arguments)
        if not space.axes:
            raise SweepError("empty search space: give hydra.sweeper.params or sweep overrides "
                             "such as dataset.batch_size=choice(512,1024,2048)")
        check_keys(space, self.config)
        checker = common.PointChecker(self.hydra_context, self.config, self.validator)
        _refuse_invalid_fields(space, checker)
        dists = {k: distribution(a) for k, a in space.axes.items()}
        extend = None
        if self.custom_search_space:
            from hydra.utils import get_method
            extend = get_method(self.custom_search_space)
        study, drop = self._open_study(space)
        try:
            return self._trials(study, dists, space, checker, extend)
        except SweepError:
            if not self.launched:   # refused before anything ran: leave no study behind
                drop()
            raise

    def _trials(self, study, dists, space: Space, checker, extend) -> list:
        before = self.first_trial = len(study.trials)
        parent = common.ParentRun(self.config)
        parent.set_tags(optuna_results.start_tags(self, study, space, self._storage()))
        results: list[common.PointResult] = []
        told = 0
        while told < self.n_trials:
            batch, pruned = self._ask_batch(study, dists, space, checker, extend,
                                            min(self.n_jobs, self.n_trials - told))
            told += pruned
            if not batch:
                if pruned:
                    continue
                log.info("search space exhausted: every point has been tried")
                break
            returns = self.launch([o for _, o in batch], self.job_idx)
            self.job_idx += len(returns)
            batch_results = common.read_results(returns) if self.objectives else \
                [common.PointResult(list(r.overrides or []), "") for r in returns]
            self._tell(study, batch, returns, batch_results)
            results.extend(batch_results)
            told += len(batch)
        optuna_results.finish(self, study, before, parent)
        return results

    # --- the study ----------------------------------------------------------------------------
    def _open_study(self, space: Space):
        """The study (loaded when it exists) and how to undo its creation."""
        import optuna

        sampler = self._sampler(space)   # a bad sampler setting refuses before any file exists
        storage = self._storage()
        path = storage[len("sqlite:///"):] if storage and storage.startswith("sqlite:///") \
            else None
        new_file = path is not None and not os.path.exists(path)
        name = self._study_name()
        existed = storage is not None and name is not None and \
            name in optuna.get_all_study_names(storage)
        study = optuna.create_study(study_name=name, storage=storage,
                                    sampler=sampler, directions=self.directions,
                                    load_if_exists=True)
        _fail_stale(study)
        log.info("Study name: %s", study.study_name)
        log.info("Storage: %s", optuna_results.redact(storage) if storage else
                 "in memory (storage: null)")
        log.info("Sampler: %s", type(study.sampler).__name__)
        log.info("Directions: %s", self.directions)
        if existed:
            log.info("resuming: the study has %d earlier trial(s)", len(study.trials))

        def drop() -> None:
            if new_file:
                os.remove(path)
            elif storage is not None and not existed:
                optuna.delete_study(study_name=study.study_name, storage=storage)
        return study, drop

    def _storage(self) -> Optional[str]:
        storage = self.storage
        if not storage:
            return None   # in memory, as hydra-optuna-sweeper
        storage = str(storage)
        if storage.startswith("sqlite:///") and not os.path.isabs(storage[10:]):
            storage = "sqlite:///" + os.path.abspath(storage[10:])
        if storage.startswith("sqlite:///"):
            os.makedirs(os.path.dirname(storage[10:]), exist_ok=True)
        return storage

    def _study_name(self) -> Optional[str]:
        if self.study_name or not self.own_app:
            return self.study_name
        return str(OmegaConf.select(self.config, "tracking.experiment", default="pinchpoint"))

    def _sampler(self, space: Space, draw: int = 0):
        """A new sampler from the config (each scratch study gets its own: samplers cache
        per-study state, and two in-memory studies share the same study id). ``draw`` moves a
        seeded sampler on, as one sampler's random state moves on from trial to trial."""
        from hydra.utils import instantiate

        cfg = OmegaConf.to_container(self.sampler_cfg, resolve=True) \
            if OmegaConf.is_config(self.sampler_cfg) else dict(self.sampler_cfg or {})
        target = cfg.get("_target_", "")
        kwargs = {k: v for k, v in cfg.items() if v is not None and k != "_partial_"}
        if draw and isinstance(kwargs.get("seed"), int):
            kwargs["seed"] = (kwargs["seed"] + draw) % 2**32
        if target.endswith("CmaEsSampler"):
            try:
                import cmaes  # noqa: F401  (Optuna imports it only when it first samples)
            except ImportError as err:
                raise SweepError("hydra/sweeper/sampler=cmaes needs the 'cmaes' package "
                                 "(pip install cmaes)") from err
        if target.endswith("GridSampler"):
            grid = {k: grid_choices(k, a) for k, a in space.axes.items()}
            kwargs["search_space"] = grid
            n = math.prod(len(v) for v in grid.values())
            if n < self.n_trials:
                log.info("Updating num of trials to %d due to using GridSampler.", n)
                self.n_trials = n
        try:
            return instantiate(kwargs)
        except Exception as err:   # e.g. a sampler option Optuna does not take
            cause = err.__cause__ or err
            raise SweepError(f"hydra/sweeper/sampler ({target}): {cause}") from err

    # --- asking -------------------------------------------------------------------------------
    def _ask_batch(self, study, dists, space: Space, checker, extend, size: int):
        """Up to ``size`` new, distinct, feasible trials; infeasible ones are pruned (counted)."""
        import optuna

        batch, pruned = [], 0
        # An earlier sweep's failed point may be tried again (e.g. a crash since fixed), one
        # that failed in this sweep is not.
        taken = {freeze(t.params) for t in study.get_trials(deepcopy=False)
                 if t.state != optuna.trial.TrialState.FAIL or t.number >= self.first_trial}
        while len(batch) + pruned < size:
            params = self._propose(study, dists, space, taken)
            if params is None:
                break
            taken.add(freeze(params))
            study.enqueue_trial(params)
            trial = study.ask(dists)
            if extend is not None:
                extend(self.config, trial)
            overrides = [*(f"{k}={render(v)}" for k, v in trial.params.items()),
                         *space.fixed_overrides()]
            err = checker.problem(overrides)
            if err is not None:
                if not _is_swept(err, space):
                    raise SweepError(f"point {' '.join(overrides)} is invalid: {err}") from err
                trial.set_user_attr("infeasible", str(err))
                _tell(study, trial, state=optuna.trial.TrialState.PRUNED)
                log.info("trial %d pruned before launch: %s", trial.number, err)
                pruned += 1
                continue
            trial.set_user_attr("overrides", " ".join(overrides))
            batch.append((trial, overrides))
        return batch, pruned

    def _propose(self, study, dists, space: Space, taken: set) -> Optional[dict]:
        """The sampler's next proposal that is not already in the study (asked on a scratch copy
        of the study, so discarded proposals leave no trial behind)."""
        import optuna

        level = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "study created" per proposal
        try:
            scratch = optuna.create_study(sampler=self._sampler(space, len(study.trials)),
                                          directions=self.directions)
        finally:
            optuna.logging.set_verbosity(level)
        scratch.add_trials([t for t in study.get_trials(deepcopy=False) if t.state.is_finished()
                            and t.state != optuna.trial.TrialState.FAIL])
        for _ in range(PROPOSALS):
            trial = scratch.ask(dists)
            if freeze(trial.params) not in taken:
                return dict(trial.params)
            if not _tell(scratch, trial, state=optuna.trial.TrialState.FAIL):
                break   # the grid sampler saw its grid complete
        for point in every_point(space):  # a finite space: the first point not tried yet
            if freeze(point) not in taken:
                return point
        return None

    # --- telling ------------------------------------------------------------------------------
    def _tell(self, study, batch, returns, results: list[common.PointResult]) -> None:
        import optuna

        failures = []
        for (trial, overrides), ret, res in zip(batch, returns, results):
            values, error = self._values(ret, res)
            for key, value in (("status", res.status or None), ("mlflow_run_id", res.run_id),
                               ("bottleneck", res.bottleneck), ("error", error)):
                if value is not None:
                    trial.set_user_attr(key, value)
            if values is None:
                _tell(study, trial, state=optuna.trial.TrialState.FAIL)
                log.warning("trial %d failed: %s", trial.number, error)
                failures.append((trial, overrides, ret, error))
                continue
            _tell(study, trial, values=values)
            log.info("trial %d: %s", trial.number, ", ".join(
                f"{n}={v:.6g}" for n, v in zip(optuna_results.value_names(self), values)))
        if failures and len(failures) / len(returns) > self.max_failure_rate:
            trial, overrides, ret, error = failures[0]
            err = ret._return_value if isinstance(ret._return_value, BaseException) else None
            if err is not None:
                log.error("trial %d (%s) failed", trial.number, " ".join(overrides),
                          exc_info=(type(err), err, err.__traceback__))
            raise PointsFailed(
                f"{len(failures)} of {len(returns)} trial(s) in this batch failed, above "
                f"hydra.sweeper.max_failure_rate={self.max_failure_rate}; trial {trial.number} "
                f"({' '.join(overrides)}): {error}")

    def _values(self, ret, res: common.PointResult):
        """(values, None), or (None, why) for a trial that failed."""
        from hydra.core.utils import JobStatus

        if self.objectives:
            if res.status == "failed":
                return None, res.error or "the run failed"
            return [res.value(m, d) for m, d in zip(self.objectives, self.directions)], None
        if ret.status != JobStatus.COMPLETED:
            return None, common.error_text(ret._return_value)
        value = ret.return_value
        many = len(self.directions) > 1
        try:
            values = [float(v) for v in value] if many else [float(value)]
        except (TypeError, ValueError):
            want = "a list or tuple of float-castable values" if many else "float-castable"
            return None, f"Return value must be {want}. Got {value!r}."
        if len(values) != len(self.directions):
            return None, (f"the task returned {len(values)} value(s) for "
                          f"{len(self.directions)} direction(s) (hydra.sweeper.direction)")
        return values, None


# --- helpers ----------------------------------------------------------------------------------
def _refuse_invalid_fields(space: Space, checker: common.PointChecker) -> None:
    """Before a study exists: compose and validate one point (each axis at its first value);
    an invalid field that is not swept is wrong for every trial, so refuse the sweep."""
    if checker.validator is None:
        return
    probe = [f"{k}={render(a.values[0] if a.values else a.low)}" for k, a in space.axes.items()]
    overrides = [*probe, *space.fixed_overrides()]
    err = checker.problem(overrides)
    if err is not None and not _is_swept(err, space):
        raise SweepError(f"sweep refused, nothing launched: {err}") from err


def _tell(study, trial, **kwargs) -> bool:
    """study.tell; False when the grid sampler asked to stop (it may only do so inside
    study.optimize, which a sweeper does not use)."""
    try:
        study.tell(trial, **kwargs)
    except RuntimeError as err:
        if "Study.stop" not in str(err):
            raise
        return False
    return True


def _directions(direction: Any) -> list[str]:
    items = list(direction) if isinstance(direction, (list, tuple, ListConfig)) else [direction]
    out = [getattr(d, "name", str(d)).lower() for d in items]
    for d in out:
        if d not in ("minimize", "maximize"):
            raise SweepError(f"hydra.sweeper.direction={d!r}: must be minimize or maximize")
    if not out:
        raise SweepError("hydra.sweeper.direction is empty: give minimize or maximize")
    return out


def _objectives(objective: Any, n: int, own_app: bool) -> Optional[list[str]]:
    """Metric names read from each run; None = the task's return value (other apps' default)."""
    if objective is None:
        if not own_app:
            return None
        if n > 1:
            raise SweepError(f"hydra.sweeper.direction has {n} entries: name one recorded "
                             "metric per direction in hydra.sweeper.objective, e.g. "
                             "[time_to_train_s, checkpoint_write_bytes]")
        return ["time_to_train_s"]
    names = [str(o) for o in objective] if isinstance(objective, (list, tuple, ListConfig)) \
        else [str(objective)]
    if len(names) != n:
        raise SweepError(f"hydra.sweeper.objective names {len(names)} metric(s) but "
                         f"hydra.sweeper.direction has {n}: give one metric per direction "
                         "(or objective: null to use the task's return value)")
    return names


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


__all__: Sequence[str] = ["OptunaSearch"]
