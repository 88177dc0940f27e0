"""The planner against published MLPerf results (benchmarks/planner_vs_published.py): every
row of the calibration set, predicted time-to-train over the published score."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _benchmark():
    spec = importlib.util.spec_from_file_location("planner_vs_published",
                                                  ROOT / "benchmarks" / "planner_vs_published.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_predictions_within_25_percent_of_published_scores():
    b = _benchmark()
    rows = b.load_rows(b.COPY)
    assert len(rows) == 46
    results = b.predict(rows)
    ratios = {f"{r['benchmark']} {r['system']}": r["ratio"] for r in results}
    outside = {k: round(v, 2) for k, v in ratios.items() if not 0.75 <= v <= 1.25}
    assert not outside
    mean_log = sum(abs(math.log(v)) for v in ratios.values()) / len(ratios)
    assert mean_log < 0.09
    for r in results:
        assert r["fits"], r["system"]       # every published layout fits its GPU
