"""Optuna sweeper on Optuna >= 4: hydra-optuna-sweeper syntax, resume without duplicates,
pre-flight pruning, worst value for failed runs, plots on the parent run, clear errors."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import optuna
import pytest

from pinchpoint.sweepers.space import SweepError, parse

sys.path.insert(0, str(Path(__file__).parent / "sweep_app"))
from sweepapp import job_dirs, run_app, sweep_dirs  # noqa: E402


def study(out: Path, name: str = "sweep_app") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out}/optuna.db")


def test_resume_grows_the_study_without_duplicates(tmp_path):
    from mlflow.tracking import MlflowClient

    out = tmp_path / "o"
    args = ["hydra/sweeper=optuna", "x=choice(500,1000,1500,2000)", "alt=a,b",
            "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=2", "hydra.sweeper.sampler.seed=0"]
    run_app([*args, "tracking.enabled=false", "hydra.sweeper.plots=false"], out)
    assert len(study(out).trials) == 3
    run_app(args, out)                         # same study again: resumed
    trials = study(out).trials
    assert len(trials) == 6
    params = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(params)) == 6               # the re-run asked for new points only
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert all(t.value == (t.params["x"] if t.params["alt"] == "a" else 3200) for t in trials)
    first, second = sweep_dirs(out)
    assert len(job_dirs(first)) == len(job_dirs(second)) == 3
    client = MlflowClient(f"sqlite:///{out}/mlflow.db")
    parent = (second / "mlflow_parent_run_id").read_text().strip()
    files = {Path(a.path).name for a in client.list_artifacts(parent, "optuna")}
    assert {"optimization_history.png", "param_importances.png", "optuna_plots.html"} <= files
    run = client.get_run(parent)
    assert run.data.tags["pinchpoint.sweeper"] == "optuna"
    assert run.data.metrics["optuna_trials_total"] == 6


def test_infeasible_points_are_pruned_and_failures_are_worst(tmp_path):
    out = tmp_path / "o"
    run_app(["hydra/sweeper=optuna", "hydra/sweeper/sampler=grid", "x=choice(250,500,750,1000)",
             "fail_at=1000", "multiple_of=500",
             "hydra.sweeper.validator=app.validate", "hydra.sweeper.n_trials=10",
             "tracking.enabled=false", "hydra.sweeper.plots=false"], out)
    trials = {t.params["x"]: t for t in study(out).trials}
    assert sorted(trials) == [250, 500, 750, 1000]          # grid: every point once
    for x in (250, 750):                                     # not a multiple of 500: pruned
        assert trials[x].state == optuna.trial.TrialState.PRUNED
        assert "multiple_of=500" in trials[x].user_attrs["infeasible"]
    assert trials[500].value == 500.0
    assert math.isinf(trials[1000].value) and trials[1000].user_attrs["status"] == "failed"
    assert len(job_dirs(sweep_dirs(out)[-1])) == 2           # pruned points never ran


def test_unknown_axis_is_refused_before_any_job(tmp_path):
    out = tmp_path / "o"
    proc = run_app(["hydra/sweeper=optuna", "tracking.enabled=false", "xx=choice(1,2)"], out,
                   check=False)
    assert proc.returncode != 0
    assert "unknown axis 'xx': not a config field or group; did you mean x?" in proc.stderr
    assert not (out / "optuna.db").exists()


@pytest.mark.parametrize("kwargs, args, message", [
    ({}, [], "empty search space: give hydra.sweeper.params"),
    ({}, ["x=interval(5,5)"], "empty search space interval"),
    ({}, ["x=choice()"], "empty choice is not legal"),
    ({"direction": ["minimize", "maximize"]}, ["x=choice(1,2)"],
     "objective names 1 metric(s) but hydra.sweeper.direction has 2"),
    ({"direction": "fastest"}, ["x=choice(1,2)"], "hydra.sweeper.direction='fastest'"),
    ({"n_trials": 0}, ["x=choice(1,2)"], "hydra.sweeper.n_trials=0"),
])
def test_bad_settings_name_the_field(kwargs, args, message):
    from pinchpoint.sweepers.optuna_sweeper import OptunaSearch

    with pytest.raises(SweepError) as err:
        OptunaSearch(sampler={}, **kwargs).sweep(args)
    assert message in str(err.value)


def test_hydra_optuna_sweeper_syntax_maps_to_optuna_distributions():
    from optuna.distributions import (CategoricalDistribution, FloatDistribution,
                                      IntDistribution)

    from pinchpoint.sweepers.optuna_sweeper import _distribution

    space = parse({"a": "choice(1,2,4)", "b": "range(0,10,2)", "c": "interval(0.1,1)",
                   "d": "tag(log, interval(1e-4, 1e-1))", "e": "tag(log, int, interval(8,512))",
                   "f": "true,false", "g": "5"}, ["a=choice(8,16)"])
    d = {k: _distribution(a) for k, a in space.axes.items()}
    assert d["a"] == CategoricalDistribution([8, 16])          # the command line wins
    assert d["b"] == IntDistribution(0, 8, step=2)
    assert d["c"] == FloatDistribution(0.1, 1.0)
    assert d["d"] == FloatDistribution(1e-4, 1e-1, log=True)
    assert d["e"] == IntDistribution(8, 512, log=True)
    assert d["f"] == CategoricalDistribution([True, False])
    assert space.fixed == {"g": "5"}
