"""What Slurm says about submitted jobs: state per array task and the history of its attempts.

sacct (accounting) is the source: it knows finished, cancelled and requeued jobs. Without
accounting (sacct fails) squeue says which jobs are still queued or running, and a job that left
the queue is judged by its submitit result file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable, Optional

from pinchpoint.cluster.commands import slurm_output

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
            "BOOT_FAIL", "DEADLINE", "PREEMPTED", "REVOKED"}
GONE = "GONE"   # not in squeue and no accounting to ask


@dataclass
class Attempt:
    state: str
    submit: Optional[datetime]
    start: Optional[datetime]
    end: Optional[datetime]
    nodes: str = ""


@dataclass
class JobHistory:
    """All attempts of one job (requeues keep the job id), oldest first."""
    job_id: str
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def state(self) -> str:
        return self.attempts[-1].state if self.attempts else "UNKNOWN"

    @property
    def requeues(self) -> int:
        return sum(a.state in ("REQUEUED", "PREEMPTED", "NODE_FAIL") for a in self.attempts[:-1])

    def queue_wait_s(self) -> Optional[float]:
        """Submission to the first start (what the scheduler added before any work began)."""
        a = self.attempts[0] if self.attempts else None
        return _seconds(a.submit, a.start) if a else None

    def requeue_to_start_s(self) -> list[float]:
        """For each requeue: end of the interrupted attempt to the start of the next one."""
        pairs = zip(self.attempts, self.attempts[1:])
        return [s for a, b in pairs if (s := _seconds(a.end, b.start)) is not None]

    def wall_time_s(self) -> Optional[float]:
        """First start to last end: work, requeue waits and restarts together."""
        if not self.attempts:
            return None
        return _seconds(self.attempts[0].start, self.attempts[-1].end)


def expand_hostlist(text: str) -> list[str]:
    """Slurm's compressed node list as names: 'node[1-2,5],gpu7' -> node1 node2 node5 gpu7."""
    names, depth, item = [], 0, ""
    for ch in text + ",":
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            if item:
                names += _expand_one(item)
            item = ""
        else:
            item += ch
    return names


def _expand_one(item: str) -> list[str]:
    if "[" not in item:
        return [item]
    prefix, _, rest = item.partition("[")
    ranges, _, suffix = rest.partition("]")
    out = []
    for part in ranges.split(","):
        lo, _, hi = part.partition("-")
        width = len(lo)
        for i in range(int(lo), int(hi or lo) + 1):
            out += [f"{prefix}{i:0{width}d}{name}" for name in _expand_one(suffix) or [""]]
    return out


def _time(text: str) -> Optional[datetime]:
    try:
        return datetime.fromisoformat(text)
    except ValueError:   # Unknown, None, empty
        return None


def _seconds(a: Optional[datetime], b: Optional[datetime]) -> Optional[float]:
    return (b - a).total_seconds() if a and b else None


def histories(array_ids: Iterable[str]) -> Optional[dict[str, JobHistory]]:
    """{"12_0": JobHistory, ...} for the given array job ids, or None when sacct fails."""
    ids = sorted(set(array_ids))
    if not ids:
        return {}
    # -D: every attempt of a requeued job; -X: allocations only, not steps.
    out = slurm_output(["sacct", "-D", "-X", "-P", "-n", "-j", ",".join(ids),
                "-o", "JobID,State,Submit,Start,End,NodeList"])
    if out is None:
        return None
    found: dict[str, JobHistory] = {}
    for line in out.splitlines():
        job, state, submit, start, end, nodes = (line.split("|") + [""] * 6)[:6]
        if "[" in job:   # a pending range of array tasks (12_[1-3]): not started, nothing to say
            continue
        state = state.split()[0] if state else "UNKNOWN"   # "CANCELLED by 0" -> CANCELLED
        found.setdefault(job, JobHistory(job)).attempts.append(
            Attempt(state, _time(submit), _time(start), _time(end),
                    ",".join(expand_hostlist(nodes)) if nodes not in ("", "None assigned")
                    else nodes))
    return found


def queued(array_ids: Iterable[str]) -> Optional[dict[str, str]]:
    """squeue's view (no accounting): {"12_0": "PENDING"|"RUNNING"|...} for jobs still listed."""
    ids = sorted(set(array_ids))
    out = slurm_output(["squeue", "-h", "-r", "-j", ",".join(ids), "-o", "%i|%T"]) if ids else ""
    if out is None:
        return None
    return dict(line.split("|", 1) for line in out.splitlines() if "|" in line)


def slurm_job_id(env=os.environ) -> Optional[str]:
    """This process's job as sacct names it: ``ARRAY_TASK`` for an array task, else the job id."""
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID") or None


def draw_slurm_job(timeline, env=os.environ) -> bool:
    """In a Slurm job: ask accounting (sacct -D) for the job's attempts and draw them on the
    run's timeline (telemetry/timeline.py's ``Timeline.slurm_job``). False outside Slurm or
    without accounting (the trace then has no job track)."""
    job = slurm_job_id(env)
    if job is None:
        return False
    found = histories([job])
    if not found or job not in found:
        return False
    timeline.slurm_job(found[job])
    return True
