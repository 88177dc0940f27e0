"""One run on one rank, start to finish: the one place that wires data, model, telemetry,
checkpoints and tracking together (README "Layout"). The lifecycle reads top to bottom in
``run``; tracking, checkpoints, faults and the summary live in their own modules."""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from pinchpoint.parallel.comm_trace import compiled_graphs_note
from pinchpoint.parallel.context import RankContext
from pinchpoint.runner import loop
from pinchpoint.runner.checkpointing import ProgressMarker, Resume, Saver, find_resume, restore
from pinchpoint.runner.faults import REQUEUED, Fault
from pinchpoint.runner.info import JobInfo
from pinchpoint.runner.inputs import build_inputs, build_workload
from pinchpoint.runner.run_key import flatten, resolved_dict, run_key
from pinchpoint.runner.summary import across_ranks, summarize
from pinchpoint.storage import make_tier
from pinchpoint.telemetry import attribution
from pinchpoint.telemetry.mlperf_log import C, MLPerfLog, time_to_train_s
from pinchpoint.telemetry.phases import PhaseTimer
from pinchpoint.telemetry.profiler import StepProfiler
from pinchpoint.telemetry.timeline import Timeline
from pinchpoint.tracking import run_record
from pinchpoint.workloads import spec

log = logging.getLogger(__name__)


