"""Where a run's ranks come from: four interchangeable rank sources, one interface.

    InProcess   world_size 1: this process is the only rank.
    Spawn       plain ``python train.py parallel=ep8``: spawn the ranks locally with torch's
                elastic launch API (the engine behind torchrun): it propagates a failing rank's
                traceback, tears the other ranks down, and leaves no orphans.
    Submitit    under hydra-submitit-launcher (local or Slurm, tasks_per_node = ranks): adopt
                the tasks submitit started; never spawn again.
    Torchrun    under torchrun: adopt its environment.

Each runs ``body(cfg, ctx, job)`` on every rank and returns rank 0's result. The body is the
runner's session for a run, or a test's function (tests/harness.py) — same spawning either way.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import uuid
from abc import ABC, abstractmethod
from typing import Any, Callable, Optional

from omegaconf import DictConfig, OmegaConf

from pinchpoint.errors import ConfigError
from pinchpoint.parallel.context import (RankContext, init_process_group, pick_backend,
                                         pick_device, shutdown)
from pinchpoint.runner.info import JobInfo

log = logging.getLogger(__name__)
Body = Callable[[DictConfig, RankContext, JobInfo], Any]


class RankSource(ABC):
    name: str

    @abstractmethod
    def run(self, cfg: DictConfig, job: JobInfo, body: Body) -> Any:
        """Run ``body`` on ``cfg.parallel.world_size`` ranks; rank 0's result."""


def rank_source(world: int) -> RankSource:
    """Who started this process decides: submitit, torchrun, or nobody (spawn if needed)."""
    if os.environ.get("SUBMITIT_EXECUTOR"):
        return Submitit()
    if os.environ.get("TORCHELASTIC_RUN_ID") and os.environ.get("WORLD_SIZE"):
        return Torchrun()
    return InProcess() if world == 1 else Spawn()


class InProcess(RankSource):
    name = "in_process"

    def run(self, cfg: DictConfig, job: JobInfo, body: Body) -> Any:
        return body(cfg, RankContext(device=pick_device(cfg.train.device), launcher=self.name),
                    job)


class Adopted(RankSource):
    """Ranks someone else started, described by the env:// variables."""

    def run(self, cfg: DictConfig, job: JobInfo, body: Body) -> Any:
        from pinchpoint.cluster.fabric import prepare_node

        want, world = cfg.parallel.world_size, int(os.environ["WORLD_SIZE"])
        if world != want:
            raise ConfigError("parallel.world_size", want,
                              f"the {self.name} world size ({world}); launch {want} ranks")
        # These ranks may span nodes: the node's link as the fabric config asks (shaped on an
        # emulated cluster) before the process group forms over it.
        prepare_node(cfg.fabric, int(os.environ.get("LOCAL_RANK", 0)))
        return _as_rank(cfg, job, body, self.name)


class Torchrun(Adopted):
    name = "torchrun"


class Submitit(Adopted):
    name = "submitit"

    def run(self, cfg: DictConfig, job: JobInfo, body: Body) -> Any:
        import submitit

        want, tasks = cfg.parallel.world_size, submitit.JobEnvironment().num_tasks
        if tasks != want:
            raise ConfigError("parallel.world_size", want,
                              f"the number of tasks the launcher started ({tasks}): set "
                              f"hydra.launcher.tasks_per_node={want} (or the cluster's nodes x "
                              "tasks_per_node) to match")
        if want == 1:
            return body(cfg, RankContext(device=pick_device(cfg.train.device),
                                         launcher=self.name), job)
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        return super().run(cfg, job, body)


class Spawn(RankSource):
    name = "spawn"

    def run(self, cfg: DictConfig, job: JobInfo, body: Body) -> Any:
        from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
        from torch.distributed.launcher.api import LaunchConfig, elastic_launch

        world = cfg.parallel.world_size
        resolved = cfg.copy()
        OmegaConf.resolve(resolved)  # children have no Hydra context to resolve ${...} against
        config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=world,
                              run_id=f"pinchpoint-{uuid.uuid4().hex[:8]}", rdzv_backend="c10d",
                              rdzv_endpoint=f"127.0.0.1:{free_port()}", max_restarts=0,
                              monitor_interval=0.1, start_method="spawn")
        log.info("spawning %d ranks (%s)", world, cfg.parallel.name)
        try:
            with _quiet_elastic():
                results = elastic_launch(config, _spawned_rank)(resolved, job, body, _log_level())
        except ChildFailedError as err:
            from pinchpoint.tracking.run_record import mark_failed
            mark_failed(cfg.tracking, job.output_dir)
            raise_rank_user_error(job)      # a config or data error: as itself, one line
            first = err.get_first_failure()[1]
            raise RuntimeError(f"rank {first.local_rank} of {world} failed "
                               f"(exit {first.exitcode}):\n{_failure_text(first)}") from None
        return results[0]


@contextlib.contextmanager
def _quiet_elastic():
    """The elastic agent logs a failed rank as the traceback of its own poll loop and each rank
    it stops as a warning; the error raised below already says which rank failed and why (with
    that rank's traceback, unless it was a config or data error, said in one line)."""
    loggers = [logging.getLogger(n) for n in ("torch.distributed.elastic.multiprocessing.api",
                                               "torch.multiprocessing.spawn")]
    levels = [x.level for x in loggers]
    for x in loggers:
        x.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for x, level in zip(loggers, levels):
            x.setLevel(level)


