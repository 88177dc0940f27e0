"""Crossover sweeper: finds the dense grid's crossover with <= 40 % of its runs."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from pinchpoint.analysis.crossover import crossovers, winner
from pinchpoint.sweepers.crossover import Bisection, dense_values, search
from pinchpoint.sweepers.space import Axis, SweepError

sys.path.insert(0, str(Path(__file__).parent / "sweep_app"))
from app import cost  # noqa: E402
from sweepapp import XS, job_dirs, run_app, sweep_dirs  # noqa: E402


def dense_answer(xs, label):
    return [(c.low, c.high) for c in crossovers(xs, [label(x) for x in xs])]


@pytest.mark.parametrize("flat", [700, 1800, 3200, 5100, 8300])
def test_bisection_matches_dense_grid_with_few_runs(flat):
    label = lambda x: winner({"a": cost(x, "a", flat), "b": cost(x, "b", flat)})  # noqa: E731
    measured = []

    def measure(indices):
        measured.extend(indices)
        return {i: label(XS[i]) for i in indices}

    state = search(len(XS), 3, measure)
    seen = sorted(state.labels)
    found = [(c.low, c.high) for c in crossovers([XS[i] for i in seen],
                                                  [state.labels[i] for i in seen])]
    assert found == dense_answer(XS, label)
    assert len(set(measured)) == len(measured)          # no point measured twice
    assert len(measured) * 2 <= 0.4 * len(XS) * 2       # 2 alternatives per point


def test_bisection_first_round_includes_both_ends():
    assert Bisection(17, 3).first() == [0, 8, 16]
    assert Bisection(2, 5).first() == [0, 1]


def test_dense_values_and_order():
    assert dense_values(Axis("x", "choice", values=[4, 1, 2]), None) == [1, 2, 4]
    assert dense_values(Axis("x", "interval", low=256, high=4096, log=True, integer=True),
                        2) == [256, 512, 1024, 2048, 4096]
    with pytest.raises(SweepError, match="not ordered"):
        dense_values(Axis("storage", "choice", values=["nvme", "nfs"]), None)
    with pytest.raises(SweepError, match="resolution"):
        dense_values(Axis("x", "interval", low=1.0, high=2.0), None)


def test_crossover_sweeper_end_to_end(tmp_path):
    """Through Hydra: the crossover lands in crossover.json and on the MLflow parent run."""
    from mlflow.tracking import MlflowClient

    out = tmp_path / "o"
    run_app(["hydra/sweeper=crossover", f"x=choice({','.join(map(str, XS))})", "alt=a,b",
             "hydra.sweeper.axis=x", "flat=3200"], out)
    sweep = sweep_dirs(out)[-1]
    summary = json.loads((sweep / "crossover.json").read_text())
    label = lambda x: winner({"alt=a": cost(x, "a", 3200),  # noqa: E731
                              "alt=b": cost(x, "b", 3200)})
    assert [(c["low"], c["high"]) for c in summary["crossovers"]] == dense_answer(XS, label) \
        == [(3000, 3500)]
    assert summary["runs"] == len(job_dirs(sweep)) <= 0.4 * summary["dense_grid_runs"]
    client = MlflowClient(f"sqlite:///{out}/mlflow.db")
    parent = client.get_run((sweep / "mlflow_parent_run_id").read_text().strip())
    assert json.loads(parent.data.tags["crossover.intervals"])[0]["low"] == 3000
    assert parent.data.metrics["crossover_runs"] == summary["runs"]


def test_crossover_on_dominant_phase(tmp_path):
    out = tmp_path / "o"
    run_app(["hydra/sweeper=crossover", f"x=choice({','.join(map(str, XS))})",
             "hydra.sweeper.by=dominant_phase", "phase_at=6200", "tracking.enabled=false"], out)
    summary = json.loads((sweep_dirs(out)[-1] / "crossover.json").read_text())
    assert [(c["low"], c["high"], c["below"], c["above"]) for c in summary["crossovers"]] == \
        [(6000, 6500, "data_wait", "forward_backward")]


@pytest.mark.parametrize("args, message", [
    (["x=1000", "alt=a,b", "hydra.sweeper.axis=alt"], "not ordered"),
    (["x=choice(500,1000)", "alt=a,b", "hydra.sweeper.axis=x", "multiple_of=3",
      "hydra.sweeper.validator=app.validate"], "x=500 is not allowed: a multiple of"),
])
def test_bad_input_fails_before_any_job(tmp_path, args, message):
    out = tmp_path / "o"
    proc = run_app(["hydra/sweeper=crossover", "tracking.enabled=false", *args], out,
                   check=False)
    assert proc.returncode != 0
    assert message in proc.stderr + proc.stdout
    assert not any(job_dirs(s) for s in sweep_dirs(out)) if (out / "sweeps").exists() else True


def test_refused_sweep_leaves_no_parent_run(tmp_path):
    from mlflow.tracking import MlflowClient

    out = tmp_path / "o"
    proc = run_app(["hydra/sweeper=crossover", "x=choice(500,1000)", "alt=a,b",
                    "hydra.sweeper.axis=x", "multiple_of=3",
                    "hydra.sweeper.validator=app.validate"], out, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr   # refused: one line
    assert "HYDRA_FULL_ERROR" not in proc.stderr   # Hydra's hint, with no stack trace to show
    client = MlflowClient(f"sqlite:///{out}/mlflow.db")
    exps = [e.experiment_id for e in client.search_experiments()]
    assert client.search_runs(exps) == []            # not left RUNNING: deleted
    [deleted] = client.search_runs(exps, run_view_type=3)   # (ALL: the deleted parent)
    assert deleted.info.status == "KILLED"                  # ended, even in the trash


@pytest.mark.parametrize("kwargs, args, message", [
    ({"axis": "xx"}, ["x=choice(1,2)", "alt=a,b"], "hydra.sweeper.axis='xx' is not swept"),
    ({"axis": "x", "by": "alt"}, ["x=choice(1,2)", "alt=a"], "hydra.sweeper.by='alt' is not"),
    ({"axis": "x"}, ["x=choice(1,2)", "alt=a,b", "y=3,4"], "also swept: y"),
    ({"axis": "x"}, ["x=choice(1,2)", "alt=a,b"], None),
])
def test_axis_errors_name_the_field(kwargs, args, message):
    from pinchpoint.sweepers.crossover import CrossoverSearch
    from pinchpoint.sweepers.space import parse

    sweeper = CrossoverSearch(**kwargs)
    if message is None:
        axis, by = sweeper._axes(parse(None, args))
        assert (axis.name, by.name, by.values) == ("x", "alt", ["a", "b"])
        return
    with pytest.raises(SweepError, match=message.replace("(", r"\(")):
        sweeper._axes(parse(None, args))


def test_a_short_run_is_compared_on_what_it_measured():
    """A run stopped by max_steps (aborted) measured its throughput: a sweep of short runs
    compares it (the FLUX.1 raw-vs-preprocessed sweep does); it has no time to train, and a
    failed run has nothing."""
    from pinchpoint.sweepers.common import PointResult
    metrics = {"throughput_samples_per_s": 120.0, "time_to_train_s": 30.0}
    short = PointResult([], "aborted", metrics)
    assert short.value("throughput_samples_per_s", "maximize") == 120.0
    assert short.value("time_to_train_s", "minimize") == float("inf")
    assert PointResult([], "failed", metrics).value("throughput_samples_per_s",
                                                    "maximize") == float("-inf")
    assert PointResult([], "success", metrics).value("time_to_train_s", "minimize") == 30.0
