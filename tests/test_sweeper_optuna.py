"""Optuna sweeper on Optuna >= 4: resume without duplicates, pre-flight pruning, failures
(max_failure_rate), plots on the parent run, refusals that leave nothing behind, clear errors.
hydra-optuna-sweeper's own examples: test_sweeper_optuna_compat.py."""
from __future__ import annotations

import sys
from pathlib import Path

import optuna
import pytest

from pinchpoint.sweepers.space import SweepError, parse

sys.path.insert(0, str(Path(__file__).parent / "sweep_app"))
from sweepapp import job_dirs, run_app, sweep_dirs  # noqa: E402


def study(out: Path, name: str = "sweep_app") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out}/optuna.db")


def kept(out: Path) -> list[str]:
    """The sweep app is not pinchpoint's train.py: name its metric and keep its study."""
    return ["hydra/sweeper=optuna", "hydra.sweeper.objective=time_to_train_s",
            f"hydra.sweeper.storage=sqlite:///{out}/optuna.db",
            "hydra.sweeper.study_name=sweep_app"]


def test_resume_grows_the_study_without_duplicates(tmp_path):
    from mlflow.tracking import MlflowClient

    out = tmp_path / "o"
    args = [*kept(out), "x=choice(500,1000,1500,2000)", "alt=a,b",
            "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=2", "hydra.sweeper.sampler.seed=0"]
    run_app([*args, "tracking.enabled=false"], out)
    assert len(study(out).trials) == 3
    run_app([*args, "hydra.sweeper.plots=true"], out)   # same study again: resumed
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
    assert files == {"optimization_history.png", "param_importances.png"}   # no HTML
    run = client.get_run(parent)
    assert run.data.tags["pinchpoint.sweeper"] == "optuna"
    assert run.data.tags["optuna.trials_total"] == "6"
    assert run.data.tags["optuna.trials_this_sweep"] == "3"
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "sweep_app: x × alt"            # the sweep and its axes
    assert run.data.params["sweep.axis.x"] == "choice(500,1000,1500,2000)"
    assert run.data.params["sweep.sweeper"] == "optuna"
    assert "**Axes:** `x`, `alt`" in run.data.tags["mlflow.note.content"]


def test_infeasible_points_are_pruned_and_tolerated_failures_fail_their_trial(tmp_path):
    out = tmp_path / "o"
    run_app([*kept(out), "hydra/sweeper/sampler=grid", "x=choice(250,500,750,1000)",
             "fail_at=1000", "multiple_of=500", "hydra.sweeper.max_failure_rate=1.0",
             "hydra.sweeper.validator=app.validate", "hydra.sweeper.n_trials=10",
             "tracking.enabled=false"], out)
    trials = {t.params["x"]: t for t in study(out).trials}
    assert sorted(trials) == [250, 500, 750, 1000]          # grid: every point once
    for x in (250, 750):                                     # not a multiple of 500: pruned
        assert trials[x].state == optuna.trial.TrialState.PRUNED
        assert "multiple_of=500" in trials[x].user_attrs["infeasible"]
    assert trials[500].value == 500.0
    assert trials[1000].state == optuna.trial.TrialState.FAIL
    assert "RuntimeError: injected failure at x=1000" in trials[1000].user_attrs["error"]
    assert len(job_dirs(sweep_dirs(out)[-1])) == 2           # pruned points never ran


def test_a_failed_trial_fails_the_sweep_and_closes_its_parent(tmp_path):
    from mlflow.tracking import MlflowClient

    out = tmp_path / "o"
    proc = run_app([*kept(out), "x=choice(1000)", "fail_at=1000"], out, check=False)
    assert proc.returncode == 1
    assert "RuntimeError: injected failure at x=1000" in proc.stderr   # max_failure_rate: 0
    assert "hydra.sweeper.max_failure_rate=0.0" in proc.stderr
    parent = (sweep_dirs(out)[0] / "mlflow_parent_run_id").read_text().strip()
    run = MlflowClient(f"sqlite:///{out}/mlflow.db").get_run(parent)
    assert run.info.status == "FAILED"                       # not left RUNNING
    assert "injected failure" in run.data.tags["pinchpoint.failed_points"]


