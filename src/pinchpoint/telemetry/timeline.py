"""Per-run timeline in Chrome trace JSON (open in https://ui.perfetto.dev or chrome://tracing).

One clock: every event is stamped with ``time.perf_counter()`` relative to the timeline's
origin, and the origin's wall-clock time is kept (``otherData.origin_unix_s``) so that events
known only by wall time (Slurm accounting, an earlier attempt's trace) land on the same axis.

Processes in the trace: ``attempt A rank R`` (pid ``A*1000 + R``) holds the run's own tracks --
MLPerf events, steps, phases, one track per collective kind, evals, checkpoints, I/O, and the
system sampler's counters; ``slurm job J`` holds the job's life from accounting, one track per
attempt. Writing over the trace of an earlier attempt of the same run keeps that attempt's
events (shifted onto this clock), so a requeued run's file shows every attempt.
"""
from __future__ import annotations

import json
import os
import time
from datetime import datetime
from typing import Any, Optional

from pinchpoint.storage.atomic import write_text_atomic

# One track (tid) per kind of event, so phases, evals and checkpoints stack legibly. Tracks not
# listed here (a collective kind, a Slurm attempt) get the next free tid when first used.
TRACKS = {"mlperf": 0, "step": 1, "phase": 2, "collective": 3, "eval": 4, "checkpoint": 5,
          "io": 6, "system": 7}
ATTEMPT_PIDS = 1000           # pid = attempt * 1000 + rank
SLURM_PID = 1_000_000         # + job id's array task index: the Slurm job's own process


def _attempt_from_env() -> int:
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    except ValueError:
        return 0


