"""hydra-submitit-launcher's Slurm launcher, made to behave like a sweep tool on a real cluster.

Added to the upstream launcher (which builds one job array from ``hydra.launcher.*`` and then
blocks on every result in turn):
- each point's Slurm request comes from its own ``cluster`` config (typed, per point; tasks per
  node from parallel.world_size), and points with equal requests share a job array;
- pre-flight: every point is checked against sinfo before anything is submitted;
- progress: queued/running/requeued/done per point while the sweep runs;
- a job that ends without a result (scancel, node failure, time limit without requeue) is a
  failed point with Slurm's reason instead of a wait that never ends;
- the job's stdout/stderr and Slurm's timings are recorded on the point's MLflow run.
Requeue on time limit/preemption is upstream's: ``checkpoint()`` resubmits the same callable and
the run resumes from its newest checkpoint (runner/session.py).
"""
from __future__ import annotations

import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import DictConfig, open_dict

from pinchpoint.cluster import accounting, preflight
from pinchpoint.cluster.request import SlurmRequest, slurm_request
from pinchpoint.errors import ConfigError
from pinchpoint.sweepers.space import SweepError
from pinchpoint.tracking.naming import point_labels

log = logging.getLogger("pinchpoint.slurm")
HEARTBEAT_S = 30.0


class ClusterRefused(SweepError):
    """A point asks for something the cluster cannot give; nothing was submitted (exit 2)."""
    nothing_launched = True   # the sweeper then discards the sweep's empty MLflow parent


class PointFailed(RuntimeError):
    """A point's Slurm job ended without a result."""


@dataclass
class Point:
    idx: int
    overrides: list[str]
    cfg: DictConfig
    label: str = ""
    request: Optional[SlurmRequest] = None
    job: Any = None
    state: str = "SUBMITTING"
    history: Optional[accounting.JobHistory] = None
    result: Optional[JobReturn] = None
    notes: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.result is not None


