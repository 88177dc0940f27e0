"""One run on one rank, start to finish: the single place that wires data, model, parallelism,
telemetry, checkpoints and tracking together (DESIGN.md section 4)."""
from __future__ import annotations

import logging
import os
import platform
import socket
import time
from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from pinchpoint.parallel.context import RankContext
from pinchpoint.parallel.collectives import CollectiveProfile
from pinchpoint.runner import loop
from pinchpoint.runner.info import JobInfo
from pinchpoint.runner.run_key import flatten, resolved_dict, run_key
from pinchpoint.storage.checkpoint import CheckpointManager
from pinchpoint.storage.tier import StorageTier
from pinchpoint.telemetry.mlperf_log import C, MLPerfLog, time_to_train_s
from pinchpoint.telemetry.phases import PhaseTimer
from pinchpoint.telemetry.timeline import Timeline
from pinchpoint.workloads import workload_class
from pinchpoint.workloads.base import RunInputs, Workload

log = logging.getLogger(__name__)


@dataclass
class Resume:
    step: int
    state: dict
    load_seconds: float
    load_bytes: int = 0
    source: Optional[CheckpointManager] = None
    imported: bool = False     # from another run (checkpoint.resume_from): a new MLflow run


class Session:
    def __init__(self, cfg: DictConfig, ctx: RankContext, job: JobInfo):
        self.cfg, self.ctx, self.job = cfg, ctx, job
        self.tier = StorageTier.from_config(cfg.storage)
        self.key = run_key(cfg)
        self.timeline = Timeline(ctx.rank)
        self.phases = PhaseTimer(self.timeline, ctx.synchronize)
        self.collectives = CollectiveProfile(self.phases)
        self.inputs = RunInputs(collectives=self.collectives, model=OmegaConf.to_object(cfg.model),
                                dataset=OmegaConf.to_object(cfg.dataset),
                                parallel=OmegaConf.to_object(cfg.parallel), seed=cfg.seed,
                                ctx=ctx, tier=self.tier, phases=self.phases)
        self.workload: Workload = workload_class(cfg.model.name)(self.inputs)
        self.checkpoints = (CheckpointManager(self.tier, self.key, cfg.checkpoint.keep)
                            if cfg.checkpoint.interval > 0 else None)
        self.tracker = self._make_tracker()
        self.mlperf_path = os.path.join(job.output_dir, "mlperf.log")
        self.checkpoint_writes: list = []

    # --- wiring ------------------------------------------------------------------------------
    def _make_tracker(self):
        t = self.cfg.tracking
        if not (self.ctx.is_main and t.enabled):
            return None
        from pinchpoint.tracking.mlflow_run import RunTracker
        return RunTracker(t.uri, t.artifact_root, t.experiment, t.system_metrics,
                          t.system_metrics_interval_s)

    def _run_name(self) -> str:
        from pinchpoint.tracking.hydra_callback import read_swept_keys
        from pinchpoint.tracking.naming import run_name
        d = self.cfg.dataset
        overrides = self.job.overrides
        swept = read_swept_keys(self.job.sweep_dir)
        if swept is not None:  # a sweep point: name it by what varies across the sweep
            overrides = [o for o in overrides if o.lstrip("+~").partition("=")[0] in swept]
        return run_name(self.cfg.model.name, self.cfg.storage.name, self.cfg.parallel.name,
                        d.get("mmap"), d.get("batch_size"), overrides)

    def _tags(self) -> dict[str, Any]:
        import mlflow
        import torch

        import pinchpoint
        tags = {"pinchpoint.run_key": self.key, "pinchpoint.kind": "point",
                "host": socket.gethostname(), "git_sha": _git_sha(),
                "pinchpoint_version": pinchpoint.__version__, "torch_version": torch.__version__,
                "mlflow_version": mlflow.__version__, "python_version": platform.python_version(),
                "device": str(self.ctx.device), "world_size": self.ctx.world_size,
                "launcher": self.ctx.launcher, "output_dir": os.path.abspath(self.job.output_dir),
                "overrides": " ".join(self.job.overrides),
                **{f"choice.{k}": v for k, v in self.job.choices.items()
                   if not k.startswith("hydra")}}
        tags.update({k: str(v).lower() if isinstance(v, bool) else v
                     for k, v in self.tier.describe().items()})
        tags.update({k.lower(): v for k, v in os.environ.items()
                     if k in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID",
                              "SLURM_JOB_NODELIST", "SLURM_JOB_PARTITION")})
        return tags

    def _requeued_run_id(self) -> Optional[str]:
        """A Slurm job requeued before its first checkpoint: continue the MLflow run its earlier
        attempt opened (training restarts from step 0; metric steps already logged are skipped)."""
        path = os.path.join(self.job.output_dir, "mlflow_run_id")
        if int(os.environ.get("SLURM_RESTART_COUNT") or 0) < 1 or not os.path.exists(path):
            return None
        with open(path) as f:
            return f.read().strip() or None

    def _find_resume(self) -> Optional[Resume]:
        """This run's newest valid checkpoint; else, when asked, another run's
        (checkpoint.resume_from). Every rank reads the same files on the tier."""
        own = self.checkpoints.load_latest() if self.checkpoints is not None else None
        if own is not None:
            return Resume(*own, source=self.checkpoints)
        where = self.cfg.checkpoint.get("resume_from")
        if not where:
            return None
        source = CheckpointManager.source(self.tier, where)
        found = source.load_latest()
        if found is None:
            from pinchpoint.config import ConfigError
            raise ConfigError("checkpoint.resume_from", where,
                              f"a run key or folder holding a valid checkpoint ({source.dir} "
                              "has none)")
        return Resume(*found, source=source, imported=True)

    # --- the run -------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        from pinchpoint.tracking.hydra_callback import parent_run_id

        resume = self._find_resume()
        if self.tracker is not None:
            continuing = resume.state["mlflow_run_id"] if resume and not resume.imported \
                else self._requeued_run_id()
            tags = self._tags()
            if resume and resume.imported:
                tags["resumed_from"] = f"{resume.source.dir}@step{resume.step}"
            self.tracker.start(self._run_name(), tags, parent_run_id(self.job.sweep_dir),
                               continuing)
            self.tracker.log_params(flatten(resolved_dict(self.cfg)))
            with open(os.path.join(self.job.output_dir, "mlflow_run_id"), "w") as f:
                f.write(self.tracker.run_id)
        if resume:
            self._restore_mlperf_log(resume)
        # A resumed run continues its log; any other start (first attempt, or a requeue before
        # the first checkpoint, which trains from scratch) writes a fresh one.
        self.mlperf = MLPerfLog(self.mlperf_path, self.timeline, append=resume is not None) \
            if self.ctx.is_main else _NullLog()
        status, summary = "failed", None
        try:
            summary = self._run(resume)
            status = summary["status"]
            return summary
        except KeyboardInterrupt:
            status = "killed"
            raise
        finally:
            self._finish(status, summary)

    def _run(self, resume: Optional[Resume]) -> dict[str, Any]:
        cfg, w, m = self.cfg, self.workload, self.mlperf
        files = w.prepare_data()
        cache_method = self.tier.clear_cache(files) if self.ctx.is_main else "none"
        if not resume:
            m.event(C.CACHE_CLEAR, value=True, metadata={"method": cache_method})
            m.start(C.INIT_START)
            self._log_submission_and_hyperparameters()
        w.build()
        state = loop.LoopState()
        if resume:
            w.load_state_dict(resume.state["workload"])
            if resume.state.get("sharded"):  # every rank loads its shards (any layout)
                from pinchpoint.storage import distributed_checkpoint as dcp_io
                template = w.distributed_state_dict()
                read = dcp_io.load(template, resume.source.sharded_path(resume.step))
                w.load_distributed_state_dict(template)
                resume.load_seconds += read.seconds
                resume.load_bytes = read.nbytes
            loop.set_rng_state(resume.state["rng"])
            state = loop.LoopState(**resume.state["loop"])
            self.phases.totals.update(resume.state["phase_totals"])
            self.phases.step_times = list(resume.state.get("step_times", []))
        sizes, quality = w.sizes(), w.quality()
        if not resume:
            m.end(C.INIT_STOP)
            m.start(C.RUN_START)
        attempt = (resume.state["attempt"] + 1) if resume else 0
        steps_redone = 0
        if resume:  # work lost = steps reached before the interruption - checkpointed step
            reached = max(self._progress_marker(), self.tracker.step_floor if self.tracker
                          else -1)
            steps_redone = max(0, reached - resume.step)
        log.info("%s run %s: %s, target %s %s %.5f%s", "resuming" if resume else "starting",
                 self.key, self._run_name(), quality.metric,
                 ">=" if quality.higher_is_better else "<=", quality.target,
                 f" (best reachable {quality.best_reachable:.5f})"
                 if quality.best_reachable is not None else "")
        self.phases.begin()
        loop_started = time.perf_counter()
        w.open_data()
        limits = loop.LoopLimits(cfg.train.max_epochs, cfg.train.evals_per_epoch,
                                 cfg.train.max_steps, cfg.checkpoint.interval)
        progress = loop.Progress(cfg.train.progress_every_s, limits.total_steps(sizes),
                                 sizes.global_batch_size, quality.metric, quality.target)
        hooks = loop.LoopHooks(on_eval=self._on_eval_hook(progress),
                               save_checkpoint=self._save_hook(attempt) if self.checkpoints
                               else None, on_step=self._step_hook(progress))
        state = loop.train(w, self.phases, m, sizes, quality, limits, state, hooks)
        m.end(C.RUN_STOP, metadata={"status": state.status})
        loop_seconds = time.perf_counter() - loop_started
        summary = self._summarize(state, sizes, quality, loop_seconds, attempt, steps_redone,
                                  resume)
        summary.update(self._across_ranks())
        return summary

    def _across_ranks(self) -> dict[str, float]:
        """min/mean/max over ranks of the phases that differ between ranks (rank 0 reports)."""
        if not self.ctx.distributed:
            return {}
        import torch.distributed as dist
        totals: list = [None] * self.ctx.world_size
        dist.all_gather_object(totals, dict(self.phases.totals))
        out = {}
        for phase in ("data_wait", "communication", "forward_backward"):
            values = [t[phase] for t in totals]
            out.update({f"{phase}_s_min": min(values), f"{phase}_s_max": max(values),
                        f"{phase}_s_mean": sum(values) / len(values)})
        return out

    def _log_submission_and_hyperparameters(self) -> None:
        m, p = self.mlperf, self.cfg.mlperf
        m.event(C.SUBMISSION_BENCHMARK, value=self.workload.mlperf_benchmark)
        m.event(C.SUBMISSION_ORG, value=p.submission_org)
        m.event(C.SUBMISSION_DIVISION, value=p.submission_division)
        m.event(C.SUBMISSION_STATUS, value="research")
        m.event(C.SUBMISSION_PLATFORM, value=p.submission_platform or socket.gethostname())
        m.event(C.SEED, value=self.cfg.seed)
        for key, value in self.workload.mlperf_hyperparameters().items():
            m.event(key, value=value)

    # --- hooks -------------------------------------------------------------------------------
    def _on_eval_hook(self, progress: loop.Progress):
        def on_eval(state: loop.LoopState, value: float, train_loss: float) -> None:
            progress.quality = value
            if self.tracker is not None:
                self.tracker.log_metrics({f"eval_{self.workload.quality().metric}": value,
                                          "train_loss": train_loss,
                                          "epoch_fraction": state.samples /
                                          self.workload.sizes().train_samples}, step=state.step)
        return on_eval

    def _step_hook(self, progress: loop.Progress):
        # Test hook: fault=raise_at_step:N raises on the last rank (so a failure must travel to
        # rank 0 and the launcher to be seen).
        fault = self.cfg.get("fault") or ""
        kind, _, at = fault.partition(":")
        faulty = kind == "raise_at_step" and self.ctx.rank == self.ctx.world_size - 1

        marker = {"last": 0.0}

        def on_step(state: loop.LoopState) -> None:
            progress(state)
            now = time.perf_counter()
            if self.checkpoints is not None and self.ctx.is_main and now - marker["last"] > 0.5:
                marker["last"] = now  # how far we got, for steps_redone after a crash
                self._write_progress_marker(state.step)
            if faulty and state.step == int(at):
                raise RuntimeError(f"injected fault on rank {self.ctx.rank} at step "
                                   f"{state.step} (fault={fault})")
        return on_step

    def _progress_path(self) -> str:
        return os.path.join(self.checkpoints.dir, "progress.json")

    def _write_progress_marker(self, step: int) -> None:
        import json
        os.makedirs(self.checkpoints.dir, exist_ok=True)
        tmp = self._progress_path() + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"step": step}, f)
        os.replace(tmp, self._progress_path())

    def _progress_marker(self) -> int:
        import json
        try:
            with open(self._progress_path()) as f:
                return int(json.load(f)["step"])
        except (OSError, ValueError, KeyError):
            return -1

    def _save_hook(self, attempt: int):
        def save(state: loop.LoopState) -> None:
            started = time.perf_counter()
            workload_state = self.workload.state_dict()  # every rank: it may gather shards
            sharded, shards = self.workload.distributed_state_dict(), None
            if sharded is not None:  # every rank writes its own shards through DCP
                from pinchpoint.storage import distributed_checkpoint as dcp_io
                shards = dcp_io.save(sharded, self.checkpoints.sharded_path(state.step),
                                     self.ctx.is_main)
            if not self.ctx.is_main:
                return
            import torch
            self.timeline.instant("checkpoint_start", "checkpoint")
            payload = {"workload": workload_state, "rng": loop.rng_state(),
                       "loop": state.to_dict(), "phase_totals": dict(self.phases.totals),
                       "step_times": list(self.phases.step_times), "attempt": attempt,
                       "mlflow_run_id": self.tracker.run_id if self.tracker else None,
                       "mlperf_log": os.path.abspath(self.mlperf_path),
                       "mlperf_log_bytes": self.mlperf.size(),
                       "torch_version": torch.__version__, "sharded": shards is not None}
            write = self.checkpoints.save(payload, state.step)
            if shards is not None:  # one write = shards + the rank-0 file, timed from the start
                write.nbytes += shards.nbytes
                write.seconds = time.perf_counter() - started
            self.checkpoint_writes.append(write)
            self.timeline.span(f"checkpoint step {state.step}", "checkpoint", started,
                               time.perf_counter(), {"bytes": write.nbytes})
        return save

    # --- resume ----------------------------------------------------------------------------------
    def _restore_mlperf_log(self, resume: Resume) -> None:
        """Continue the first attempt's MLPerf log, cut back to the checkpoint: events after it
        are redone by this attempt, so the log reads as one run that paused."""
        previous = resume.state.get("mlperf_log")
        if not previous or not os.path.exists(previous):
            log.warning("previous MLPerf log %s is gone; this attempt's log starts empty",
                        previous)
            return
        os.makedirs(os.path.dirname(self.mlperf_path), exist_ok=True)
        with open(previous, "rb") as src, open(self.mlperf_path + ".tmp", "wb") as dst:
            dst.write(src.read(resume.state["mlperf_log_bytes"]))
        os.replace(self.mlperf_path + ".tmp", self.mlperf_path)

    # --- results ---------------------------------------------------------------------------------
    def _summarize(self, state, sizes, quality, loop_seconds, attempt, steps_redone,
                   resume) -> dict[str, Any]:
        p, io = self.phases, self.tier.io
        summary: dict[str, Any] = {
            "status": state.status, "steps": state.step, "samples": state.samples,
            "samples_to_target": state.samples_to_target,
            "quality_metric": quality.metric, "quality_target": quality.target,
            "quality_best_reachable": quality.best_reachable,
            "final_quality": state.evals[-1][1] if state.evals else None,
            "throughput_samples_per_s": state.samples / max(p.loop_seconds(), 1e-9),
            "train_loop_seconds": p.loop_seconds(), "attempt_seconds": loop_seconds,
            "bottleneck": p.bottleneck(), "restarts": attempt, "steps_redone": steps_redone,
            "checkpoint_load_seconds": resume.load_seconds if resume else 0.0,
            "checkpoint_load_bytes": resume.load_bytes if resume else 0,
            **{f"phase_{k}_s": v for k, v in p.totals.items()},
            **{f"{k}_fraction": v for k, v in p.fractions().items()},
            **p.percentiles(),
            "data_bytes_read": io.read_bytes, "data_read_requests": io.read_requests,
            "data_read_mb_per_s": io.read_bytes / 1e6 / max(io.read_seconds, 1e-9),
            "storage_emulated_delay_s": io.emulated_delay_seconds,
            "checkpoint_writes": len(self.checkpoint_writes),
            "checkpoint_write_bytes": sum(w.nbytes for w in self.checkpoint_writes),
            "checkpoint_write_seconds": sum(w.seconds for w in self.checkpoint_writes),
            **{k: v for k, v in self.inputs.measurements.items()},
            **self.collectives.per_step(max(state.step - (resume.step if resume else 0), 1)),
            "world_size": self.ctx.world_size,
        }
        return summary

    def _finish(self, status: str, summary: Optional[dict[str, Any]]) -> None:
        self.workload.close()
        if not self.ctx.is_main:
            return
        self.mlperf.close()
        out = self.job.output_dir
        artifacts = [self.timeline.write(os.path.join(out, "timeline.json")), self.mlperf_path,
                     _write_yaml(os.path.join(out, "config_resolved.yaml"), resolved_dict(self.cfg))]
        if summary is not None:
            # MLPerf time-to-train: run_stop - run_start of the (possibly resumed) log, computed
            # by mlperf-logging's summarizer. A restarted run's clock includes the downtime.
            summary["time_to_train_s"] = time_to_train_s(self.mlperf_path, self.cfg.mlperf.ruleset)
            summary["success"] = 1.0 if status == "success" else 0.0
            artifacts.append(_write_json(os.path.join(out, "phase_summary.json"), summary))
            self.summary = summary
        if self.tracker is not None:
            self._record(status, summary, artifacts)
        if self.checkpoints is not None and status in ("success", "aborted"):
            self.checkpoints.clear()  # the point is complete: a rerun of it starts afresh

    def _record(self, status: str, summary: Optional[dict], artifacts: list[str]) -> None:
        t = self.tracker
        tags = {"status": status}
        if summary is not None:
            t.log_metrics({k: v for k, v in summary.items()
                           if isinstance(v, (int, float)) and not isinstance(v, bool)})
            tags.update(bottleneck=summary["bottleneck"], quality_metric=summary["quality_metric"])
            tags["mlflow.note.content"] = _note(self._run_name(), summary)
        t.set_tags(tags)
        for path in artifacts:
            t.log_artifact(path)
        t.end(status)


def _note(name: str, s: dict) -> str:
    rows = [("status", s["status"]), ("time_to_train_s", f"{s['time_to_train_s']:.2f}"),
            ("bottleneck", s["bottleneck"]),
            ("throughput (samples/s)", f"{s['throughput_samples_per_s']:.0f}"),
            (f"final {s['quality_metric']}", s["final_quality"]),
            (f"target {s['quality_metric']}", s["quality_target"])]
    rows += [(k.removesuffix("_fraction"), f"{v:.1%}") for k, v in s.items()
             if k.endswith("_fraction") and k != "epoch_fraction"]
    return f"**{name}**\n\n| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def _write_json(path: str, data: dict) -> str:
    import json
    with open(path, "w") as f:
        json.dump(data, f, indent=1, default=str)
    return path


def _write_yaml(path: str, data: dict) -> str:
    with open(path, "w") as f:
        f.write(OmegaConf.to_yaml(OmegaConf.create(data)))
    return path


def _git_sha() -> str:
    import subprocess
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                              text=True, timeout=5).stdout.strip() or "unknown"
    except Exception:
        return "unknown"


class _NullLog:
    """Non-zero ranks log nothing (only rank 0 writes the MLPerf log)."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: 0
