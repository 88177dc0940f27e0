"""Per-step phase timing whose phases sum exactly to the step time.

A step is a chain of marks: each ``mark(phase)`` attributes the time since the previous mark to
``phase``, so the phases of a step tile it with no gap or overlap, and the first mark of a step
starts where the previous step ended (loop overhead lands in the next step's data_wait).
``carve(phase)`` moves time spent inside the current phase (e.g. an all-to-all inside
forward_backward) into another phase without breaking the tiling.

Attribution (``telemetry.attribution``; telemetry/attribution.py picks one per run):
* ``sync``: the device is synchronized at every mark and around every collective, so host time
  is device time, serialized (overlap given up). ``auto`` on CPU is this path (the synchronize
  is a no-op there): phases and collectives are host time, and every collective is exposed.
* ``off``: host time only, no synchronize: device work lands in whichever phase next waits on it.
* ``events`` (``auto`` on CUDA): no synchronize. Each mark records an event on the compute stream,
  each collective events on the stream it is issued from (and around the compute stream's wait
  on an asynchronous one); a step is resolved when its events have completed (at the latest
  ``attribution.LAG`` steps later). Rule: the step's wall time (host, between ``end_step``s:
  the steps still tile the loop) is split in proportion to its phases' device time (between
  consecutive compute-stream events), after moving into ``communication`` the exposed part of
  each phase: the union of the collectives' device intervals minus compute (compute-phase
  intervals less the compute stream's stalls on collectives). ``totals`` lag the loop by up to
  ``LAG`` steps until ``flush()``. Not seen as stalls: waits torch makes by stream event (FSDP2's
  all-gather and reduce-scatter streams): there exposed communication is a lower bound.
"""
from __future__ import annotations

import contextlib
import time
from typing import Callable, Optional

import numpy as np

from pinchpoint.metric_names import PHASES
from pinchpoint.telemetry.attribution import EventAttribution
from pinchpoint.telemetry.timeline import Timeline


class Carved:
    """What ``PhaseTimer.carve`` moved: its ``seconds``, known once the block exits."""
    __slots__ = ("seconds",)

    def __init__(self):
        self.seconds = 0.0


class PhaseTimer:
    def __init__(self, timeline: Optional[Timeline] = None,
                 synchronize: Optional[Callable[[], None]] = None,
                 events: Optional[EventAttribution] = None):
        self.timeline = timeline
        self.synchronize = synchronize or (lambda: None)  # cuda.synchronize on GPU
        self.events = events   # attribution=events: device time from stream events
        self._step_host = dict.fromkeys(PHASES, 0.0)   # events: this step's host split
        self._step_ends: dict[int, float] = {}          # events: step -> its host end
        self.totals = dict.fromkeys(PHASES, 0.0)
        self.step_times: list[float] = []
        self._last: Optional[float] = None
        self._step_start: Optional[float] = None
        self._carved = dict.fromkeys(PHASES, 0.0)
        self._current: list[tuple[str, float, float]] = []

    def begin(self) -> None:
        """Start the clock (at run_start): the first step's data_wait counts from here."""
        self._last = self._step_start = time.perf_counter()
        if self.events is not None:
            self.events.begin(self.events.record())

    def mark(self, phase: str) -> float:
        self.synchronize()
        now = time.perf_counter()
        elapsed = now - self._last
        carved = sum(self._carved.values())
        # events: the host split is kept per step, as the fallback of a step without device time
        totals = self.totals if self.events is None else self._step_host
        for name, seconds in self._carved.items():
            totals[name] += seconds
        self._carved = dict.fromkeys(PHASES, 0.0)
        totals[phase] += elapsed - carved
        if self.events is not None:
            self.events.mark(phase, self.events.record())
        self._current.append((phase, self._last, now))
        self._last = now
        return elapsed - carved

    @contextlib.contextmanager
    def carve(self, phase: str, args: Optional[dict] = None, synchronize: bool = True):
        """Time the block and move it into ``phase``; yields a ``Carved`` whose ``seconds`` is
        set on exit (exactly what was moved). ``synchronize=False`` skips the device sync at
        both ends (host time only: cheap, but device work is left to the next sync)."""
        events = self.events
        if synchronize:
            self.synchronize()
        carved = Carved()
        first = events.record() if events is not None else None
        start = time.perf_counter()
        try:
            yield carved
        finally:
            if synchronize:
                self.synchronize()
            end = time.perf_counter()
            carved.seconds = end - start
            self.add_carved(phase, start, end, args)
            if events is not None:
                self.device_span((args or {}).get("kind", phase), first, events.record())

    def add_carved(self, phase: str, start: float, end: float,
                   args: Optional[dict] = None) -> None:
        """``carve`` for an interval the caller timed itself (the collective trace, which
        cannot afford a context manager per call): moved into ``phase`` at the next mark."""
        self._carved[phase] += end - start
        if self.timeline is not None:
            self.timeline.span(phase, "collective", start, end, args)

    def device_span(self, kind: str, start, end, issued=None) -> None:
        """attribution=events: a collective between marks ``start`` and ``end`` recorded on the
        stream it was issued from (``issued`` None), or the current stream's wait on one whose
        issue was marked ``issued`` (its device span then runs from the issue to the wait's end:
        an upper bound; the wait is a stall when made on the compute stream)."""
        if issued is None:
            self.events.collective(kind, start, end, start.compute)
        else:
            self.events.collective(kind, issued, end, False)
            self.events.wait(start, end)

    def end_step(self, step: int) -> float:
        now = self._last
        duration = now - self._step_start
        self.step_times.append(duration)
        if self.events is not None:
            self._step_ends[step] = now
            for resolved in self.events.end_step(step, duration, self._step_host):
                self._add_resolved(resolved)
            self._step_host = dict.fromkeys(PHASES, 0.0)
        if self.timeline is not None:
            self.timeline.span(f"step {step}", "step", self._step_start, now)
            for phase, start, end in self._current:
                self.timeline.span(phase, "phase", start, end)
        self._current.clear()
        self._step_start = now
        return duration

    def flush(self) -> None:
        """attribution=events: resolve the steps still pending (after the loop)."""
        if self.events is not None:
            for resolved in self.events.flush():
                self._add_resolved(resolved)

    def _add_resolved(self, resolved) -> None:
        for phase, seconds in resolved.phases_s.items():
            self.totals[phase] += seconds
        end = self._step_ends.pop(resolved.step, None)
        if self.timeline is not None and end is not None:   # per step, at the step's end
            self.timeline.counter("device attribution", {
                "compute_s": resolved.compute_s,
                "communication_s": sum(resolved.communication_s.values()),
                "exposed_communication_s": sum(resolved.exposed_s.values()),
                **{f"exposed_{k}_s": v for k, v in resolved.exposed_s.items()}}, t=end)

    # --- summary -----------------------------------------------------------------------------
    def loop_seconds(self) -> float:
        return sum(self.totals.values())

    def fractions(self) -> dict[str, float]:
        total = self.loop_seconds() or 1.0
        return {name: seconds / total for name, seconds in self.totals.items()}

    def bottleneck(self) -> str:
        return max(self.totals, key=self.totals.get)

    def percentiles(self) -> dict[str, float]:
        if not self.step_times:
            return {}
        times = np.asarray(self.step_times)
        return {"step_time_p50_s": float(np.percentile(times, 50)),
                "step_time_p95_s": float(np.percentile(times, 95)),
                "step_time_mean_s": float(times.mean())}
