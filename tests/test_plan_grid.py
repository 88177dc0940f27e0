"""`pinchpoint plan`: a 1,000-point grid in one process, Hydra's typing of overrides, the table
and CSV, non-zero exit for a single point that does not fit, run_plan_only, the plan-sweep
drawing. (tests/test_plan_preflight.py: the plan against train.py and a full compose.)"""
from __future__ import annotations

import csv
import json

import pytest

from conftest import compose
from pinchpoint.cli import main as cli
from pinchpoint.plan import table
from pinchpoint.runner.plan_only import run_plan_only
from pinchpoint.sweepers.plan_grid import expand, plan_grid

GRID_405B = ["model=llama31_405b", "model.scale=full", "+gpu=gb200,h100,b200,mi355x,gb300",
             "parallel.dp_shard=8,16,32,64,128", "parallel.tp=1,2,4,8",
             "parallel.pp=1,2,4,8,16", "parallel.cp=1,2", "plan.precision=fp8"]


def test_a_thousand_point_grid_in_one_process(tmp_path):
    swept, points = plan_grid(GRID_405B)
    assert len(points) == 5 * 5 * 4 * 5 * 2 == 1000
    assert swept == ["+gpu", "parallel.dp_shard", "parallel.tp", "parallel.pp", "parallel.cp"]
    refused = [pt for pt in points if pt.error]
    # what train.py refuses: fewer micro-batches than pipeline stages x data-parallel ranks
    assert {pt.settings["parallel.dp_shard"] * pt.settings["parallel.pp"] for pt in refused} \
        == {128 * 16}
    assert all("model.full.global_batch_size=1152 is not allowed" in pt.error for pt in refused)
    points = [pt for pt in points if not pt.error]
    for pt in points:
        s = pt.settings
        assert pt.plan.world_size == s["parallel.dp_shard"] * s["parallel.tp"] * \
            s["parallel.pp"] * s["parallel.cp"]                       # derived, never typed
        assert pt.plan.fits == (pt.plan.memory_needed_gib <= pt.plan.memory_usable_gib)
        t = pt.plan.time_to_train
        assert t.total_s == pytest.approx(t.steps * pt.plan.step_s + t.evals_s + t.init_s)
        assert pt.plan.dominant == max(pt.plan.terms_s, key=pt.plan.terms_s.get)
    by_gpu = {pt.settings["gpu"]: pt.plan.gpu for pt in points}
    assert by_gpu == {"gb200": "GB200", "h100": "H100", "b200": "B200", "mi355x": "MI355X",
                      "gb300": "GB300"}
    # same layout: more FP8 FLOP/s is faster (H100 < B200 < GB200 = GB300 in FP8)
    same = {pt.settings["gpu"]: pt.plan.step_s for pt in points if
            (pt.settings["parallel.dp_shard"], pt.settings["parallel.tp"],
             pt.settings["parallel.pp"], pt.settings["parallel.cp"]) == (16, 8, 8, 2)}
    assert same["h100"] > same["b200"] > same["gb200"]
    assert not all(pt.plan.fits for pt in points) and any(pt.plan.fits for pt in points)
    rows = table.sort_rows([pt.row for pt in points], "time_to_train_min")
    assert [r["time_to_train_min"] for r in rows] == sorted(r["time_to_train_min"] for r in rows)
    path = table.write_csv(rows, tmp_path / "plan.csv")
    with open(path) as f:
        assert len(list(csv.DictReader(f))) == 960


def test_overrides_are_typed_by_hydra_and_named(tmp_path, capsys):
    # a fixed override Hydra cannot merge refuses the whole plan, naming it
    assert cli(["plan", "model=llama31_8b", "model.scale=full", "parallel.tp=abc",
                "--csv", str(tmp_path / "a.csv")]) == 2
    err = capsys.readouterr().err
    assert "parallel.tp=abc" in err and "could not be converted to Integer" in err
    assert cli(["plan", "model=llama31_8b", "model.scale=full", "parallel.nope=2",
                "--csv", str(tmp_path / "b.csv")]) == 2
    assert "Could not override 'parallel.nope'" in capsys.readouterr().err
    # a swept one marks its points, not the plan
    _, points = plan_grid(["model=llama31_8b", "model.scale=full", "parallel.dp_shard=8",
                           "parallel.tp=1,abc", "parallel.nope=1,2"])
    assert [pt.error.split(":")[0] for pt in points] == ["does not compose"] * 4
    assert "parallel.tp=abc" in points[2].error and "parallel.nope" in points[0].error
    points, values = expand(["a.b=range(64,320,64)", "c=1,2", "d=[1,2]", "e=x", "f=1e-3",
                             "g='1,2'", "h=on", "+gpu=h200", "~fabric"])
    assert [v["a.b"] for v in values[::2]] == [64, 128, 192, 256]
    assert values[0] == {"a.b": 64, "c": 1, "d": [1, 2], "e": "x", "f": 0.001, "g": "1,2",
                         "h": "on", "+gpu": "h200", "~fabric": None}
    assert points[1] == ["a.b=64", "c=2", "d=[1,2]", "e=x", "f=1e-3", "g='1,2'", "h=on",
                         "+gpu=h200", "~fabric"]


