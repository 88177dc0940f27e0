"""`pinchpoint report`: table, CSV, olympic mean, crossover, plots, artifacts, clear errors."""
from __future__ import annotations

import csv
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
    assert "plotly" in (out / "report.html").read_text()[:200_000].lower()
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    names = {Path(a.path).name for a in client.list_artifacts(parent, "report")}
    assert {"report.csv", "report.png", "report.html", "crossovers.json"} <= names


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
