"""`pinchpoint plan`: a 1,000-point grid in one process, typed overrides, the table and CSV,
non-zero exit for a single point that does not fit, run_plan_only, the plan-sweep drawing."""
from __future__ import annotations

import csv
import json

import pytest

from conftest import compose
from pinchpoint.cli import main as cli
from pinchpoint.plan import grid, run_plan_only, table

GRID_405B = ["model=llama31_405b", "model.scale=full", "+gpu=gb200,h100,b200,mi355x,gb300",
             "parallel.dp_shard=8,16,32,64,128", "parallel.tp=1,2,4,8",
             "parallel.pp=1,2,4,8,16", "parallel.cp=1,2", "plan.precision=fp8"]


def test_a_thousand_point_grid_in_one_process(tmp_path):
    axes, points = grid.plan_grid(GRID_405B)
    assert len(points) == 5 * 5 * 4 * 5 * 2 == 1000
    for pt in points:
        s = pt.settings
        assert pt.error is None, pt.error
        assert pt.plan["world_size"] == s["parallel.dp_shard"] * s["parallel.tp"] * \
            s["parallel.pp"] * s["parallel.cp"]                       # derived, never typed
        assert pt.plan["fits"] == (pt.plan["memory_needed_gib"] <= pt.plan["memory_usable_gib"])
        t = pt.plan["time_to_train"]
        assert t["time_to_train_s"] == pytest.approx(t["steps"] * pt.plan["step_s"] +
                                                     t["eval_s"] + t["init_s"])
        assert pt.plan["dominant"] == max(pt.plan["terms_s"], key=pt.plan["terms_s"].get)
    by_gpu = {pt.settings["gpu"]: pt.plan["gpu"] for pt in points}
    assert by_gpu == {"gb200": "GB200", "h100": "H100", "b200": "B200", "mi355x": "MI355X",
                      "gb300": "GB300"}
    # same layout: more FP8 FLOP/s is faster (H100 < B200 < GB200 = GB300 in FP8)
    same = {pt.settings["gpu"]: pt.plan["step_s"] for pt in points if
            (pt.settings["parallel.dp_shard"], pt.settings["parallel.tp"],
             pt.settings["parallel.pp"], pt.settings["parallel.cp"]) == (16, 8, 8, 2)}
    assert same["h100"] > same["b200"] > same["gb200"]
    assert not all(pt.plan["fits"] for pt in points) and any(pt.plan["fits"] for pt in points)
    rows = table.sort_rows([pt.row for pt in points], "time_to_train_min")
    assert [r["time_to_train_min"] for r in rows] == sorted(r["time_to_train_min"] for r in rows)
    path = table.write_csv(rows, tmp_path / "plan.csv")
    with open(path) as f:
        assert len(list(csv.DictReader(f))) == 1000


def test_overrides_are_typed_and_named():
    _, points = grid.plan_grid(["model=llama31_8b", "model.scale=full", "parallel.tp=abc"])
    assert "parallel.tp" in points[0].error
    _, points = grid.plan_grid(["model=llama31_8b", "model.scale=full", "parallel.nope=2"])
    assert "parallel.nope" in points[0].error and "known field" in points[0].error
    axes = grid.parse_axes(["a.b=range(64,320,64)", "c=1,2", "d=[1,2]", "e=x"])
    assert [a.values for a in axes] == [[64, 128, 192, 256], [1, 2], [[1, 2]], ["x"]]


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
                "model.full.global_batch_size=896", "--csv", str(tmp_path / "ok.csv")]) == 0
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
                                ["time_to_train_s"])


def test_plan_sweep_report_draws_and_finds_crossovers(tmp_path):
    from pinchpoint.analysis.plan_report import draw, main_from_csv
    _, points = grid.plan_grid(["model=llama31_405b", "model.scale=full", "+gpu=gb200",
                                "parallel.world_size=2560", "parallel.dp_shard=-1",
                                "parallel.tp=2,4,8", "parallel.pp=2,8", "parallel.cp=1,4",
                                "model.full.global_batch_size=1280",
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
