"""Device-time attribution from events recorded on the streams (``telemetry.attribution=events``):
what the GPU spent per step on compute, on each collective kind, and how much of that
communication was exposed (the compute stream had nothing to overlap it with).

The loop never synchronizes the device for this: ``PhaseTimer`` records an event on the current
(compute) stream at every phase mark, the collective trace records events around each collective
on the stream it is issued from and around each wait the compute stream makes on one; a step's
events are resolved once they have completed (``query()``), at the latest ``LAG`` steps later.
The arithmetic here is device-independent (a ``clock`` turns events into seconds), so it is
tested on CPU with a scripted clock (tests/test_attribution.py). The rule is documented in
telemetry/phases.py.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Optional

from pinchpoint.errors import ConfigError

MODES = ("auto", "events", "sync", "off")
# Phases whose compute-stream time is compute (data_wait and checkpoint are host work the device
# idles through; communication is carved, never marked).
COMPUTE_PHASES = ("forward_backward", "optimizer", "eval")
LAG = 2   # steps the host may run ahead of the resolution before it waits on an event


def choose(mode: str, device_type: str) -> str:
    """The attribution a run uses: ``events``, ``sync`` or ``off``. ``auto`` is events on CUDA
    and sync on CPU (there the device synchronize is a no-op: today's host path, unchanged)."""
    if mode not in MODES:
        raise ConfigError("telemetry.attribution", mode, " | ".join(MODES))
    if mode == "auto":
        return "events" if device_type == "cuda" else "sync"
    if mode == "events" and device_type != "cuda":
        raise ConfigError("telemetry.attribution", mode,
                          "events needs CUDA streams (this run is on the CPU, where the host "
                          "clock is the device clock: use auto, sync or off)")
    return mode


class Mark(NamedTuple):
    """An event recorded on a stream; ``compute``: on the run's compute stream."""
    event: Any
    compute: bool


class CudaClock:
    """Events on the current CUDA stream, timed against each other (``enable_timing``)."""

    def __init__(self, device=None):
        import torch
        self.torch = torch
        self.compute_stream = torch.cuda.current_stream(device)

    def record(self) -> Mark:
        stream = self.torch.cuda.current_stream()
        event = self.torch.cuda.Event(enable_timing=True)
        event.record(stream)
        return Mark(event, stream == self.compute_stream)

    def ready(self, mark: Mark) -> bool:
        return mark.event.query()

    def wait(self, mark: Mark) -> None:
        mark.event.synchronize()   # one event: never a device-wide synchronize

    def seconds(self, ref: Mark, mark: Mark) -> float:
        return ref.event.elapsed_time(mark.event) / 1e3


@dataclass
class StepEvents:
    """What one step recorded: ``marks`` [(phase, Mark)] on the compute stream after ``start``
    (the previous step's last mark), ``collectives`` [(kind, start Mark, end Mark, on compute
    stream)], ``waits`` [(start Mark, end Mark)] of the compute stream on a collective."""
    step: int
    start: Mark
    wall_s: float
    host_phases: dict
    marks: list = field(default_factory=list)
    collectives: list = field(default_factory=list)
    waits: list = field(default_factory=list)

    def last(self) -> Mark:
        marks = [m for _, m in self.marks] + [c[2] for c in self.collectives]
        return marks[-1] if marks else self.start


@dataclass
class StepAttribution:
    step: int
    wall_s: float
    phases_s: dict               # the step's wall time tiled by device shares (rule: phases.py)
    compute_s: float             # device seconds
    communication_s: dict        # kind -> device seconds of its collectives (summed)
    exposed_s: dict              # kind -> device seconds not overlapped by compute


# --- interval arithmetic (sorted, disjoint lists of (start, end)) --------------------------------
def union(intervals) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for start, end in sorted((s, e) for s, e in intervals if e > s):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(s, e) for s, e in out]