class Timeline:
    def __init__(self, rank: int = 0, max_events: int = 200_000, attempt: Optional[int] = None):
        self.rank = rank
        # The run sets ``attempt`` once it knows it (a resume); Slurm's restart count by default.
        self.attempt = _attempt_from_env() if attempt is None else attempt
        self.origin = time.perf_counter()
        self.origin_unix = time.time()
        self.events: list[dict[str, Any]] = []
        self.max_events = max_events
        self.dropped = 0
        self.tracks = dict(TRACKS)
        self.slurm: list[dict[str, Any]] = []   # the job-life process, redrawn on every write
        # What the run says about its trace, kept in ``otherData`` (the profiler's clock
        # alignment, collectives a compiled graph hides from the trace).
        self.metadata: dict[str, Any] = {}

    # --- clocks ------------------------------------------------------------------------------
    def _us(self, t: float) -> float:
        return round((t - self.origin) * 1e6, 3)

    def from_unix(self, unix_s: float) -> float:
        """A wall-clock time as a perf_counter time on this timeline's clock."""
        return self.origin + (unix_s - self.origin_unix)

    def _tid(self, track: str) -> int:
        if track not in self.tracks:
            self.tracks[track] = max(self.tracks.values()) + 1
        return self.tracks[track]

    def _add(self, event: dict) -> None:
        if len(self.events) < self.max_events:
            self.events.append(event)
        else:
            self.dropped += 1

    # --- events --------------------------------------------------------------------------------
    def span(self, name: str, track: str, start: float, end: float,
             args: Optional[dict] = None) -> None:
        """A complete event from perf_counter ``start`` to ``end``. Collectives go on one track
        per kind (all_reduce, all_to_all_single, ...), named by their kind."""
        args = args or {}
        if track == "collective" and args.get("kind"):
            name, track = str(args["kind"]), f"collective {args['kind']}"
        self._add({"name": name, "ph": "X", "tid": self._tid(track), "ts": self._us(start),
                   "dur": round((end - start) * 1e6, 3), "args": args})

    def instant(self, name: str, track: str, t: Optional[float] = None,
                args: Optional[dict] = None) -> None:
        self._add({"name": name, "ph": "i", "s": "t", "tid": self._tid(track),
                   "ts": self._us(time.perf_counter() if t is None else t), "args": args or {}})

    def counter(self, name: str, values: dict[str, float], t: Optional[float] = None) -> None:
        """A counter track ``name`` with one series per key of ``values`` (Perfetto draws each)."""
        self._add({"name": name, "ph": "C", "tid": self._tid("system"),
                   "ts": self._us(time.perf_counter() if t is None else t), "args": values})

    # --- Slurm job life ----------------------------------------------------------------------------
    def slurm_job(self, history) -> None:
        """Draw a job's life from accounting (a ``cluster.accounting.JobHistory``): per attempt,
        its own track with the queue wait (submitted -> started) and the run (started -> ended,
        or now while it runs), and instants for submitted, started, requeued and ended."""
        pid = SLURM_PID
        events: list[dict[str, Any]] = [
            {"name": "process_name", "ph": "M", "pid": pid, "args": {"name":
                                                                   f"slurm job {history.job_id}"}},
            {"name": "process_sort_index", "ph": "M", "pid": pid, "args": {"sort_index": -1}}]
        last = len(history.attempts) - 1
        for i, a in enumerate(history.attempts):
            tid = i + 1
            events.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid,
                           "args": {"name": f"attempt {i} ({a.state}) on {a.nodes or '?'}"}})
            info = {"job_id": history.job_id, "attempt": i, "state": a.state, "nodes": a.nodes}
            submit, start, end = (_unix(x) for x in (a.submit, a.start, a.end))
            ended = end if end is not None else (time.time() if start is not None else None)
            if submit is not None and start is not None:
                events.append(self._wall_span("queued", pid, tid, submit, start, info))
            if start is not None and ended is not None:
                events.append(self._wall_span(f"attempt {i}: {a.state}", pid, tid, start, ended,
                                              info))
            for label, when in (("submitted", submit), ("started", start), (
                    "requeued" if i < last and a.state in ("REQUEUED", "PREEMPTED", "NODE_FAIL")
                    else "ended",
                    end)):
                if when is not None:
                    events.append({"name": label, "ph": "i", "s": "t", "pid": pid, "tid": tid,
                                   "ts": self._us(self.from_unix(when)), "args": info})
        self.slurm = events

    def _wall_span(self, name, pid, tid, start_unix, end_unix, args) -> dict:
        start = self.from_unix(start_unix)
        return {"name": name, "ph": "X", "pid": pid, "tid": tid, "ts": self._us(start),
                "dur": round((end_unix - start_unix) * 1e6, 3), "args": args}

    # --- output ------------------------------------------------------------------------------------
    @property
    def pid(self) -> int:
        return self.attempt * ATTEMPT_PIDS + self.rank

    def _own_events(self) -> list[dict]:
        pid = self.pid
        meta = [{"name": "process_name", "ph": "M", "pid": pid,
                 "args": {"name": f"attempt {self.attempt} rank {self.rank}"}},
                {"name": "process_sort_index", "ph": "M", "pid": pid, "args": {"sort_index": pid}}]
        meta += [{"name": "thread_name", "ph": "M", "pid": pid, "tid": tid,
                  "args": {"name": name}} for name, tid in self.tracks.items()]
        return meta + [{**e, "pid": pid} for e in self.events]

    def _earlier_attempts(self, path: str) -> list[dict]:
        """Events of earlier attempts from the trace already at ``path``, moved onto this clock
        (this attempt's own pid and the Slurm process are redrawn, not kept)."""
        try:
            with open(path) as f:
                old = json.load(f)
            shift = (float(old["otherData"]["origin_unix_s"]) - self.origin_unix) * 1e6
        except (OSError, ValueError, KeyError, TypeError):
            return []
        kept = []
        for e in old.get("traceEvents", []):
            pid = e.get("pid")
            if not isinstance(pid, int) or pid == self.pid or pid >= SLURM_PID or \
                    pid // ATTEMPT_PIDS >= self.attempt:
                continue
            kept.append({**e, "ts": round(e["ts"] + shift, 3)} if "ts" in e else e)
        return kept

    def write(self, path: str) -> str:
        earlier = self._earlier_attempts(path) if self.attempt > 0 else []
        doc = {"traceEvents": earlier + self._own_events() + self.slurm,
               "displayTimeUnit": "ms",
               "otherData": {"dropped_events": self.dropped, "origin_unix_s": self.origin_unix,
                             "attempt": self.attempt, **self.metadata}}
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        write_text_atomic(path, json.dumps(doc))
        return path


def _unix(when: Optional[datetime]) -> Optional[float]:
    """sacct prints the cluster's local time without a zone; this machine's zone reads it."""
    return when.timestamp() if when is not None else None