class SlurmSweepLauncher(BaseSubmititLauncher):
    _EXECUTOR = "slurm"

    # --- in the Slurm task ---------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:
        from pinchpoint.workloads.registry import setup

        setup()  # resolvers and schemas: the task composes the point's config again
        return super().__call__(*args, **kwargs)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit calls this on a time limit or preemption, then requeues the job and exits:
        mark the process so the run stays RUNNING (status=requeued) between attempts."""
        from pinchpoint.runner.faults import REQUEUED
        os.environ[REQUEUED] = "1"
        return super().checkpoint(*args, **kwargs)

    # --- in the submitting command -------------------------------------------------------------
    def launch(self, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and self.hydra_context is not None
        points = self._points(job_overrides, initial_job_idx)
        self._preflight(points)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        self._submit(points)
        try:
            self._watch(points)
        except KeyboardInterrupt:
            log.warning("interrupted: the submitted jobs keep running and still record to MLflow "
                        "(stop them: scancel %s)",
                        " ".join(p.job.job_id for p in points if not p.done))
            raise
        return [p.result for p in points]

    def _points(self, job_overrides, initial_job_idx: int) -> list[Point]:
        loader = self.hydra_context.config_loader
        points = [Point(initial_job_idx + i, list(o),
                        loader.load_sweep_config(self.config, list(o)))
                  for i, o in enumerate(job_overrides)]
        for p, label in zip(points, point_labels([p.overrides for p in points])):
            p.label = label
        return points

    def _preflight(self, points: list[Point]) -> None:
        """Every point against sinfo, before the first submission."""
        info = None
        for p in points:
            try:
                if p.cfg.cluster.name != "slurm":
                    raise ConfigError("cluster", p.cfg.cluster.name,
                                      "slurm (hydra/launcher=pinchpoint_slurm submits to Slurm)")
                info = info or preflight.read_cluster()
                preflight.check(p.cfg, info)
                name = f"pinchpoint-{p.cfg.tracking.experiment}"
                p.request = slurm_request(p.cfg, name)
            except ConfigError as err:
                raise ClusterRefused(f"point #{p.idx} ({p.label}): {err}\nNothing was submitted."
                                     ) from None

    def _submit(self, points: list[Point]) -> None:
        import submitit

        groups: dict[str, list[Point]] = {}
        for p in points:
            groups.setdefault(p.request.key(), []).append(p)
        for group in groups.values():
            req = group[0].request
            executor = submitit.SlurmExecutor(folder=self.params["submitit_folder"], **req.init)
            executor.update_parameters(**req.params)
            args = [(p.overrides, "hydra.sweep.dir", p.idx, f"job_id_for_{p.idx}",
                     Singleton.get_state()) for p in group]
            jobs = executor.map_array(self, *zip(*args))
            for p, job in zip(group, jobs):
                p.job = job
            log.info("submitted %d point(s) as Slurm array %s (%s)", len(group),
                     jobs[0].job_id.split("_")[0], _describe(req))
        for p in points:
            log.info("  #%d %-40s job %s", p.idx, p.label, p.job.job_id)

    # --- progress ----------------------------------------------------------------------------------
    def _watch(self, points: list[Point]) -> None:
        poll = max(0.5, float(points[0].cfg.cluster.poll_interval_s))
        last_beat = time.time()
        while not all(p.done for p in points):
            ids = [p.job.job_id for p in points if not p.done]
            found = accounting.histories(ids)
            # squeue too when accounting is off, or when a job's attempt ended in a state that
            # Slurm may requeue it from (a node failure): still queued means not over.
            ended = found is None or any(h.state in accounting.TERMINAL for h in found.values())
            queued = accounting.queued(ids) if ended else None
            for p in points:
                if not p.done:
                    self._update(p, found, queued)
            if all(p.done for p in points):
                break
            if time.time() - last_beat >= HEARTBEAT_S:
                last_beat = time.time()
                counts = Counter(p.state for p in points)
                log.info("%d points: %s", len(points),
                         ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())))
            time.sleep(poll)
        failed = [p for p in points if p.result.status != JobStatus.COMPLETED]
        log.info("Slurm: %d of %d point(s) completed%s", len(points) - len(failed), len(points),
                 "; failed: " + ", ".join(f"#{p.idx} ({p.label})" for p in failed)
                 if failed else "")

    def _update(self, p: Point, found, queued) -> None:
        job_id = p.job.job_id
        if found is not None:
            p.history = found.get(job_id, p.history)
            state = p.history.state if p.history else "PENDING"
            if state in accounting.TERMINAL and (queued or {}).get(job_id):
                state = "REQUEUED"   # e.g. NODE_FAIL: Slurm put it back in the queue
        else:   # no accounting: squeue while listed, then the result file decides
            state = (queued or {}).get(job_id) or accounting.GONE
        if state in accounting.TERMINAL or state == accounting.GONE:
            p.result = self._result(p, state)
            p.state = state
            log.info("#%d %s: %s", p.idx, p.label, self._outcome(p))
            self._record(p)
        else:
            h = p.history
            if state == "PENDING" and h and len(h.attempts) > 1:
                state = "REQUEUED"   # the next attempt waits; announce the requeue once
            if state != p.state:
                self._announce(p, state)
                p.state = state

    def _outcome(self, p: Point) -> str:
        took = p.history.wall_time_s() if p.history else None
        done = p.result.status == JobStatus.COMPLETED
        # A point whose result was written completed, whatever came after: a time-limit signal
        # that reaches the job while it exits makes Slurm's accounting say FAILED (or TIMEOUT).
        state = "COMPLETED" if done else p.state
        text = state + (f" after {took:.0f} s" if took is not None else "")
        if p.history and p.history.requeues:
            text += f" ({p.history.requeues} requeue(s))"
        if not done:
            return (f"{text}, point FAILED: {_first_line(p.result._return_value)} "
                    f"(job output: {_task_paths(p)[0].stderr})")
        ttt = p.result.return_value
        text += (f", time_to_train_s {ttt:.1f}" if isinstance(ttt, float) and
                 ttt != float("inf") else ", target not reached (aborted)")
        if p.state != "COMPLETED":
            text += (f" (Slurm's accounting says {p.state}: the job ended badly after its result "
                     "was written, e.g. a time-limit signal while it exited)")
        return text

    def _announce(self, p: Point, state: str) -> None:
        extra, h = "", p.history
        if state == "RUNNING" and h and h.attempts:
            n = len(h.attempts)
            wait = h.queue_wait_s() if n == 1 else (h.requeue_to_start_s() or [None])[-1]
            extra = f" on {h.attempts[-1].nodes}"
            if wait is not None:
                extra += f" ({'queued' if n == 1 else 'requeue to start'} {wait:.0f} s)"
            extra += f", attempt {n}" if n > 1 else ""
        elif state == "REQUEUED":
            why = "a node failed" if h and h.attempts and h.attempts[-1].state == "NODE_FAIL" \
                else "time limit or preemption"
            extra = f" ({why}: resumes from its newest checkpoint)"
        log.info("#%d %s: %s%s", p.idx, p.label, state, extra)

    def _result(self, p: Point, state: str) -> JobReturn:
        """The task's own JobReturn when it wrote one, else a failure naming Slurm's state."""
        if all(paths.result_pickle.exists() for paths in _task_paths(p)):
            try:
                return root_cause(p.job.results())
            except Exception as err:   # the task died with an error submitit recorded
                why = _first_line(err)
                if "timed-out too many times" in why:
                    why = (f"hit its time limit {p.cfg.cluster.max_num_timeout + 1} times "
                           "(raise cluster.time_limit_min or cluster.max_num_timeout)")
                return self._failed(p, f"Slurm job {p.job.job_id} {state}: {why}", err)
        why = {"CANCELLED": "cancelled (scancel or preemption without requeue)",
               "TIMEOUT": "hit its time limit and was not requeued (cluster.max_num_timeout "
                          "used up, or no checkpoint hook ran)",
               accounting.GONE: "left the queue without a result (no accounting to say why)"}
        return self._failed(p, f"Slurm job {p.job.job_id} {why.get(state, state)}")

    def _failed(self, p: Point, message: str, cause: Optional[BaseException] = None) -> JobReturn:
        p.notes.append(message)
        err = PointFailed(f"point #{p.idx} ({p.label}): {message}")
        err.__cause__ = cause
        return JobReturn(overrides=p.overrides, status=JobStatus.FAILED, _return_value=err,
                         task_name=str(p.cfg.hydra.job.name), cfg=p.cfg)

    # --- MLflow --------------------------------------------------------------------------------
    def _record(self, p: Point) -> None:
        t = p.cfg.tracking
        if not t.enabled:
            return
        from pinchpoint.runner.run_key import run_key
        from pinchpoint.tracking.points import find_point_run, record_slurm

        try:
            run_id = self._run_id(p)
            if run_id is None:
                array_id, _, task_id = p.job.job_id.partition("_")
                run = find_point_run(t.uri, t.experiment, run_key(p.cfg), array_id, task_id)
                run_id = run.info.run_id if run is not None else None
            if run_id is None:
                return   # cancelled before it started: nothing in MLflow to close
            h = p.history or accounting.JobHistory(p.job.job_id)
            logs = [str(getattr(paths, kind)) for paths in _task_paths(p)
                    for kind in ("stdout", "stderr")]
            waits = h.requeue_to_start_s()
            metrics = {"slurm_attempts": len(h.attempts) or None,
                       "slurm_requeues": h.requeues if h.attempts else None,
                       "slurm_queue_wait_s": h.queue_wait_s(),
                       "slurm_requeue_to_start_s": sum(waits) / len(waits) if waits else None,
                       "wall_time_s": h.wall_time_s()}
            failure = p.notes[-1] if p.result.status != JobStatus.COMPLETED and p.notes else None
            record_slurm(t.uri, run_id, {"slurm_job": p.job.job_id, "slurm_state": p.state},
                         metrics, logs, failure)
        except Exception as err:   # bookkeeping must not hide the point's own outcome
            log.warning("#%d: could not record Slurm facts in MLflow: %s", p.idx, err)

    def _run_id(self, p: Point) -> Optional[str]:
        """The MLflow run id the point's session wrote into its output folder (sweep_dir/N)."""
        cfg = p.cfg.copy()
        with open_dict(cfg):
            cfg.hydra.job.num = p.idx
        from pinchpoint.tracking.run_record import read_run_id
        return read_run_id(os.path.join(str(self.config.hydra.sweep.dir),
                                        str(cfg.hydra.sweep.subdir)))


