"""MLPerf result log through mlperf_logging.mllog, and time-to-train the summarizer's way."""
from __future__ import annotations

import itertools
import logging
import os
from typing import Any, Optional

from mlperf_logging.mllog.mllog import MLLogger
from mlperf_logging.mllog import constants

from pinchpoint.telemetry.timeline import Timeline

_ids = itertools.count()
C = constants


class MLPerfLog:
    """One run's MLPerf log file (appended to on resume). Events are mirrored on the timeline."""

    def __init__(self, path: str, timeline: Optional[Timeline] = None, append: bool = False):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self.logger = logging.getLogger(f"pinchpoint.mllog.{os.getpid()}.{next(_ids)}")
        self.logger.propagate = False
        self.logger.setLevel(logging.INFO)
        self.handler = logging.FileHandler(path, mode="a" if append else "w")
        self.logger.addHandler(self.handler)
        self.mll = MLLogger(logger=self.logger, default_stack_offset=2)
        self.timeline = timeline

    def _mirror(self, kind: str, key: str, value: Any, metadata: Optional[dict]) -> None:
        if self.timeline is not None:
            args = {"value": value, **(metadata or {})}
            self.timeline.instant(f"{key}" if kind == "event" else f"{key} ({kind})", "mlperf",
                                  args=args)

    def event(self, key: str, value: Any = None, metadata: Optional[dict] = None) -> None:
        self.mll.event(key=key, value=value, metadata=metadata)
        self._mirror("event", key, value, metadata)

    def start(self, key: str, value: Any = None, metadata: Optional[dict] = None) -> None:
        self.mll.start(key=key, value=value, metadata=metadata)
        self._mirror("start", key, value, metadata)

    def end(self, key: str, value: Any = None, metadata: Optional[dict] = None) -> None:
        self.mll.end(key=key, value=value, metadata=metadata)
        self._mirror("end", key, value, metadata)

    def size(self) -> int:
        self.handler.flush()
        return os.path.getsize(self.path)

    def close(self) -> None:
        self.handler.flush()
        self.handler.close()
        self.logger.removeHandler(self.handler)


def time_to_train_s(path: str, ruleset: str = "6.0.0") -> float:
    """run_stop - run_start in seconds, computed by mlperf-logging's own result summarizer code."""
    from mlperf_logging.compliance_checker.mlp_parser import parse_file
    from mlperf_logging.result_summarizer import result_summarizer

    loglines, _ = parse_file(path, ruleset=ruleset)
    return result_summarizer._query_mlperf_strong_scaling_score(loglines) * 60.0


def compliance_check(path: str, ruleset: str = "6.0.0") -> tuple[bool, str]:
    """Run the official compliance checker in a subprocess; (passed, output)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "mlperf_logging.compliance_checker", "--usage",
                           "training", "--ruleset", ruleset, path], capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    return proc.returncode == 0 and "SUCCESS" in output, output
