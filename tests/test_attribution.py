"""Event attribution (telemetry.attribution=events) resolved on CPU with a scripted device clock:
a fake event's timestamp is whatever the test says the device reached when it was recorded, so
overlap scenarios (a collective hidden under compute, half hidden, two collectives overlapping
each other, a synchronous one on the compute stream) give known compute, communication and
exposed figures per kind, and the phases still tile the loop's wall time. On the CPU, ``auto``
is today's path, unchanged."""
from __future__ import annotations

import os
import tempfile
import time

import pytest
import torch
import torch.distributed as dist

from pinchpoint.errors import ConfigError
from pinchpoint.metric_names import PHASES, metric_name
from pinchpoint.parallel.collectives import CollectiveProfile
from pinchpoint.telemetry import attribution as A
from pinchpoint.telemetry.attribution import EventAttribution, Mark, attribute
from pinchpoint.telemetry.phases import PhaseTimer


class FakeClock:
    """Device time in seconds set by the test (``now``); ``compute``: whether the 'current
    stream' is the compute stream; ``done``: events up to this time have completed."""

    def __init__(self):
        self.now, self.compute, self.done, self.waited = 0.0, True, float("inf"), 0

    def at(self, t: float, compute: bool = True) -> "FakeClock":
        self.now, self.compute = t, compute
        return self

    def record(self) -> Mark:
        return Mark(self.now, self.compute)

    def ready(self, mark: Mark) -> bool:
        return mark.event <= self.done

    def wait(self, mark: Mark) -> None:
        if mark.event > self.done:
            self.waited += 1

    def seconds(self, ref: Mark, mark: Mark) -> float:
        return mark.event - ref.event


def timer(clock: FakeClock, lag: int = A.LAG) -> PhaseTimer:
    phases = PhaseTimer(events=EventAttribution(clock, lag))
    clock.at(0.0)
    phases.begin()
    return phases


def step(phases: PhaseTimer, clock: FakeClock, n: int, script) -> None:
    """One step: ``script`` is a list of (device time, action); an action is a phase name
    (mark it), ("span", kind, start, end, on compute) or ("async", kind, issue, wait start,
    wait end)."""
    for t, action in script:
        if isinstance(action, str):
            clock.at(t)
            phases.mark(action)
        elif action[0] == "span":
            _, kind, start, end, on = action
            phases.device_span(kind, clock.at(start, on).record(), clock.at(end, on).record())
        else:
            _, kind, issue, w0, w1 = action
            issued = clock.at(issue).record()
            phases.device_span(kind, clock.at(w0).record(), clock.at(w1).record(), issued)
    time.sleep(0.002)
    phases.end_step(n)


def resolved(phases: PhaseTimer):
    phases.flush()
    return phases.events.steps


def assert_tiles(phases: PhaseTimer) -> None:
    assert set(phases.totals) == set(PHASES)
    assert sum(phases.totals.values()) == pytest.approx(sum(phases.step_times), rel=1e-9)


# --- the scenarios ------------------------------------------------------------------------------
def test_collective_hidden_under_compute_is_not_exposed():
    clock = FakeClock()
    p = timer(clock)
    step(p, clock, 1, [(1, "data_wait"), (None, ("span", "all_gather", 3, 7, False)),
                       (11, "forward_backward"), (12, "optimizer")])
    [s] = resolved(p)
    assert s.compute_s == pytest.approx(11)
    assert s.communication_s == {"all_gather": pytest.approx(4)}
    assert s.exposed_s == {}
    assert s.phases_s["communication"] == 0
    assert s.phases_s["forward_backward"] == pytest.approx(s.wall_s * 10 / 12)
    assert_tiles(p)


def test_half_overlapped_collective_exposes_half():
    """An all-reduce issued at 9 on the compute stream, waited on from 11 to 13: 9-11 runs
    under forward_backward, 11-13 the compute stream stalls on it."""
    clock = FakeClock()
    p = timer(clock)
    step(p, clock, 1, [(1, "data_wait"), (11, "forward_backward"),
                       (None, ("async", "all_reduce", 9, 11, 13)), (14, "optimizer")])
    [s] = resolved(p)
    assert s.communication_s["all_reduce"] == pytest.approx(4)
    assert s.exposed_s["all_reduce"] == pytest.approx(2)
    assert s.compute_s == pytest.approx(11)      # 1-11 and 13-14
    total = 14
    assert s.phases_s["communication"] == pytest.approx(s.wall_s * 2 / total)
    assert s.phases_s["optimizer"] == pytest.approx(s.wall_s * 1 / total)
    assert_tiles(p)