# What a rank says when another rank died: a consequence, not the cause.
_PEER_GONE = ("Connection closed by peer", "remote worker crashing", "Connection reset by peer",
              "rank stopped by signal")


def root_cause(results: list) -> JobReturn:
    """Rank 0's JobReturn, unless it failed because another rank died first: then the first
    rank whose own error is not a lost peer (so the sweep names the cause, e.g. rank 2's
    IndexError, rather than rank 0's 'Connection closed by peer')."""
    first = results[0]
    if first.status == JobStatus.COMPLETED:
        return first
    for result in results:
        if result.status != JobStatus.COMPLETED and \
                not any(s in str(result._return_value) for s in _PEER_GONE):
            return result
    return first


def _task_paths(p: Point) -> list:
    """submitit's files (stdout, stderr, result) of every task (rank) of a point's job."""
    from submitit.core.utils import JobPaths

    ranks = p.request.params.get("ntasks_per_node", 1) * p.request.params.get("nodes", 1)
    return [JobPaths(p.job.paths.folder, p.job.job_id, r) for r in range(ranks)]


def _describe(req: SlurmRequest) -> str:
    p = req.params
    parts = [f"partition={p.get('partition', '(default)')}", f"nodes={p.get('nodes')}",
             f"tasks/node={p.get('ntasks_per_node')}", f"cpus/task={p.get('cpus_per_task')}",
             f"time={p.get('time')} min", f"requeues<={req.init['max_num_timeout']}"]
    if p.get("gpus_per_node"):
        parts.append(f"gpus/node={p['gpus_per_node']}")
    return ", ".join(parts)


def _first_line(err: BaseException) -> str:
    lines = [l for l in str(err).splitlines() if l.strip() and not l.startswith("-")]
    return lines[-1][:300] if lines else type(err).__name__