def subtract(a, b) -> list[tuple[float, float]]:
    """a minus b, both disjoint and sorted."""
    out, b = [], union(b)
    for start, end in union(a):
        cursor = start
        for bs, be in b:
            if be <= cursor or bs >= end:
                continue
            if bs > cursor:
                out.append((cursor, bs))
            cursor = max(cursor, be)
        if cursor < end:
            out.append((cursor, end))
    return out


def intersect(a, b) -> list[tuple[float, float]]:
    return subtract(a, subtract(a, b))


def measure(intervals) -> float:
    return sum(e - s for s, e in union(intervals))


def attribute(step: int, wall_s: float, phases: list[tuple[str, float, float]],
              collectives: list[tuple[str, float, float, bool]],
              waits: list[tuple[float, float]]) -> StepAttribution:
    """One step on the device timeline (seconds from any reference): ``phases`` are the
    compute-stream intervals between consecutive marks, ``collectives`` (kind, start, end, on
    the compute stream), ``waits`` the compute stream's stalls on a collective.

    compute = the compute phases' intervals minus the collectives that ran on the compute
    stream and its waits; exposed = the union of the collectives minus compute, shared equally
    by the collectives active in each piece of it; the step's wall time is split in the
    proportion of the phases' device time with the exposed part of each moved into
    ``communication``."""
    stalls = [(s, e) for _, s, e, on in collectives if on] + list(waits)
    compute = subtract([(s, e) for p, s, e in phases if p in COMPUTE_PHASES], stalls)
    communication: dict = defaultdict(float)
    for kind, s, e, _ in collectives:
        communication[kind] += max(e - s, 0.0)
    exposed_set = subtract([(s, e) for _, s, e, _ in collectives], compute)
    exposed: dict = defaultdict(float)
    for start, end in exposed_set:   # elementary pieces: split among the active collectives
        cuts = sorted({start, end, *(t for _, s, e, _ in collectives for t in (s, e)
                                     if start < t < end)})
        for a, b in zip(cuts, cuts[1:]):
            active = [k for k, s, e, _ in collectives if s <= a and e >= b and e > s]
            for kind in active:
                exposed[kind] += (b - a) / len(active)
    device: dict = defaultdict(float)
    for phase, s, e in phases:
        inside = measure(intersect([(s, e)], exposed_set))
        device[phase] += max(e - s, 0.0) - inside
        device["communication"] += inside
    total = sum(device.values())
    phases_s = {p: wall_s * d / total for p, d in device.items()} if total > 0 else {}
    return StepAttribution(step, wall_s, phases_s, measure(compute), dict(communication),
                           dict(exposed))


