"""benchmarks/logged_step_times.py reads a published result log's step time the two ways the
submissions log it (lines as MLPerf's mllog writes them, rank prefix and all)."""
from __future__ import annotations

import json

import pytest
from conftest import load_script


@pytest.fixture(scope="module")
def logged():
    return load_script("benchmarks/logged_step_times.py", "logged_step_times")


def _line(key, value, t_ms, rank=None, **meta):
    record = {"namespace": "", "time_ms": t_ms, "event_type": "POINT_IN_TIME", "key": key,
              "value": value, "metadata": {"file": "x.py", "lineno": 1, **meta}}
    return f"{'' if rank is None else f'{rank}: '}:::MLLOG {json.dumps(record)}"


def test_throughput_gives_global_batch_over_its_median(logged):
    lines = ["some stdout", _line("global_batch_size", 8, 0),
             _line("tracked_stats", {"throughput": 5.0, "train_step_time": 1.6}, 10, step=0),
             _line("tracked_stats", {"throughput": 4.0}, 20, step=1),
             _line("tracked_stats", {"throughput": 6.0}, 30, step=2),
             _line("tracked_stats", {"validation_throughput": 99.0}, 40, step=3)]
    assert logged.step_seconds(lines) == (pytest.approx(8 / 5.0), "throughput")


def test_loss_timestamps_give_seconds_per_sample_times_the_batch(logged):
    """Loss lines every 10 steps of 8 samples, 12.9 s apart, one slower interval (an eval
    between them would not be: evaluations sit between blocks): the median is 1.29 s."""
    lines = [_line("global_batch_size", 8, 0, rank=0)]
    t = 1_000_000
    for i, gap in enumerate([12_900, 12_900, 30_000, 12_900]):
        t += gap
        lines.append(_line("tracked_stats", {"train_loss": 1.5}, t, rank=0,
                           samples_count=80 * (i + 1), step=10 * (i + 1)))
    step, how = logged.step_seconds(lines)
    assert step == pytest.approx(1.29) and how == "train_loss timestamps"


def test_a_log_without_either_says_why(logged):
    assert logged.step_seconds([_line("tracked_stats", {"train_loss": 1.0}, 5)]) == (
        None, "no global_batch_size")
    assert logged.step_seconds([_line("global_batch_size", 8, 0), "not json :::MLLOG {"])[0] \
        is None