def _as_rank(cfg: DictConfig, job: JobInfo, body: Body, launcher: str) -> Any:
    _nccl_debug(cfg, job)
    ctx = init_process_group(cfg.parallel.backend, cfg.train.device, cfg.train.threads, launcher)
    if ctx.rank != 0:  # one voice on the terminal: rank 0's
        logging.getLogger().setLevel(logging.WARNING)
    try:
        return body(cfg, ctx, job)
    except user_errors():
        raise
    except Exception:
        # Under submitit the error travels back pickled, without its stack: keep it in this
        # rank's own log (the task's stderr), where the user looks for why this rank died.
        if launcher != "spawn":
            log.exception("rank %d of %d (%s) failed", ctx.rank, ctx.world_size,
                          ctx.hosts[ctx.rank])
        raise
    finally:
        shutdown()


def _nccl_debug(cfg: DictConfig, job: JobInfo) -> None:
    """telemetry.nccl_debug on an NCCL process group: NCCL's INFO log (INIT,COLL,NET) to a file
    per rank under <output>/nccl/, set before the group forms (NCCL reads it at its first
    communicator). A gloo group gets nothing (the session says so once)."""
    if not cfg.telemetry.get("nccl_debug"):
        return
    device = pick_device(cfg.train.device, int(os.environ.get("LOCAL_RANK", 0)))
    if pick_backend(cfg.parallel.backend, device) != "nccl":
        return
    from pinchpoint.telemetry.nccl_log import log_dir, nccl_env
    os.makedirs(log_dir(job.output_dir), exist_ok=True)
    os.environ.update(nccl_env(log_dir(job.output_dir), int(os.environ["RANK"])))


def _spawned_rank(cfg: DictConfig, job: JobInfo, body: Body, level: int) -> Optional[Any]:
    from torch.distributed.elastic.multiprocessing.errors import record

    return record(_spawned_main)(cfg, job, body, level)


def _spawned_main(cfg: DictConfig, job: JobInfo, body: Body, level: int) -> Optional[Any]:
    from pinchpoint.workloads.registry import setup

    setup()
    signal.signal(signal.SIGTERM, _on_sigterm)
    rank = int(os.environ["RANK"])
    logging.basicConfig(level=level if rank == 0 else logging.WARNING, stream=sys.stdout,
                        format=f"[%(asctime)s][rank {rank}][%(name)s] %(message)s",
                        datefmt="%H:%M:%S")
    try:
        return _as_rank(cfg, job, body, "spawn")
    except user_errors() as err:   # the launching process raises it; no traceback here
        keep_rank_user_error(err, job, rank)
        sys.exit(2)


# --- a rank's config or data error, raised again by the process that launched the ranks ---------
def user_errors() -> tuple:
    """What train.py reports as one line (pinchpoint's config and data errors, a checkpoint
    that did not fit on its tier)."""
    from pinchpoint.data.npy_format import DataFormatError
    from pinchpoint.errors import CheckpointDiskFull, DataError
    return ConfigError, DataError, DataFormatError, CheckpointDiskFull


def _user_error_file(job: JobInfo, rank: int) -> str:
    return os.path.join(job.output_dir, f".rank{rank:05d}.user_error.json")


def keep_rank_user_error(err: Exception, job: JobInfo, rank: int) -> None:
    import json
    os.makedirs(job.output_dir, exist_ok=True)
    record = {"class": f"{type(err).__module__}:{type(err).__qualname__}",
              "message": str(err), "attributes": vars(err)}
    with open(_user_error_file(job, rank), "w") as f:
        json.dump(record, f, default=str)


def raise_rank_user_error(job: JobInfo) -> None:
    """Raise the lowest rank's kept config/data error as its own class (same message and
    attributes), and clear every rank's file; nothing when no rank kept one."""
    import glob
    import importlib
    import json
    found = sorted(glob.glob(os.path.join(job.output_dir, ".rank*.user_error.json")))
    if not found:
        return
    with open(found[0]) as f:
        record = json.load(f)
    for path in found:
        os.remove(path)
    module, name = record["class"].split(":")
    cls = getattr(importlib.import_module(module), name)
    err = cls.__new__(cls)
    err.args = (record["message"],)
    err.__dict__.update(record["attributes"])
    raise err from None


def _on_sigterm(signum, frame):
    # The elastic agent SIGTERMs surviving ranks when one fails: unwind through the session's
    # finally-blocks so rank 0 marks its MLflow run failed instead of dying silently. Further
    # SIGTERMs are ignored so they cannot interrupt that clean-up.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(f"rank stopped by signal {signum} (another rank failed)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _failure_text(failure) -> str:
    message = failure.message
    if isinstance(message, dict):
        message = message.get("message", {})
        if isinstance(message, dict):
            extra = message.get("extraInfo", {})
            return f"{message.get('message', '')}\n{extra.get('py_callstack', '')}".strip()
    return str(message or failure.error_file)


def _log_level() -> int:
    return logging.getLogger().getEffectiveLevel()