def test_unknown_axis_is_refused_before_any_job(tmp_path):
    out = tmp_path / "o"
    proc = run_app([*kept(out), "tracking.enabled=false", "xx=choice(1,2)"], out, check=False)
    assert proc.returncode != 0
    assert "unknown axis 'xx': not a config field or group; did you mean x?" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (out / "optuna.db").exists()


@pytest.mark.parametrize("kwargs, args, message", [
    ({}, [], "empty search space: give hydra.sweeper.params"),
    ({}, ["x=interval(5,5)"], "empty search space interval"),
    ({}, ["x=choice()"], "empty choice is not legal"),
    ({"direction": ["minimize", "maximize"], "objective": "time_to_train_s"}, ["x=choice(1,2)"],
     "objective names 1 metric(s) but hydra.sweeper.direction has 2"),
    ({"direction": "fastest"}, ["x=choice(1,2)"], "hydra.sweeper.direction='fastest'"),
    ({"n_trials": 0}, ["x=choice(1,2)"], "hydra.sweeper.n_trials=0"),
])
def test_bad_settings_name_the_field(kwargs, args, message):
    from pinchpoint.sweepers import optuna_sweeper
    from pinchpoint.sweepers.optuna_sweeper import OptunaSearch

    with pytest.raises(SweepError) as err:
        sweeper = OptunaSearch(sampler={}, **kwargs)
        sweeper.config, sweeper.own_app = None, False
        sweeper.objectives = optuna_sweeper._objectives(sweeper.objective,
                                                        len(sweeper.directions), False)
        sweeper._sweep(args)
    assert message in str(err.value)


def test_hydra_optuna_sweeper_syntax_maps_to_optuna_distributions():
    from optuna.distributions import (CategoricalDistribution, FloatDistribution,
                                      IntDistribution)

    from pinchpoint.sweepers.optuna_space import distribution

    space = parse({"a": "choice(1,2,4)", "b": "range(0,10,2)", "c": "interval(0.1,1)",
                   "d": "tag(log, interval(1e-4, 1e-1))", "e": "tag(log, int, interval(8,512))",
                   "f": "true,false", "g": "5", "h": "range(-5.5, 5.5, step=0.5)",
                   "i": "int(interval(1, 5))", "j": "shuffle(range(1,3))"},
                  ["a=choice(8,16)", "~z"])
    d = {k: distribution(a) for k, a in space.axes.items()}
    assert d["a"] == CategoricalDistribution([8, 16])          # the command line wins
    assert d["b"] == IntDistribution(0, 10, step=2)            # stop included, as upstream
    assert d["c"] == FloatDistribution(0.1, 1.0)
    assert d["d"] == FloatDistribution(1e-4, 1e-1, log=True)
    assert d["e"] == IntDistribution(8, 512, log=True)
    assert d["f"] == CategoricalDistribution([True, False])
    assert d["h"] == FloatDistribution(-5.5, 5.5, step=0.5)    # ordered, not categorical
    assert d["i"] == IntDistribution(1, 5)
    assert set(d["j"].choices) == {1, 2}
    assert space.fixed_overrides() == ["g=5", "~z"]


def test_pinchpoint_sweep_refused_before_a_study_or_parent_exists(tmp_path):
    """train.py (pinchpoint's own app) validates the points; a field wrong for every point
    refuses the sweep before any study, trial or MLflow parent run is left behind."""
    import os
    import subprocess

    from mlflow.tracking import MlflowClient

    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "train.py", "-m", "hydra/sweeper=optuna",
           f"hydra.sweeper.storage=sqlite:///{tmp_path}/optuna.db",
           "dataset.batch_size=choice(512,1024)", "train.max_epochs=-1",
           f"output_root={tmp_path}"]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=180,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode != 0
    assert "sweep refused, nothing launched: train.max_epochs=-1" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "optuna.db").exists()
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert runs == []                                        # the parent was deleted
