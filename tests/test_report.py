"""`pinchpoint report`: table, CSV, olympic mean, crossover, plots, artifacts, clear errors."""
from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import pytest

from pinchpoint.analysis.table import olympic_mean
from pinchpoint.cli import main

sys.path.insert(0, str(Path(__file__).parent))
from report_fixture import fake_sweep  # noqa: E402


def test_olympic_mean_drops_fastest_and_slowest():
    assert olympic_mean([10.0, 1.0, 4.0, 5.0]) == 4.5
    assert olympic_mean([3.0, math.inf, 5.0]) == 5.0    # one miss is dropped as the slowest
    assert olympic_mean([2.0, 4.0]) == 3.0               # too few to drop
    assert math.isinf(olympic_mean([1.0, math.inf, math.inf]))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    return root, fake_sweep(root, seeds=3)


def test_report_of_latest_sweep(store, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    root, parent = store
    out = tmp_path / "report"
    assert main(["report", "--tracking-uri", f"sqlite:///{root}/mlflow.db",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "dataset.mmap=true -> dataset.mmap=false between dataset.batch_size=2048 and 4096" \
        in printed
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert len(rows) == 10                                    # 5 batch sizes x 2, seeds merged
    row = next(r for r in rows if r["dataset.batch_size"] == "512"
               and r["alternative"] == "dataset.mmap=true")
    assert float(row["time_to_train_s"]) == pytest.approx(5.12 + 0.5)  # olympic mean of 3
    assert row["seeds"] == "3" and row["bottleneck"] == "data_wait"
    assert float(row["data_wait_fraction"]) == pytest.approx(0.6)
    assert (out / "report.png").stat().st_size > 10_000
    # each alternative's own bottleneck move (data_wait 0.6 below bs 2048, 0.2 from it on)
    moves = json.loads((out / "crossovers.json").read_text())["phase_changes"]
    assert {(m["by"], m["below"], m["above"], m["low"], m["high"]) for m in moves} == {
        (f"dataset.mmap={v}", "data_wait", "forward_backward", 1024, 2048)
        for v in ("true", "false")}
    assert "dataset.mmap=true: data_wait -> forward_backward between 1024 and 2048" in printed
    page = (out / "report.html").read_text()
    assert len(page) < 100_000 and "<script src='plotly.min.js'>" in page   # not 4.8 MB
    assert (out / "plotly.min.js").stat().st_size > 1_000_000                # one shared copy
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    names = {Path(a.path).name for a in client.list_artifacts(parent, "report")}
    assert {"report.csv", "report.png", "crossovers.json"} <= names


@pytest.mark.parametrize("args, message", [
    (["--experiment", "nope"], "--experiment 'nope' does not exist"),
    (["--x", "dataset.bogus"], "'dataset.bogus' is not a setting of these runs"),
    (["--metric", "bogus_s"], "--metric 'bogus_s' was not recorded"),
])
def test_report_errors_are_clear(store, tmp_path, capsys, args, message):
    code = main(["report", "--tracking-uri", f"sqlite:///{store[0]}/mlflow.db", "--no-log",
                 "--out", str(tmp_path / "r"), *args])
    assert code == 2
    assert message in capsys.readouterr().err


def test_report_without_a_store(tmp_path, capsys):
    assert main(["report", "--tracking-uri", f"sqlite:///{tmp_path}/none.db"]) == 2
    assert "no MLflow store" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()


def test_analysis_imports_no_torch():
    import subprocess
    code = ("import sys, pinchpoint.analysis.report, pinchpoint.cli; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_aborted_points_sit_in_their_own_band_and_undrawn_lines_have_no_legend(tmp_path):
    from pinchpoint.analysis import plots
    from pinchpoint.analysis.runs import load
    from pinchpoint.analysis.table import points

    aborted = frozenset({("true", 4096), ("true", 8192)} |
                        {("false", bs) for bs in (512, 1024, 2048, 4096, 8192)})
    parent = fake_sweep(tmp_path, aborted=aborted)
    src = load(f"sqlite:///{tmp_path}/mlflow.db", parent=parent)
    pts = points(src.runs, "dataset.batch_size", ["dataset.mmap"], "time_to_train_s")
    fig = plots.figure(pts, "dataset.batch_size", "time_to_train_s", [], "t")
    top, band = fig.axes[0], fig.axes[1]
    assert top.get_legend_handles_labels()[1] == ["dataset.mmap=true"]   # false never drawn
    drawn = [y for line in top.get_lines() for y in line.get_ydata()]
    assert drawn and min(drawn) > 0                        # no X at "0 s"
    assert band.get_title(loc="left") == "did not reach target (no time-to-train)"
    xs = sorted(x for line in band.get_lines() for x in line.get_xdata())
    assert xs == sorted([4096, 8192] + [512, 1024, 2048, 4096, 8192])


def test_resumed_study_is_reported_whole_and_reports_never_overwrite(tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    study = {"optuna.study_name": "s", "optuna.storage": f"sqlite:///{tmp_path}/optuna.db"}
    first = fake_sweep(tmp_path, parent_tags=study, sizes=(512, 1024))
    second = fake_sweep(tmp_path, parent_tags=study, sizes=(4096, 8192))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert main(["report", "--tracking-uri", uri, "--out", str(tmp_path / "a")]) == 0
    printed = capsys.readouterr().out
    assert "(Optuna study s over 2 sweeps): 8 runs" in printed
    rows = list(csv.DictReader((tmp_path / "a" / "report.csv").open()))
    assert sorted({r["dataset.batch_size"] for r in rows}) == ["1024", "4096", "512", "8192"]
    client = MlflowClient(uri)
    before = {a.path: a.file_size for a in client.list_artifacts(second, "report")}
    assert main(["report", "--tracking-uri", uri, "--experiment", "fake_mmap_batch",
                 "--all-runs", "--out", str(tmp_path / "b")]) == 0
    assert {a.path: a.file_size for a in client.list_artifacts(second, "report")
            if not a.is_dir} == {k: v for k, v in before.items() if not k.endswith("_runs")}
    assert client.list_artifacts(second, "report/all_runs")       # its own folder
    assert not client.list_artifacts(first, "report")             # older sweeps untouched


def test_optuna_plots_integer_trials_and_no_importance_from_one_value(tmp_path):
    import optuna

    from pinchpoint.sweepers.optuna_plots import history_figure, save_plots

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="s")
    for x, value in ((1, 5.0), (2, math.inf), (3, None)):
        t = study.ask({"x": optuna.distributions.IntDistribution(0, 9)})
        study.tell(t, value, state=None if value is not None else
                   optuna.trial.TrialState.FAIL)
    files, notes = save_plots(study, str(tmp_path), ["time_to_train_s"])
    assert [Path(f).name for f in files] == ["optimization_history.png"]
    assert notes == ["param importances need at least 2 completed trials with a finite "
                     "time_to_train_s; this study has 1"]
    fig = history_figure(study, "time_to_train_s")
    fig.canvas.draw()
    ticks = [t for t in fig.axes[-1].get_xticks() if -0.5 <= t <= 2.5]
    assert ticks and all(float(t).is_integer() for t in ticks)


def test_parent_run_description_compares_the_points(tmp_path):
    from mlflow.tracking import MlflowClient

    from pinchpoint.analysis.summary import describe, question

    sweep = tmp_path / "q.yaml"
    sweep.write_text("# @package _global_\n# Question: does mmap pay\n# at large batches?\n"
                     "#   python train.py -m +sweep=q\ntracking: {}\n")
    assert question(str(sweep)) == "does mmap pay at large batches?"
    parent = fake_sweep(tmp_path, aborted=frozenset({("true", 8192)}))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    note = describe(uri, parent, ["dataset.batch_size", "dataset.mmap"],
                    "does mmap pay at large batches?", str(tmp_path / "sweep"))
    assert note.startswith("**Question:** does mmap pay at large batches?")
    assert "**Axes:** `dataset.batch_size`, `dataset.mmap` — 10 run(s), 1 aborted, 9 success" \
        in note
    assert "**Best point:** dataset.batch_size=512, dataset.mmap=true — time_to_train_s 5.12" \
        in note
    assert "**Crossovers:** dataset.mmap=true → dataset.mmap=false between " \
        "dataset.batch_size=2048 and 4096" in note
    assert f"![report.png](get-artifact?path=report%2Freport.png&run_uuid={parent})" in note
    rows = [line for line in note.splitlines() if line.startswith("| dataset.batch_size=")]
    assert len(rows) == 10
    assert rows[0] == "| dataset.batch_size=512, dataset.mmap=true | success | 5.12 | " \
                      "data_wait | 60% | 30% | 10% |"
    assert rows[-1].split(" | ")[1:3] == ["aborted", "-"]
    names = {a.path for a in MlflowClient(uri).list_artifacts(parent, "report")}
    assert "report/report.png" in names


def test_the_table_splits_data_wait_into_storage_and_cpu_where_runs_recorded_it():
    from pinchpoint.analysis.runs import RunRecord
    from pinchpoint.analysis.table import points, rows

    def run(mbps: str, pipeline: str, read: float, decode: float) -> RunRecord:
        metrics = {"throughput_samples_per_s": 100.0, "data/read_seconds_per_step": read,
                   "data/decode_seconds_per_step": decode}
        return RunRecord(mbps + pipeline, "", {"read": mbps, "dataset.pipeline": pipeline}, {},
                         metrics, {"status": "aborted"})
    table = rows(points([run("1", "raw", 0.002, 0.030), run("1", "preprocessed", 0.040, 0.0)],
                        "read", ["dataset.pipeline"], "throughput_samples_per_s"),
                 "read", "throughput_samples_per_s")
    by = {r["alternative"]: r for r in table}
    assert by["dataset.pipeline=raw"]["decode_ms_per_step"] == pytest.approx(30.0)
    assert by["dataset.pipeline=preprocessed"]["read_ms_per_step"] == pytest.approx(40.0)
    assert "encode_ms_per_step" not in by["dataset.pipeline=raw"]   # nobody recorded it
    assert by["dataset.pipeline=raw"]["throughput_samples_per_s"] == 100.0   # a short run counts


def test_collectives_are_drawn_by_kind_only_where_runs_called_them(tmp_path):
    from pinchpoint.analysis import collectives
    from pinchpoint.analysis.runs import RunRecord
    from pinchpoint.analysis.table import points

    def run(layout: str, comm: dict) -> RunRecord:
        metrics = {f"comm/{k}/{w}_per_step": v for k, (b, s) in comm.items()
                   for w, v in (("bytes", b), ("seconds", s))}
        return RunRecord(layout, "", {"+moe_layout": layout}, {}, metrics, {"status": "aborted"})
    pts = points([run("dense_fsdp4", {"all_gather": (4e6, 0.01), "reduce_scatter": (8e6, 0.02),
                                      "all_to_all": (0.0, 0.0)}),
                  run("moe_fsdp4_ep4", {"all_to_all": (2e6, 0.03)})],
                 "+moe_layout", [], "throughput_samples_per_s")
    assert collectives.kinds(pts) == ["all_gather", "all_to_all", "reduce_scatter"]
    assert collectives.per_kind(pts, "all_to_all", "bytes") == [0.0, 2e6]
    png = collectives.save_png(pts, "t", str(tmp_path / "collectives.png"))
    assert png and (tmp_path / "collectives.png").stat().st_size > 10_000
    quiet = points([run("single", {})], "+moe_layout", [], "throughput_samples_per_s")
    assert collectives.save_png(quiet, "t", str(tmp_path / "none.png")) is None
