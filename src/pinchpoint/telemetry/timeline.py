"""Per-run timeline in Chrome trace JSON (open in https://ui.perfetto.dev or chrome://tracing)."""
from __future__ import annotations

import json
import os
import time
from typing import Any, Optional

from pinchpoint.storage.atomic import write_text_atomic

# One track (tid) per kind of event, so phases, evals and checkpoints stack legibly.
TRACKS = {"mlperf": 0, "step": 1, "phase": 2, "collective": 3, "eval": 4, "checkpoint": 5,
          "io": 6}


class Timeline:
    def __init__(self, rank: int = 0, max_events: int = 200_000):
        self.rank = rank
        self.origin = time.perf_counter()
        self.events: list[dict[str, Any]] = []
        self.max_events = max_events
        self.dropped = 0

    def _us(self, t: float) -> float:
        return round((t - self.origin) * 1e6, 3)

    def _add(self, event: dict) -> None:
        if len(self.events) < self.max_events:
            self.events.append(event)
        else:
            self.dropped += 1

    def span(self, name: str, track: str, start: float, end: float,
             args: Optional[dict] = None) -> None:
        """A complete event from perf_counter ``start`` to ``end``."""
        self._add({"name": name, "ph": "X", "pid": self.rank, "tid": TRACKS[track],
                   "ts": self._us(start), "dur": round((end - start) * 1e6, 3),
                   "args": args or {}})

    def instant(self, name: str, track: str, t: Optional[float] = None,
                args: Optional[dict] = None) -> None:
        self._add({"name": name, "ph": "i", "s": "t", "pid": self.rank, "tid": TRACKS[track],
                   "ts": self._us(time.perf_counter() if t is None else t), "args": args or {}})

    def counter(self, name: str, values: dict[str, float], t: Optional[float] = None) -> None:
        self._add({"name": name, "ph": "C", "pid": self.rank,
                   "ts": self._us(time.perf_counter() if t is None else t), "args": values})

    def write(self, path: str) -> str:
        meta = [{"name": "thread_name", "ph": "M", "pid": self.rank, "tid": tid,
                 "args": {"name": name}} for name, tid in TRACKS.items()]
        doc = {"traceEvents": meta + self.events, "displayTimeUnit": "ms",
               "otherData": {"dropped_events": self.dropped}}
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        write_text_atomic(path, json.dumps(doc))
        return path