class Session:
    def __init__(self, cfg: DictConfig, ctx: RankContext, job: JobInfo):
        self.cfg, self.ctx, self.job = cfg, ctx, job
        self.tier = make_tier(cfg.storage)
        self.key = run_key(cfg)
        self.timeline = Timeline(ctx.rank)
        # telemetry.attribution: events (CUDA), sync (today's, and auto on CPU) or off
        self.attribution, sync, events = attribution.for_run(cfg.telemetry.attribution,
                                                            ctx.device, ctx.synchronize)
        self.phases = PhaseTimer(self.timeline, sync, events)
        self.inputs = build_inputs(cfg, ctx, self.phases, self.tier)
        self.collectives = self.inputs.collectives
        self.workload = build_workload(cfg, self.inputs)
        self.rules = spec(cfg.model.name).rules    # the benchmark's name, eval keys and skip
        self.checkpoints = (self.tier.checkpoint_manager(self.key, cfg.checkpoint.keep)
                            if cfg.checkpoint.interval > 0 else None)
        self.progress_marker = ProgressMarker(self.checkpoints, ctx.is_main)
        self.tracker = None
        self.mlperf_path = os.path.join(job.output_dir, "mlperf.log")
        self.saver: Optional[Saver] = None
        self.summary: Optional[dict] = None
        self.sampler = None
        self.fabric_report: Optional[dict] = None
        # torch.profiler over telemetry.profile_steps, merged into the timeline (rank 0's).
        self.profiler = StepProfiler.for_run(
            self.timeline, cfg.telemetry.profile_steps, ctx.device.type == "cuda") \
            if ctx.is_main else None

    def name(self) -> str:
        """What the run is and what varies, e.g. 'dlrm_dcnv2 nfs ep8 mmap=on bs=512'."""
        from pinchpoint.tracking.sweep_folder import read_swept_keys
        from pinchpoint.tracking.naming import run_name
        overrides = self.job.overrides
        swept = read_swept_keys(self.job.sweep_dir)
        if swept is not None:  # a sweep point: name it by what varies across the sweep
            overrides = [o for o in overrides if o.lstrip("+~").partition("=")[0] in swept]
        return run_name(self.cfg.model.name, self.cfg.storage.name, self.inputs.dims.describe(),
                        self.workload.describe(), overrides)

    # --- the run -------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        resume = find_resume(self.checkpoints, self.tier, self.cfg.checkpoint.get("resume_from"))
        self.attempt = resume.meta["attempt"] + 1 if resume else 0
        self.timeline.attempt = max(self.attempt,
                                    int(os.environ.get("SLURM_RESTART_COUNT") or 0))
        if self.ctx.is_main:  # CPU, memory, disk, network (and GPUs) as timeline counter tracks
            from pinchpoint.telemetry.system_sampler import SystemSampler
            self.sampler = SystemSampler(
                self.timeline, gpu_counters=self.cfg.telemetry.gpu_counters).start()
            if self.cfg.telemetry.nccl_debug and self.ctx.backend != "nccl":
                log.info("telemetry.nccl_debug: this run uses no NCCL communicator (backend %s):"
                         " there is no NCCL log to parse", self.ctx.backend)
        # Data files are found and their headers checked before any MLflow run is opened, so
        # a bad file is refused like a bad config value (no run left behind).
        self.files = self.workload.prepare_data()
        self._open_tracking(resume)
        if resume:
            self._restore_mlperf_log(resume)
        # A resumed run continues its log; any other start (first attempt, or a requeue before
        # the first checkpoint, which trains from scratch) writes a fresh one.
        self.mlperf = MLPerfLog(self.mlperf_path, self.timeline, append=resume is not None) \
            if self.ctx.is_main else _NullLog()
        status, summary = "failed", None
        try:
            summary = self._train(resume)
            status = summary["status"]
            return summary
        except KeyboardInterrupt:
            status = "killed"
            raise
        except SystemExit:   # submitit exits after requeueing the job (runner/faults.py)
            status = "requeued" if os.environ.get(REQUEUED) else "failed"
            raise
        finally:
            self._finish(status, summary)

    def _train(self, resume: Optional[Resume]) -> dict[str, Any]:
        w, m = self.workload, self.mlperf
        files = self._init(resume)
        state = restore(resume, w, self.phases) if resume else loop.LoopState()
        sizes, quality = w.sizes(), w.quality()
        if not resume:
            m.end(C.INIT_STOP)
            m.start(C.RUN_START)
        steps_redone = max(0, self.progress_marker.read() - resume.step) if resume else 0
        self._announce(resume, quality)
        self.phases.begin()
        started = time.perf_counter()
        self._stage(files)
        w.open_data()
        meter = self._fabric_meter()
        # Collectives torch issues itself (FSDP2, TP, pipelining) are counted and carved into
        # the communication phase like the ones workloads issue through the profile.
        with self.collectives.trace_torch_collectives(
                synchronize=self.attribution == "sync") as trace:
            note = compiled_graphs_note(self.cfg.train.compile, self.inputs.dims.tp,
                                        self.inputs.dims.ep)
            if note:
                trace.not_attributed("compiled_graphs", note)
            try:
                state = loop.train(w, self.phases, m, sizes, quality, self._limits(), state,
                                   self._hooks(sizes, quality), self.rules)
            finally:   # the profiled steps' events onto the timeline, outside the clock
                if self.profiler is not None:
                    self.profiler.close()
            self.phases.flush()   # attribution=events: the steps not resolved yet
        m.end(C.RUN_STOP, metadata={"status": state.status})
        self.fabric_report = meter.stop(self.collectives) if meter else None
        summary = summarize(state, quality, self.phases, self.tier.io, self.collectives,
                            self.inputs.measurements, self.saver.writes if self.saver else [],
                            time.perf_counter() - started, self.attempt, steps_redone, resume,
                            self.ctx.world_size)
        summary.update(across_ranks(self.ctx, self.phases.totals))
        summary.update(self._attribution_figures(summary["steps"], trace))
        if self.fabric_report is not None:
            from pinchpoint.cluster.fabric_meter import summary_metrics
            summary.update(summary_metrics(self.fabric_report, summary["steps"]))
        return summary

    def _attribution_figures(self, steps: int, trace) -> dict[str, Any]:
        """compute_s / communication_s / exposed_communication_s per step, per kind
        (telemetry/attribution.py), and what the trace could not attribute."""
        from pinchpoint.parallel.collectives import KINDS
        seconds = {k: s.seconds for (section, k), s in self.collectives.stats.items()
                   if section == "train"}
        out = attribution.run_figures(self.attribution, self.phases.events, self.phases.totals,
                                      seconds, steps, KINDS)
        if trace.unattributed():
            out["collectives_unattributed"] = "; ".join(
                f"{what}: {why}" for what, why in trace.unattributed().items())
            self.timeline.metadata["collectives_unattributed"] = trace.unattributed()
        return out

    def _fabric_meter(self):
        """A run across nodes reads its node links' counters over the loop (every rank: the
        first of each node reads, all join the barriers)."""
        from pinchpoint.cluster.fabric_meter import FabricMeter
        if not FabricMeter.wanted(self.ctx):
            return None
        from pinchpoint.cluster.fabric import inter_node_interface
        import torch.distributed as dist
        meter = FabricMeter(self.ctx, inter_node_interface(self.cfg.fabric.interface)).start()
        dist.barrier()   # every node's first reading before any rank's first collective
        return meter

    def _init(self, resume: Optional[Resume]) -> None:
        """Data on the tier, cache cleared, MLPerf init events, model built (outside the clock)."""
        w, m = self.workload, self.mlperf
        files = self.files
        cache_method = self.tier.clear_cache(files) if self.ctx.is_main else "none"
        if not resume:
            m.event(C.CACHE_CLEAR, value=True, metadata={"method": cache_method})
            m.start(C.INIT_START)
            self._log_submission_and_hyperparameters()
        w.build()
        return files

    def _stage(self, files: list[str]) -> None:
        """The object tier fetches the dataset through S3 now, inside the clock (MLPerf: data is
        first touched after run_start), so it lands in the first step's data_wait; a file tier
        reads in place."""
        if self.ctx.is_main:
            started = time.perf_counter()
            charge = self.tier.stage(files)
            if charge.nbytes:
                self.timeline.span("stage dataset", "io", started, time.perf_counter(),
                                   {"bytes": charge.nbytes})
        if self.ctx.distributed:
            import torch.distributed as dist
            dist.barrier()

    def _limits(self) -> loop.LoopLimits:
        t = self.cfg.train
        return loop.LoopLimits(t.max_epochs, t.evals_per_epoch, t.max_steps,
                               self.cfg.checkpoint.interval)

    def _hooks(self, sizes, quality) -> loop.LoopHooks:
        progress = loop.Progress(self.cfg.train.progress_every_s,
                                 self._limits().total_steps(sizes), sizes.global_batch_size,
                                 quality.metric, quality.target)
        if self.checkpoints is not None:
            self.saver = Saver(self.checkpoints, self.workload, self.ctx.is_main,
                               self._checkpoint_meta)
        fault = Fault(self.cfg.get("fault"), self.ctx, self.job.output_dir)

        def on_step(state: loop.LoopState) -> None:
            if self.profiler is not None:
                self.profiler.after_step(state.step)
            progress(state)
            self.progress_marker.write(state.step)
            fault.check(state.step)

        def on_eval(state: loop.LoopState, value: float, train_loss: float) -> None:
            progress.quality = value
            if self.tracker is not None:
                self.tracker.log_metrics({f"eval_{quality.metric}": value,
                                          "train_loss": train_loss,
                                          "epoch_fraction": state.samples / sizes.train_samples},
                                         step=state.step)

        return loop.LoopHooks(on_eval=on_eval, on_step=on_step,
                              before_step=self.profiler.before_step if self.profiler else
                              (lambda step: None),
                              save_checkpoint=self._timed_save if self.saver else None,
                              evaluating=self.collectives.evaluating)

    def _timed_save(self, state: loop.LoopState) -> None:
        started = time.perf_counter()
        with self.collectives.uncounted():   # DCP's plan exchange belongs to the checkpoint
            write = self.saver(state)
        if write is not None:
            self.timeline.span(f"checkpoint step {state.step}", "checkpoint", started,
                               time.perf_counter(), {"bytes": write.nbytes})
            if os.environ.get("SLURM_JOB_ID"):
                # A Slurm job may be killed and requeued (a node dies, a preemption without
                # warning): the attempt's trace so far is kept beside its checkpoint, so the
                # next attempt's timeline still shows it (part of the checkpoint phase).
                self.timeline.write(os.path.join(self.job.output_dir, "timeline.json"))

    def _checkpoint_meta(self) -> dict[str, Any]:
        return {"attempt": self.attempt, "phase_totals": dict(self.phases.totals),
                "step_times": list(self.phases.step_times),
                "mlflow_run_id": self.tracker.run_id if self.tracker else None,
                "mlperf_log": os.path.abspath(self.mlperf_path),
                "mlperf_log_bytes": self.mlperf.size()}

    def _announce(self, resume: Optional[Resume], quality) -> None:
        if self.ctx.distributed:
            log.info("layout %s on %d rank(s), %s", self.inputs.dims.describe(),
                     self.ctx.world_size, self.inputs.dims.layout().describe())
        where = f" from step {resume.step} of {resume.source.where}" if resume else ""
        log.info("%s run %s%s: %s, target %s %s %.5f%s", "resuming" if resume else "starting",
                 self.key, where, self.name(), quality.metric,
                 ">=" if quality.higher_is_better else "<=", quality.target,
                 f" (best reachable {quality.best_reachable:.5f})"
                 if quality.best_reachable is not None else "")

    def _log_submission_and_hyperparameters(self) -> None:
        import socket
        m, p = self.mlperf, self.cfg.mlperf
        m.event(C.SUBMISSION_BENCHMARK, value=self.rules.benchmark)
        m.event(C.SUBMISSION_ORG, value=p.submission_org)
        m.event(C.SUBMISSION_DIVISION, value=p.submission_division)
        m.event(C.SUBMISSION_STATUS, value="research")
        m.event(C.SUBMISSION_PLATFORM, value=p.submission_platform or socket.gethostname())
        m.event(C.SEED, value=self.cfg.seed)
        for key, value in self.workload.mlperf_hyperparameters().items():
            m.event(key, value=value)

    # --- tracking ------------------------------------------------------------------------------
    def _open_tracking(self, resume: Optional[Resume]) -> None:
        t = self.cfg.tracking
        if not (self.ctx.is_main and t.enabled):
            return
        continuing = resume.meta.get("mlflow_run_id") if resume and not resume.imported \
            else run_record.requeued_run_id(self.job.output_dir)
        tags = run_record.environment_tags(self.job, self.ctx, self.tier.describe(), self.key)
        tags.update(run_record.cluster_tags(self.ctx, self.inputs.dims, self.cfg.fabric))
        if resume and resume.imported:
            tags["resumed_from"] = f"{resume.source.where}@step{resume.step}"
        self.tracker = run_record.open_run(t, self.job, self.name(), tags,
                                           flatten(resolved_dict(self.cfg)), continuing)
        # Each attempt's nodes (a requeue after a node failure runs on others); the run's
        # node_list is the latest attempt's.
        where = {k: tags[k] for k in ("nodes", "node_list", "host") if k in tags}
        self.tracker.set_tags({**where, f"node_list_attempt_{self.attempt}": tags["node_list"]})

    # --- resume ----------------------------------------------------------------------------------
    def _restore_mlperf_log(self, resume: Resume) -> None:
        """Continue the first attempt's MLPerf log, cut back to the checkpoint: events after it
        are redone by this attempt, so the log reads as one run that paused."""
        if not self.ctx.is_main:
            return
        previous = resume.meta.get("mlperf_log")
        if not previous or not os.path.exists(previous):
            log.warning("previous MLPerf log %s is gone; this attempt's log starts empty",
                        previous)
            return
        os.makedirs(os.path.dirname(self.mlperf_path), exist_ok=True)
        with open(previous, "rb") as src, open(self.mlperf_path + ".tmp", "wb") as dst:
            dst.write(src.read(resume.meta["mlperf_log_bytes"]))
        os.replace(self.mlperf_path + ".tmp", self.mlperf_path)

    # --- results ---------------------------------------------------------------------------------
    def _finish(self, status: str, summary: Optional[dict[str, Any]]) -> None:
        self.workload.close()
        if not self.ctx.is_main:
            return
        self.mlperf.close()
        out = self.job.output_dir
        from pinchpoint.cluster.accounting import draw_slurm_job
        system = self.sampler.stop() if self.sampler is not None else {}
        draw_slurm_job(self.timeline)   # the job's life from accounting; nothing outside Slurm
        if self.fabric_report is not None:   # every node link's counters, on the same clock
            from pinchpoint.cluster.fabric_meter import draw
            draw(self.fabric_report, self.timeline)
        nccl_params, nccl_file = self._nccl_log()
        artifacts = [self.timeline.write(os.path.join(out, "timeline.json")), self.mlperf_path,
                     _write_yaml(os.path.join(out, "config_resolved.yaml"), resolved_dict(self.cfg))]
        if summary is not None:
            # MLPerf time-to-train: run_stop - run_start of the (possibly resumed) log, computed
            # by mlperf-logging's summarizer. A restarted run's clock includes the downtime.
            summary["time_to_train_s"] = time_to_train_s(self.mlperf_path, self.cfg.mlperf.ruleset)
            summary["success"] = 1.0 if status == "success" else 0.0
            summary.update(system)
            artifacts.append(_write_json(os.path.join(out, "phase_summary.json"), summary))
            self.summary = summary
        if nccl_file:
            artifacts.append(nccl_file)
        if self.tracker is not None:
            if self.fabric_report is not None:
                run_record.log_fabric_series(self.tracker, self.fabric_report)
            if nccl_params:
                self.tracker.log_params(nccl_params)
            plots = []
            if summary is not None:   # the loop's phases as one stacked bar, beside the run
                from pinchpoint.analysis.plots import phase_chart
                plots = [p for p in [phase_chart(summary, self.name(), out)] if p]
            run_record.close_run(self.tracker, status, summary, self.name(), artifacts, plots)
        if self.checkpoints is not None and status in ("success", "aborted"):
            self.checkpoints.clear()  # the point is complete: a rerun of it starts afresh

    def _nccl_log(self) -> tuple[dict[str, str], Optional[str]]:
        """telemetry.nccl_debug: rank 0's NCCL log (every communicator it created, by the run's
        end) as ``nccl.*`` params and on the timeline at the process group's start (the world
        communicator's init ran inside it; NCCL's lines carry no time). Every rank's file stays
        in <output>/nccl/ (runner/ranks.py set NCCL_DEBUG_FILE before the group formed)."""
        if not self.cfg.telemetry.nccl_debug or self.ctx.backend != "nccl":
            return {}, None
        from pinchpoint.telemetry import nccl_log
        path = nccl_log.rank_log(nccl_log.log_dir(self.job.output_dir), self.ctx.rank)
        if path is None:
            log.warning("telemetry.nccl_debug: NCCL wrote no log for rank %d under %s",
                        self.ctx.rank, nccl_log.log_dir(self.job.output_dir))
            return {}, None
        parsed = nccl_log.parse_file(path)
        parsed.draw(self.timeline, self.timeline.origin)
        return parsed.params(), path


def _write_json(path: str, data: dict) -> str:
    import json
    with open(path, "w") as f:
        json.dump(data, f, indent=1, default=str)
    return path


def _write_yaml(path: str, data: dict) -> str:
    with open(path, "w") as f:
        f.write(OmegaConf.to_yaml(OmegaConf.create(data)))
    return path


class _NullLog:
    """Non-zero ranks log nothing (only rank 0 writes the MLPerf log)."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: 0
