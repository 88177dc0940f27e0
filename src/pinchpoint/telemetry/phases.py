"""Per-step phase timing whose phases sum exactly to the step time.

A step is a chain of marks: each ``mark(phase)`` attributes the time since the previous mark to
``phase``, so the phases of a step tile it with no gap or overlap, and the first mark of a step
starts where the previous step ended (loop overhead lands in the next step's data_wait).
``carve(phase)`` moves time spent inside the current phase (e.g. an all-to-all inside
forward_backward) into another phase without breaking the tiling.
"""
from __future__ import annotations

import contextlib
import time
from typing import Callable, Optional

import numpy as np

from pinchpoint.metric_names import PHASES
from pinchpoint.telemetry.timeline import Timeline


class Carved:
    """What ``PhaseTimer.carve`` moved: its ``seconds``, known once the block exits."""
    __slots__ = ("seconds",)

    def __init__(self):
        self.seconds = 0.0


class PhaseTimer:
    def __init__(self, timeline: Optional[Timeline] = None,
                 synchronize: Optional[Callable[[], None]] = None):
        self.timeline = timeline
        self.synchronize = synchronize or (lambda: None)  # cuda.synchronize on GPU
        self.totals = dict.fromkeys(PHASES, 0.0)
        self.step_times: list[float] = []
        self._last: Optional[float] = None
        self._step_start: Optional[float] = None
        self._carved = dict.fromkeys(PHASES, 0.0)
        self._current: list[tuple[str, float, float]] = []

    def begin(self) -> None:
        """Start the clock (at run_start): the first step's data_wait counts from here."""
        self._last = self._step_start = time.perf_counter()

    def mark(self, phase: str) -> float:
        self.synchronize()
        now = time.perf_counter()
        elapsed = now - self._last
        carved = sum(self._carved.values())
        for name, seconds in self._carved.items():
            self.totals[name] += seconds
        self._carved = dict.fromkeys(PHASES, 0.0)
        self.totals[phase] += elapsed - carved
        self._current.append((phase, self._last, now))
        self._last = now
        return elapsed - carved

    @contextlib.contextmanager
    def carve(self, phase: str, args: Optional[dict] = None, synchronize: bool = True):
        """Time the block and move it into ``phase``; yields a ``Carved`` whose ``seconds`` is
        set on exit (exactly what was moved). ``synchronize=False`` skips the device sync at
        both ends (host time only: cheap, but device work is left to the next sync)."""
        if synchronize:
            self.synchronize()
        carved = Carved()
        start = time.perf_counter()
        try:
            yield carved
        finally:
            if synchronize:
                self.synchronize()
            end = time.perf_counter()
            carved.seconds = end - start
            self.add_carved(phase, start, end, args)

    def add_carved(self, phase: str, start: float, end: float,
                   args: Optional[dict] = None) -> None:
        """``carve`` for an interval the caller timed itself (the collective trace, which
        cannot afford a context manager per call): moved into ``phase`` at the next mark."""
        self._carved[phase] += end - start
        if self.timeline is not None:
            self.timeline.span(phase, "collective", start, end, args)

    def end_step(self, step: int) -> float:
        now = self._last
        duration = now - self._step_start
        self.step_times.append(duration)
        if self.timeline is not None:
            self.timeline.span(f"step {step}", "step", self._step_start, now)
            for phase, start, end in self._current:
                self.timeline.span(phase, "phase", start, end)
        self._current.clear()
        self._step_start = now
        return duration

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