def test_two_collectives_overlapping_each_other_expose_their_union():
    """Side-stream all-gather 0.2-0.8 and reduce-scatter 0.5-1.0 while the compute stream idles
    in data_wait: 0.8 s exposed, 0.5-0.8 shared by both."""
    clock = FakeClock()
    p = timer(clock)
    step(p, clock, 1, [(None, ("span", "all_gather", 0.2, 0.8, False)),
                       (None, ("span", "reduce_scatter", 0.5, 1.0, False)),
                       (1, "data_wait"), (3, "forward_backward"), (4, "optimizer")])
    [s] = resolved(p)
    assert s.exposed_s == {"all_gather": pytest.approx(0.45), "reduce_scatter": pytest.approx(0.35)}
    assert sum(s.exposed_s.values()) == pytest.approx(0.8)        # the union, not 0.6 + 0.5
    assert sum(s.communication_s.values()) == pytest.approx(1.1)  # each collective's own time
    assert s.compute_s == pytest.approx(3)
    assert s.phases_s["communication"] == pytest.approx(s.wall_s * 0.8 / 4)
    assert s.phases_s["data_wait"] == pytest.approx(s.wall_s * 0.2 / 4)
    assert_tiles(p)


def test_synchronous_collective_on_the_compute_stream_is_all_exposed():
    clock = FakeClock()
    p = timer(clock)
    step(p, clock, 1, [(1, "data_wait"), (None, ("span", "all_to_all", 4, 6, True)),
                       (11, "forward_backward"), (12, "optimizer")])
    [s] = resolved(p)
    assert s.exposed_s == {"all_to_all": pytest.approx(2)}
    assert s.compute_s == pytest.approx(9)
    assert s.phases_s["forward_backward"] == pytest.approx(s.wall_s * 8 / 12)
    assert_tiles(p)


def test_steps_resolve_late_without_a_wait_while_the_device_keeps_up():
    """Each step starts at the previous one's last event; a step whose events have not
    completed stays pending, and only more than LAG pending steps wait on an event."""
    clock = FakeClock()
    p = timer(clock, lag=2)
    clock.done = -1.0                      # nothing completes
    for n in range(1, 5):
        base = 10.0 * (n - 1)
        step(p, clock, n, [(base + 1, "data_wait"), (base + 9, "forward_backward"),
                           (None, ("span", "all_reduce", base + 9, base + 9.5, True)),
                           (base + 10, "optimizer")])
    assert len(p.events.pending) == 2 and len(p.events.steps) == 2
    assert clock.waited == 2               # two steps resolved by waiting on their last event
    clock.done = float("inf")
    steps = resolved(p)
    assert [s.step for s in steps] == [1, 2, 3, 4]
    for s in steps:
        assert s.compute_s == pytest.approx(8.5)
        assert s.exposed_s == {"all_reduce": pytest.approx(0.5)}
    assert_tiles(p)


def test_a_step_without_device_time_keeps_its_host_split():
    clock = FakeClock()
    p = timer(clock)
    step(p, clock, 1, [(0, "data_wait"), (0, "forward_backward"), (0, "optimizer")])
    [s] = resolved(p)
    assert sum(s.phases_s.values()) == pytest.approx(s.wall_s)
    assert_tiles(p)


def test_interval_arithmetic():
    assert A.union([(0, 2), (1, 3), (5, 6)]) == [(0, 3), (5, 6)]
    assert A.subtract([(0, 10)], [(2, 3), (5, 7)]) == [(0, 2), (3, 5), (7, 10)]
    assert A.intersect([(0, 10)], [(8, 12)]) == [(8, 10)]
    assert A.measure([(0, 2), (1, 3)]) == 3
    r = attribute(1, 1.0, [("forward_backward", 0, 10)], [("all_gather", 8, 12, False)], [])
    assert r.exposed_s == {"all_gather": pytest.approx(2)}   # past the last mark: exposed,
    assert r.phases_s["communication"] == 0                  # but outside the step's phases