def test_a_single_point_that_does_not_fit_exits_non_zero(tmp_path, capsys):
    args = ["plan", "model=llama31_405b", "model.scale=full", "parallel.tp=8",
            "--csv", str(tmp_path / "one.csv")]
    assert cli(args) == 2
    captured = capsys.readouterr()
    assert "does not fit" in captured.err and "GiB" in captured.err
    assert "time-to-train = steps x step" in captured.out
    # the published layout fits and exits 0, printing the terms
    assert cli(["plan", "model=llama31_405b", "model.scale=full", "+gpu=gb200",
                "parallel.tp=4", "parallel.pp=8", "parallel.cp=2", "parallel.dp_shard=8",
                "plan.virtual_stages=8", "plan.precision=fp8", "model.full.recompute=false",
                "model.full.global_batch_size=896", "plan.below_smallest_rcp=true",
                "model.full.eval_every_samples=17920", "--csv", str(tmp_path / "ok.csv")]) == 0
    # an invalid single point (interleaving needs micro-batches % pp == 0) exits 2 too
    assert cli(["plan", "model=llama31_405b", "model.scale=full", "parallel.tp=8",
                "parallel.pp=8", "parallel.dp_shard=32", "plan.virtual_stages=8",
                "--csv", str(tmp_path / "bad.csv")]) == 2
    assert "plan.virtual_stages" in capsys.readouterr().err


def test_run_plan_only_prints_json_and_refuses_what_does_not_fit(out, capsys):
    cfg = compose(["model=llama31_405b", "model.scale=full", "parallel.tp=8", "plan_only=true"],
                  out)
    with pytest.raises(SystemExit) as exit_:
        run_plan_only(cfg)
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert json.loads(captured.out)["fits"] is False and "does not fit" in captured.err
    ok = compose(["model=llama31_8b", "model.scale=full", "parallel.dp_shard=8",
                  "model.full.micro_batch_size=1", "plan_only=true"], out)
    ttt = run_plan_only(ok)
    assert ttt == pytest.approx(json.loads(capsys.readouterr().out)["time_to_train"]
                                ["total_s"])


def test_plan_sweep_report_draws_and_finds_crossovers(tmp_path):
    from pinchpoint.analysis.plan_report import draw, main_from_csv
    _, points = plan_grid(["model=llama31_405b", "model.scale=full", "+gpu=gb200",
                           "parallel.world_size=2560", "parallel.dp_shard=-1",
                           "parallel.tp=2,4,8", "parallel.pp=2,8", "parallel.cp=1,4",
                           "model.full.global_batch_size=1280",
                           "model.full.eval_every_samples=17920",
                           "model.full.recompute=false", "plan.precision=fp8",
                           "plan.virtual_stages=4"])
    rows = [pt.row for pt in points]
    report = draw(rows, "parallel.tp", None, tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").stat().st_size > 10_000
    assert report.crossovers and report.text.startswith("crossover (")
    for c in report.crossovers:     # every reported change is between neighbouring x values
        assert c["low"] < c["high"] and c["below"] != c["above"]
    path = table.write_csv(rows, tmp_path / "sweep.csv")
    again = main_from_csv(str(path), "parallel.tp")
    assert again.crossovers == report.crossovers


def test_the_grid_is_spanned_as_hydras_basic_sweeper_spans_it():
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = ["parallel.tp=1,2", "+gpu=h200,b200", "model.scale=full", "parallel.pp=range(1,3)",
            "parallel.tp=4,8", "seed=7"]
    points, _ = expand(args)
    (want,) = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(args), None)
    assert points == want
