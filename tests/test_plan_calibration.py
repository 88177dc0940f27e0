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
    # One known miss: Cisco hpf_n16 (H100, TP2, 128 GPUs, CUDA graphs off) runs ~30 % slower
    # than the model's TP2 halving of the per-GPU work predicts.
    assert set(outside) <= {"llama31_8b Cisco / hpf_n16"}, outside
    assert all(0.6 < v < 1.5 for v in ratios.values())
    mean_log = sum(abs(math.log(v)) for v in ratios.values()) / len(ratios)
    assert mean_log < 0.1
    for r in results:
        assert r["fits"], r["system"]       # every published layout fits its GPU
