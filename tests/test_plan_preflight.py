"""`pinchpoint plan` builds its points through the sweepers' pre-flight (sweepers/plan_grid.py):
a point train.py refuses is refused with the same message, each kind of point is planned from
the config a full Hydra compose gives, the summary counts every point once, and
``hydra.searchpath`` finds config folders outside conf/."""
from __future__ import annotations

import pytest

from conftest import compose, train
from pinchpoint.cli import main as cli
from pinchpoint.plan import grid
from pinchpoint.workloads import plan_point
from pinchpoint.runner.validation import validate
from pinchpoint.sweepers.plan_grid import plan_grid

REFUSED_405B = ["model=llama31_405b", "model.scale=full", "+gpu=h200", "parallel.tp=16",
                "parallel.pp=8", "parallel.dp_shard=1"]


def test_a_point_train_py_refuses_is_refused_with_the_same_message(out, tmp_path, capsys):
    proc = train([*REFUSED_405B, "plan_only=true"], out, check=False)
    assert proc.returncode == 2
    said = proc.stderr.strip().splitlines()[-1]
    assert said.startswith("Invalid config: parallel.tp=16 is not allowed")
    assert cli(["plan", *REFUSED_405B, "--csv", str(tmp_path / "p.csv")]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines()[-1] == \
        said.replace("Invalid config: ", "pinchpoint plan: ", 1)
    assert "0 fit, 0 do not fit, 1 invalid" in captured.out


# Each kind of point: a group choice with a defaults list (model=), a plain group option added
# (+gpu=), a nested field, a swept field, Hydra's float grammar, a group entry deleted.
KINDS = [
    ["model=llama31_8b", "model.scale=full", "+gpu=gb200", "parallel.dp_shard=8"],
    ["model=llama31_405b", "model.scale=full", "+gpu=h200", "parallel.tp=8", "parallel.pp=8",
     "parallel.dp_shard=16", "model.full.micro_batch_size=2", "plan.precision=fp8"],
    ["model=llama31_405b", "model.scale=full", "+gpu=b200", "parallel.tp=4", "parallel.pp=8",
     "parallel.cp=2", "parallel.dp_shard=8", "plan.virtual_stages=8",
     "model.full.learning_rate=1e-4", "~fabric"],
    ["model=dlrm_dcnv2", "model.scale=full", "+gpu=h100", "dataset.batch_size=55296"],
]


@pytest.mark.parametrize("overrides", KINDS, ids=lambda o: o[0])
def test_each_kind_of_point_is_planned_from_what_a_full_compose_gives(overrides, out):
    _, (point,) = plan_grid(overrides)
    assert point.error is None, point.error
    cfg = compose([*overrides, "plan_only=true"])
    validate(cfg)                       # as train.py: derives the world size, then plans
    assert point.plan == plan_point(cfg)


def test_a_grid_over_groups_and_fields_plans_each_point_as_composed_alone():
    swept, points = plan_grid(["model=llama31_8b,llama31_405b", "model.scale=full",
                               "+gpu=h200,gb200", "parallel.dp_shard=8", "parallel.tp=1,8",
                               "plan.precision=fp8"])
    assert swept == ["model", "+gpu", "parallel.tp"] and len(points) == 8
    for pt in points:
        s = pt.settings
        alone = [f"model={s['model']}", "model.scale=full", f"+gpu={s['gpu']}",
                 "parallel.dp_shard=8", f"parallel.tp={s['parallel.tp']}",
                 "plan.precision=fp8", "plan_only=true"]
        cfg = compose(alone)
        try:
            validate(cfg)
        except ValueError as err:
            assert pt.error == str(err)
            continue
        assert pt.plan == plan_point(cfg)


def test_the_summary_counts_each_point_once(tmp_path, capsys):
    # fit, do not fit, refused (tp=3); every workload's planner gives a time-to-train
    overrides = ["model=llama31_8b,flux1,gpt_oss_20b", "model.scale=full", "+gpu=gb200,h100",
                 "parallel.dp_shard=1,8", "parallel.tp=1,3"]
    _, points = plan_grid(overrides)
    statuses = [pt.status for pt in points]
    counts = {k: statuses.count(k) for k in ("fit", "do not fit", "invalid")}
    assert sum(counts.values()) == len(points) == 24
    assert counts["fit"] and counts["do not fit"]
    line = grid.summary(points)
    assert line == (f"24 points planned: {counts['fit']} fit, {counts['do not fit']} do not "
                    f"fit, {counts['invalid']} invalid")
    assert cli(["plan", *overrides, "--csv", str(tmp_path / "s.csv")]) == 0
    assert "24 points planned in" in capsys.readouterr().out


def test_hydra_searchpath_finds_an_extra_config_folder(tmp_path, capsys):
    (tmp_path / "conf" / "gpu").mkdir(parents=True)
    (tmp_path / "conf" / "gpu" / "mygpu.yaml").write_text(
        "name: MyGPU\narchitecture: hopper\nmemory_gib: 500\npeak_tflops: 989\n"
        "peak_tflops_fp8: 1979\nmemory_tb_per_s: 4.8\nintra_node_gb_per_s: 450\n"
        "nvlink_domain: 8\ninter_node_gb_per_s: 50\ngpus_per_node: 8\n")
    point = ["model=llama31_8b", "model.scale=full", "+gpu=mygpu", "parallel.dp_shard=8"]
    search = f"hydra.searchpath=[file://{tmp_path / 'conf'}]"
    assert cli(["plan", *point, "--csv", str(tmp_path / "no.csv")]) == 2
    assert "mygpu" in capsys.readouterr().err
    _, (found,) = plan_grid([*point, search])
    assert found.error is None and found.plan.gpu == "MyGPU" and found.plan.fits
    # and in a grid, beside the options of conf/gpu/
    _, points = plan_grid([*point[:2], "+gpu=mygpu,h100", *point[3:], search])
    assert [pt.plan.gpu for pt in points] == ["MyGPU", "H100"]


def test_hydras_grammar_where_the_old_parser_disagreed():
    # 'on' into a string field is the string (PyYAML made it True and refused it); 1e-3 is a
    # float (PyYAML kept the string '1e-3' and refused it)
    _, (point,) = plan_grid(["model=llama31_8b", "model.scale=full", "+gpu=gb200",
                             "parallel.dp_shard=8", "tracking.experiment=on",
                             "model.full.learning_rate=1e-3"])
    assert point.error is None and point.status == "fit"
    swept, points = plan_grid(["model=llama31_8b", "model.scale=full", "+gpu=gb200",
                               "parallel.dp_shard=range(2,10,2)",
                               "tracking.experiment='a,b'"])
    assert swept == ["parallel.dp_shard"] and [pt.settings["parallel.dp_shard"]
                                                for pt in points] == [2, 4, 6, 8]


def test_the_config_folder_is_found_or_named(tmp_path, monkeypatch, capsys):
    from conftest import ROOT
    from pinchpoint.sweepers import plan_grid as engine
    assert cli(["plan", "--config-dir", str(tmp_path), "model=llama31_8b"]) == 2
    assert f"--config-dir {tmp_path}: no train.yaml there" in capsys.readouterr().err
    # an installed package carries no conf/: ./conf is used, else the error says what to do
    monkeypatch.setattr(engine, "SOURCE_CONF", tmp_path / "missing")
    monkeypatch.chdir(ROOT)
    assert engine.config_dir() == ROOT / "conf"
    monkeypatch.chdir(tmp_path)
    assert cli(["plan", "model=llama31_8b"]) == 2
    assert "give --config-dir" in capsys.readouterr().err
    assert cli(["plan", "--config-dir", str(ROOT / "conf"), "model=llama31_8b",
                "model.scale=full", "+gpu=gb200", "parallel.dp_shard=8",
                "--csv", str(tmp_path / "c.csv")]) == 0


def test_an_out_of_tree_workload_is_planned_and_validated(tmp_path):
    """tests/plugin_workload: its conf/ through hydra.searchpath, its module through
    PINCHPOINT_WORKLOADS (a fresh process: workloads are discovered once per process)."""
    import os
    import subprocess
    import sys

    from conftest import ROOT
    plugin = ROOT / "tests" / "plugin_workload"
    proc = subprocess.run(
        [sys.executable, "-m", "pinchpoint.cli", "plan", "model=toy_classifier",
         f"hydra.searchpath=[file://{plugin / 'conf'}]", "model.hidden=16,0",
         "--csv", str(tmp_path / "t.csv")], cwd=tmp_path, capture_output=True, text=True,
        env={**os.environ, "PINCHPOINT_WORKLOADS": "toy_classifier",
             "PYTHONPATH": os.pathsep.join([str(plugin), os.environ.get("PYTHONPATH", "")])})
    assert proc.returncode == 0, proc.stderr
    assert "model.hidden=0 is not allowed" in proc.stdout      # train.py's refusal, too
    # it names no planner: its valid point is refused by name, not half-planned
    assert "2 points planned in" in proc.stdout and "2 invalid" in proc.stdout
    assert "names a planner" in proc.stdout
