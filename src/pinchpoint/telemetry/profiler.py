"""torch.profiler (Kineto) over the steps ``telemetry.profile_steps = [first, last]``, its events
merged into the run's timeline on the timeline's clock.

The loop calls ``before_step(n)`` before it takes step n's batch and ``after_step(n)`` once step n
is done: the profiler starts before step ``first`` (its start cost lands in that step's
data_wait) and stops after step ``last`` (its stop, when Kineto collects the trace, lands in the
next step's data_wait). The trace is read and merged in ``close``, after the loop.

Clock: Kineto stamps events in microseconds of its own clock (wall time since the trace's
``baseTimeNanoseconds``; CUDA kernels and copies are converted to it by Kineto). At the start and
before every profiled step the profiler records a ``record_function`` annotation bracketed by two
``time.perf_counter()`` reads; each annotation, as Kineto stamped it, lies between its two reads,
which bounds the offset between the clocks. The intersection of those bounds gives the offset
(its midpoint) and the alignment error (half its width), both kept in the timeline's metadata
(``otherData.profiler``). Without annotations in the trace the wall clock is used instead.

Tracks: one per Kineto thread in the run's process ("profiler cpu thread T") and one per device
stream ("profiler gpu D stream S"); each event keeps Kineto's category in ``args.cat`` (cpu_op,
user_annotation, kernel, gpu_memcpy, gpu_memset, cuda_runtime, ...).
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from typing import Any, Optional

from pinchpoint.telemetry.timeline import Timeline

log = logging.getLogger(__name__)

SYNC = "pinchpoint_sync"
# Kineto categories of work on a device (pid = device, tid = stream); the rest are host threads.
DEVICE_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset", "gpu_user_annotation", "Memcpy",
                     "Memset", "Kernel")


class StepProfiler:
    """Profile steps ``first``..``last`` (numbered as the timeline's "step N", from 1)."""

    def __init__(self, timeline: Timeline, steps, cuda: bool = False):
        self.timeline = timeline
        self.first, self.last = (int(s) for s in steps)
        self.cuda = cuda
        self.prof = None
        self.marks: list[tuple[float, float]] = []   # perf_counter around each sync annotation
        self.profiled: list[int] = []
        self.trace_path: Optional[str] = None
        self.stats: dict[str, Any] = {}

    @classmethod
    def for_run(cls, timeline: Timeline, steps, cuda: bool = False) -> Optional["StepProfiler"]:
        """A profiler for ``telemetry.profile_steps``, or None when it is empty."""
        steps = list(steps or [])
        return cls(timeline, steps, cuda) if steps else None

    # --- the loop's hooks ---------------------------------------------------------------------
    def before_step(self, step: int) -> None:
        if self.prof is None and self.trace_path is None and self.first <= step <= self.last:
            self._start()
        if self.prof is not None:
            self.profiled.append(step)
            self._sync()

    def after_step(self, step: int) -> None:
        if self.prof is not None and step >= self.last:
            self._stop()

    def close(self) -> dict[str, Any]:
        """Stop (a run that ended inside the window), merge into the timeline; what was merged."""
        if self.prof is not None:
            self._stop()
        if self.trace_path is None:
            if not self.stats:
                log.warning("telemetry.profile_steps=[%d, %d]: the run ran none of these steps; "
                            "nothing was profiled", self.first, self.last)
            return self.stats
        try:
            with open(self.trace_path) as f:
                trace = json.load(f)
        finally:
            os.unlink(self.trace_path)
            self.trace_path = None
        self.stats = merge(self.timeline, trace, self.marks)
        self.stats["steps"] = [self.profiled[0], self.profiled[-1]] if self.profiled else []
        self.timeline.metadata["profiler"] = self.stats
        log.info("profiler: steps %s, %d events merged onto the timeline (%s, error %.1f us)",
                 self.stats["steps"], self.stats["events"], self.stats["clock"],
                 self.stats["clock_error_us"])
        return self.stats

    # --- profiling ----------------------------------------------------------------------------
    def _start(self) -> None:
        import torch
        from torch.profiler import ProfilerActivity, profile
        activities = [ProfilerActivity.CPU]
        if self.cuda and torch.cuda.is_available():
            activities.append(ProfilerActivity.CUDA)
        self.prof = profile(activities=activities, record_shapes=False)
        self.prof.start()
        self._sync()

    def _sync(self) -> None:
        from torch.profiler import record_function
        before = time.perf_counter()
        with record_function(SYNC):
            pass
        self.marks.append((before, time.perf_counter()))

    def _stop(self) -> None:
        self._sync()
        prof, self.prof = self.prof, None
        prof.stop()
        fd, path = tempfile.mkstemp(prefix="pinchpoint-kineto-", suffix=".json")
        os.close(fd)
        prof.export_chrome_trace(path)
        self.trace_path = path


def clock_offset(trace: dict, marks: list[tuple[float, float]], timeline: Timeline
                 ) -> tuple[float, float, str]:
    """(offset s, error us, method): perf_counter time = Kineto ts (us) / 1e6 + offset."""
    syncs = sorted((e for e in trace.get("traceEvents", [])
                    if e.get("name") == SYNC and e.get("ph") == "X"), key=lambda e: e["ts"])
    if syncs and len(syncs) == len(marks):
        bounds = [(before - e["ts"] / 1e6, after - (e["ts"] + e.get("dur", 0.0)) / 1e6)
                  for (before, after), e in zip(marks, syncs)]
        lo, hi = max(b[0] for b in bounds), min(b[1] for b in bounds)
        if lo <= hi:
            return (lo + hi) / 2, (hi - lo) / 2 * 1e6, "record_function marks"
        # The clocks drifted apart over the window: the tightest mark, and how far the others
        # fall from it.
        lo, hi = min(bounds, key=lambda b: b[1] - b[0])
        offset = (lo + hi) / 2
        error = max(max(b[0] - offset, offset - b[1], (hi - lo) / 2) for b in bounds)
        return offset, error * 1e6, "record_function marks (drifting)"
    base = float(trace.get("baseTimeNanoseconds", 0)) / 1e9
    return timeline.from_unix(base), float("nan"), "wall clock"


def merge(timeline: Timeline, trace: dict, marks: list[tuple[float, float]]) -> dict[str, Any]:
    """Put a Kineto chrome trace's complete events on ``timeline``'s tracks, on its clock."""
    offset, error_us, method = clock_offset(trace, marks, timeline)
    own = os.getpid()
    counts: dict[str, int] = {}
    for e in trace.get("traceEvents", []):
        if e.get("ph") != "X" or e.get("name") == SYNC or not isinstance(e.get("pid"), int):
            continue
        cat = str(e.get("cat", ""))
        if cat in DEVICE_CATEGORIES:
            track = f"profiler gpu {e['pid']} stream {e.get('tid')}"
        elif e["pid"] == own:
            track = f"profiler cpu thread {e.get('tid')}"
        else:
            track = f"profiler pid {e['pid']} thread {e.get('tid')}"
        start = e["ts"] / 1e6 + offset
        timeline.span(str(e.get("name", "?")), track, start, start + e.get("dur", 0.0) / 1e6,
                      {"cat": cat, **(e.get("args") or {})})
        counts[cat] = counts.get(cat, 0) + 1
    return {"events": sum(counts.values()), "by_category": counts, "clock": method,
            "clock_error_us": round(error_us, 3), "sync_marks": len(marks)}