class EventAttribution:
    """The events of the steps not yet resolved, and what the resolved ones added up to."""

    def __init__(self, clock, lag: int = LAG):
        self.clock, self.lag = clock, lag
        self.current: Optional[StepEvents] = None
        self.pending: list[StepEvents] = []
        self.steps: list[StepAttribution] = []
        self.compute_s = 0.0
        self.communication_s: dict = defaultdict(float)
        self.exposed_s: dict = defaultdict(float)
        self.unpaired = 0   # waits whose collective's issue was not seen

    def record(self) -> Mark:
        return self.clock.record()

    def begin(self, start: Mark) -> None:
        self.current = StepEvents(0, start, 0.0, {})

    def mark(self, phase: str, mark: Mark) -> None:
        self.current.marks.append((phase, mark))

    def collective(self, kind: str, start: Mark, end: Mark, on_compute: bool) -> None:
        self.current.collectives.append((kind, start, end, on_compute))

    def wait(self, start: Mark, end: Mark) -> None:
        if start.compute:
            self.current.waits.append((start, end))

    def end_step(self, step: int, wall_s: float, host_phases: dict) -> list[StepAttribution]:
        """Close the step; returns the steps resolved now (any whose events have completed,
        and the oldest ones, waited on, once more than ``lag`` are pending)."""
        done = self.current
        done.step, done.wall_s, done.host_phases = step, wall_s, host_phases
        self.pending.append(done)
        self.current = StepEvents(0, done.marks[-1][1] if done.marks else done.start, 0.0, {})
        resolved = []
        while self.pending and (len(self.pending) > self.lag
                                or self.clock.ready(self.pending[0].last())):
            resolved.append(self._resolve(self.pending.pop(0), wait=True))
        return resolved

    def flush(self) -> list[StepAttribution]:
        """Resolve every pending step (at the end of the loop: waits on their last events)."""
        resolved = [self._resolve(s, wait=True) for s in self.pending]
        self.pending.clear()
        return resolved

    def _resolve(self, s: StepEvents, wait: bool) -> StepAttribution:
        clock, ref = self.clock, s.start
        if wait:
            clock.wait(s.last())
        t = lambda mark: clock.seconds(ref, mark)   # noqa: E731
        phases, previous = [], 0.0
        for phase, mark in s.marks:
            now = t(mark)
            phases.append((phase, previous, now))
            previous = now
        result = attribute(s.step, s.wall_s, phases,
                           [(k, t(a), t(b), on) for k, a, b, on in s.collectives],
                           [(t(a), t(b)) for a, b in s.waits])
        if not result.phases_s:   # no device time between the marks: the host's own split
            result.phases_s = dict(s.host_phases)
        self.steps.append(result)
        self.compute_s += result.compute_s
        for kind, seconds in result.communication_s.items():
            self.communication_s[kind] += seconds
        for kind, seconds in result.exposed_s.items():
            self.exposed_s[kind] += seconds
        return result


def summary(compute_s: float, communication_s: dict, exposed_s: dict, steps: int,
            kinds=()) -> dict[str, float]:
    """Per-step figures for phase_summary.json / MLflow: ``compute_s``, ``communication_s``,
    ``exposed_communication_s`` and each kind's ``comm_<kind>_device_seconds_per_step`` and
    ``comm_<kind>_exposed_seconds_per_step``."""
    n = max(steps, 1)
    out = {"compute_s_per_step": compute_s / n,
           "communication_s_per_step": sum(communication_s.values()) / n,
           "exposed_communication_s_per_step": sum(exposed_s.values()) / n}
    for kind in sorted({*kinds, *communication_s, *exposed_s}):
        out[f"comm_{kind}_device_seconds_per_step"] = communication_s.get(kind, 0.0) / n
        out[f"comm_{kind}_exposed_seconds_per_step"] = exposed_s.get(kind, 0.0) / n
    return out


def for_run(mode: str, device, synchronize):
    """(the attribution chosen, the PhaseTimer's synchronize, its EventAttribution or None)
    for ``telemetry.attribution=mode`` on ``device`` (a torch.device); ``synchronize``: the
    device-wide synchronize (RankContext.synchronize)."""
    chosen = choose(mode, device.type)
    if chosen == "events":
        return chosen, None, EventAttribution(CudaClock(device))
    return chosen, synchronize if chosen == "sync" else None, None


def run_figures(chosen: str, events: Optional[EventAttribution], totals: dict,
                kind_seconds: dict, steps: int, kinds=()) -> dict[str, Any]:
    """The run's compute / communication / exposed figures per step. With events they are
    device time; with sync and off (and so on the CPU) they are the host's: compute is the
    compute phases, communication each kind's blocked seconds, all of it exposed (a gloo or
    synchronized collective blocks the step)."""
    if events is not None:
        out = summary(events.compute_s, events.communication_s, events.exposed_s, steps, kinds)
        out["attribution_unpaired_waits"] = events.unpaired
    else:
        out = summary(sum(totals.get(p, 0.0) for p in COMPUTE_PHASES), kind_seconds,
                      kind_seconds, steps, kinds)
    out["attribution"] = chosen
    return out