def test_summary_and_metric_names():
    out = A.summary(2.0, {"all_gather": 1.0}, {"all_gather": 0.5}, steps=2,
                    kinds=("all_reduce",))
    assert out["compute_s_per_step"] == 1.0 and out["exposed_communication_s_per_step"] == 0.25
    assert out["comm_all_reduce_device_seconds_per_step"] == 0.0
    assert metric_name("comm_all_gather_exposed_seconds_per_step") == \
        "comm/all_gather/exposed_seconds_per_step"
    assert metric_name("comm_all_gather_device_seconds_per_step") == \
        "comm/all_gather/device_seconds_per_step"


# --- choosing -----------------------------------------------------------------------------------
def test_auto_is_events_on_cuda_and_todays_path_on_cpu():
    assert A.choose("auto", "cuda") == "events"
    assert A.choose("auto", "cpu") == "sync"
    assert A.choose("off", "cpu") == "off" and A.choose("sync", "cuda") == "sync"
    with pytest.raises(ConfigError, match="telemetry.attribution"):
        A.choose("events", "cpu")
    with pytest.raises(ConfigError, match="telemetry.attribution"):
        A.choose("nvtx", "cuda")


def test_cpu_path_is_unchanged():
    """No events: the totals are the host marks' and carves', every phase present, tiling."""
    p = PhaseTimer()
    p.begin()
    for n in range(1, 4):
        p.mark("data_wait")
        with p.carve("communication", {"kind": "all_reduce"}):
            time.sleep(0.001)
        p.mark("forward_backward")
        p.mark("optimizer")
        p.end_step(n)
    p.flush()
    assert tuple(p.totals) == PHASES
    assert p.totals["communication"] >= 0.003
    assert sum(p.totals.values()) == pytest.approx(sum(p.step_times), rel=1e-9)


# --- the trace, with the fake clock: what it hands the attribution -------------------------------
@pytest.fixture
def world_of_one():
    with tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group("gloo", store=dist.FileStore(os.path.join(tmp, "store"), 1),
                                rank=0, world_size=1)
        try:
            yield
        finally:
            dist.destroy_process_group()


def test_trace_records_device_spans_and_waits(world_of_one):
    clock = FakeClock()
    p = timer(clock)
    profile = CollectiveProfile(p)
    x = torch.ones(4)
    with profile.trace_torch_collectives() as trace:
        if not trace._restore:
            pytest.skip("torch not among the trace's tested releases")
        clock.at(1)
        p.mark("data_wait")
        clock.at(2)
        dist.all_reduce(x)                        # synchronous: one span, issuing stream
        clock.at(3)
        work = dist.all_reduce(x, async_op=True)  # issued at 3, waited on at 5
        clock.at(5)
        work.wait()
        clock.at(6, compute=False)
        profile.all_reduce(x)                     # through the profile (a DDP hook's way)
        clock.at(7)
        p.mark("forward_backward")
        seen = list(p.events.current.collectives)
        waits = list(p.events.current.waits)
        p.end_step(1)
    assert [(k, a.event, b.event, on) for k, a, b, on in seen] == [
        ("all_reduce", 2, 2, True), ("all_reduce", 3, 5, False), ("all_reduce", 6, 6, False)]
    assert [(a.event, b.event) for a, b in waits] == [(5, 5)]
    assert p.events.unpaired == 0 and trace.unattributed() == {}
    assert profile.stats[("train", "all_reduce")].calls == 3
    p.flush()
    assert_tiles(p)


def test_compiled_graphs_note():
    from pinchpoint.parallel.comm_trace import compiled_graphs_note
    assert compiled_graphs_note(False, 2, 1) is None
    assert compiled_graphs_note(True, 1, 1) is None       # FSDP2/DDP: outside the graphs
    assert "torch.compile" in compiled_graphs_note(True, 2, 1)
    assert "torch.compile" in compiled_graphs_note(True, 1, 4)
