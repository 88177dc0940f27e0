"""telemetry.profile_steps: torch.profiler (Kineto) runs over those steps only, and its events
land on the run's timeline on the run's clock -- every CPU op inside the step (and the phase)
that ran it, none outside the window."""
from __future__ import annotations

import json
import math

import pytest

from conftest import TINY_DLRM, train
from pinchpoint.telemetry.profiler import SYNC, StepProfiler, clock_offset, merge
from pinchpoint.telemetry.timeline import Timeline

TOLERANCE_US = 300.0   # the alignment's bound is a few us; spans are rounded to 1 ns
RUN = [*TINY_DLRM, "train.max_steps=5", "tracking.enabled=false"]


def _trace(out):
    folder = next((out / "runs").iterdir())
    return json.loads((folder / "timeline.json").read_text())


def _spans(events, prefix=None):
    return [e for e in events if e.get("ph") == "X" and
            (prefix is None or e["name"].startswith(prefix))]


def _within(e, span, tol=TOLERANCE_US) -> bool:
    return span["ts"] - tol <= e["ts"] and e["ts"] + e["dur"] <= span["ts"] + span["dur"] + tol


@pytest.mark.slow
def test_profiled_steps_cpu_ops_nest_in_their_steps_and_phases(tmp_path):
    out = tmp_path / "outputs"
    train([*RUN, "telemetry.profile_steps=[2,3]"], out)
    trace = _trace(out)
    events = trace["traceEvents"]
    meta = trace["otherData"]["profiler"]
    assert meta["clock"] == "record_function marks" and meta["steps"] == [2, 3]
    assert 0 <= meta["clock_error_us"] < 100, meta
    steps = {int(e["name"].split()[1]): e for e in _spans(events, "step ")}
    assert sorted(steps) == [1, 2, 3, 4, 5]
    ops = [e for e in _spans(events) if e["args"].get("cat") == "cpu_op"]
    assert len(ops) > 100 and meta["by_category"]["cpu_op"] == len(ops)
    # Every CPU op inside step 2 or step 3 (the step its middle falls in, nested in it within
    # the tolerance); both steps ran some; none before or after.
    by_step: dict[int, list] = {}
    for op in ops:
        middle = op["ts"] + op["dur"] / 2
        [n] = [n for n, s in steps.items() if s["ts"] <= middle < s["ts"] + s["dur"]]
        assert _within(op, steps[n]), (n, op)
        by_step.setdefault(n, []).append(op)
    assert sorted(by_step) == [2, 3]
    # Same clock to within the tolerance: each op nests in a phase span of its step, and the
    # optimizer's own annotation inside that step's optimizer phase.
    phases = [e for e in _spans(events) if _thread(events, e) == "phase"]
    for op in ops:
        assert any(_within(op, p) for p in phases), op
    annotations = [e for e in _spans(events) if e["name"].startswith("Optimizer.step#")]
    assert len(annotations) == 2
    optimizer = [p for p in phases if p["name"] == "optimizer"]
    for a in annotations:
        assert any(_within(a, p) for p in optimizer), a
    # Kineto's threads are tracks of their own, labelled, in the run's process.
    assert {_thread(events, e) for e in ops} <= {
        n for n in _thread_names(events).values() if n.startswith("profiler cpu thread ")}


@pytest.mark.slow
def test_no_profile_steps_no_profiler_events(tmp_path):
    out = tmp_path / "outputs"
    train(RUN, out)
    trace = _trace(out)
    assert "profiler" not in trace["otherData"]
    assert not any("cat" in e.get("args", {}) for e in _spans(trace["traceEvents"]))
    assert not any(n.startswith("profiler") for n in _thread_names(trace["traceEvents"]).values())


def _thread_names(events) -> dict:
    return {(e["pid"], e["tid"]): e["args"]["name"] for e in events
            if e.get("ph") == "M" and e["name"] == "thread_name"}


def _thread(events, e) -> str:
    return _thread_names(events).get((e["pid"], e["tid"]), "")


# --- unit level ---------------------------------------------------------------------------------
def test_window_opens_before_first_and_closes_after_last(monkeypatch):
    started, stopped = [], []
    p = StepProfiler(Timeline(), [2, 3])
    monkeypatch.setattr(p, "_start", lambda: (started.append(1), setattr(p, "prof", object())))
    monkeypatch.setattr(p, "_stop", lambda: (stopped.append(1), setattr(p, "prof", None),
                                             setattr(p, "trace_path", "x")))
    monkeypatch.setattr(p, "_sync", lambda: None)
    for step in range(1, 6):
        p.before_step(step)
        assert (p.prof is not None) == (step in (2, 3))
        p.after_step(step)
    assert started == [1] and stopped == [1] and p.profiled == [2, 3]
    assert StepProfiler.for_run(Timeline(), []) is None


def test_clock_offset_is_the_intersection_of_the_marks():
    # Kineto clock = perf_counter - 100 s; each mark brackets its annotation by a few us.
    offset = 100.0
    marks, events = [], []
    for i, (before_us, after_us) in enumerate([(3.0, 5.0), (1.0, 2.0), (4.0, 1.5)]):
        t = 10.0 + i
        marks.append((t - before_us / 1e6, t + 1e-6 + after_us / 1e6))
        events.append({"name": SYNC, "ph": "X", "ts": (t - offset) * 1e6, "dur": 1.0})
    got, error_us, method = clock_offset({"traceEvents": events}, marks, Timeline())
    assert method == "record_function marks"
    # The tightest bounds: 1 us before (mark 2), 1.5 us after (mark 3).
    assert error_us == pytest.approx(1.25, abs=1e-3)
    assert abs(got - offset) * 1e6 <= error_us + 1e-3


def test_without_marks_the_wall_clock_is_used():
    tl = Timeline()
    trace = {"baseTimeNanoseconds": int(tl.origin_unix * 1e9),
             "traceEvents": [{"name": "aten::mm", "ph": "X", "cat": "cpu_op", "pid": 1,
                              "tid": 2, "ts": 1000.0, "dur": 10.0}]}
    stats = merge(tl, trace, [])
    assert stats["clock"] == "wall clock" and math.isnan(stats["clock_error_us"])
    [e] = tl.events
    assert e["ts"] == pytest.approx(1000.0, abs=1.0) and e["args"]["cat"] == "cpu_op"


def test_device_events_get_a_track_per_stream():
    tl = Timeline()
    trace = {"traceEvents": [
        {"name": SYNC, "ph": "X", "cat": "user_annotation", "pid": 1, "tid": 1, "ts": 0.0,
         "dur": 1.0},
        {"name": "gemm", "ph": "X", "cat": "kernel", "pid": 0, "tid": 7, "ts": 5.0, "dur": 3.0},
        {"name": "Memcpy HtoD", "ph": "X", "cat": "gpu_memcpy", "pid": 0, "tid": 8, "ts": 9.0,
         "dur": 2.0}]}
    stats = merge(tl, trace, [(tl.origin, tl.origin + 2e-6)])
    assert stats["by_category"] == {"kernel": 1, "gpu_memcpy": 1}
    assert {"profiler gpu 0 stream 7", "profiler gpu 0 stream 8"} <= set(tl.tracks)
