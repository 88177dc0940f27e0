"""Four ways to get ranks, one code path for the run's body (``runner.run_rank``):

1. world_size == 1: in-process.
2. plain ``python train.py parallel=ep8``: spawn the ranks locally with torch's elastic launch
   API (the engine behind torchrun): it propagates a failing rank's traceback, tears the other
   ranks down, and leaves no orphans.
3. under submitit (hydra-submitit-launcher, local or Slurm, with tasks_per_node = ranks): adopt
   the tasks submitit started (its TorchDistributedEnvironment); never spawn again.
4. under torchrun: adopt its environment.
gloo on CPU, nccl when CUDA is present.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import uuid
from datetime import timedelta
from typing import Optional

import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf

from pinchpoint.config.validate import ConfigError
from pinchpoint.parallel.context import RankContext, pick_device
from pinchpoint.runner.info import JobInfo

log = logging.getLogger(__name__)
RUN_ID_FILE = "mlflow_run_id"


def detect_launcher() -> str:
    """Who started this process: submitit, torchrun, or nobody (in_process)."""
    if os.environ.get("SUBMITIT_EXECUTOR"):
        return "submitit"
    if os.environ.get("TORCHELASTIC_RUN_ID") and os.environ.get("WORLD_SIZE"):
        return "torchrun"
    return "in_process"


def backend_for(requested: str, device: torch.device) -> str:
    if requested != "auto":
        return requested
    return "nccl" if device.type == "cuda" else "gloo"


def launch(cfg: DictConfig, job: JobInfo) -> float:
    """Run ``cfg`` on ``cfg.parallel.world_size`` ranks; returns rank 0's result."""
    from pinchpoint.runner import run_rank

    want = cfg.parallel.world_size
    launcher = detect_launcher()
    if launcher == "submitit":
        return _adopt_submitit(cfg, job, want)
    if launcher == "torchrun":
        return _adopt(cfg, job, want, "torchrun")
    if want == 1:
        ctx = RankContext(device=pick_device(cfg.train.device), launcher="in_process")
        return run_rank(cfg, ctx, job)
    return _spawn(cfg, job, want)


# --- adopting ranks someone else started -------------------------------------------------------
def _adopt_submitit(cfg: DictConfig, job: JobInfo, want: int) -> float:
    import submitit

    env = submitit.JobEnvironment()
    if env.num_tasks != want:
        raise ConfigError("parallel.world_size", want,
                          f"the number of tasks the launcher started ({env.num_tasks}): set "
                          f"hydra.launcher.tasks_per_node={want} (or the cluster's nodes x "
                          "tasks_per_node) to match")
    if want == 1:
        from pinchpoint.runner import run_rank
        ctx = RankContext(device=pick_device(cfg.train.device), launcher="submitit")
        return run_rank(cfg, ctx, job)
    submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    return _adopt(cfg, job, want, "submitit")


def _adopt(cfg: DictConfig, job: JobInfo, want: int, launcher: str) -> float:
    from pinchpoint.runner import run_rank

    world = int(os.environ["WORLD_SIZE"])
    if world != want:
        raise ConfigError("parallel.world_size", want,
                          f"the {launcher} world size ({world}); launch {want} ranks")
    ctx = init_rank(cfg, launcher)
    if ctx.rank != 0:  # one voice on the terminal: rank 0's
        logging.getLogger().setLevel(logging.WARNING)
    try:
        return run_rank(cfg, ctx, job)
    finally:
        shutdown()


def init_rank(cfg: DictConfig, launcher: str) -> RankContext:
    """Join the process group described by the env:// variables (RANK, WORLD_SIZE, MASTER_*)."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = pick_device(cfg.train.device, local_rank)
    backend = backend_for(cfg.parallel.backend, device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # Ranks sharing a node split its cores: oversubscribed intra-op threads make gloo ranks
    # spin against each other (measured: 20x slower on 2 cores with 2 ranks x 2 threads).
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    torch.set_num_threads(cfg.train.threads or max(1, (os.cpu_count() or 1) // local_world))
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world,
                                timeout=timedelta(seconds=600))
    return RankContext(rank, world, local_rank, device, backend, launcher)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


# --- spawning ranks ourselves ------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(cfg: DictConfig, job: JobInfo, world: int) -> float:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    resolved = cfg.copy()
    OmegaConf.resolve(resolved)  # children have no Hydra context to resolve ${...} against
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=world,
                          run_id=f"pinchpoint-{uuid.uuid4().hex[:8]}", rdzv_backend="c10d",
                          rdzv_endpoint=f"127.0.0.1:{_free_port()}", max_restarts=0,
                          monitor_interval=0.1, start_method="spawn")
    log.info("spawning %d ranks (%s)", world, cfg.parallel.name)
    try:
        results = elastic_launch(config, _rank_entry)(resolved, job, _log_level())
    except ChildFailedError as err:
        _mark_failed(cfg, job)
        first = err.get_first_failure()[1]
        raise RuntimeError(f"rank {first.local_rank} of {world} failed "
                           f"(exit {first.exitcode}):\n{_failure_text(first)}") from None
    return results[0]


def _failure_text(failure) -> str:
    message = failure.message
    if isinstance(message, dict):
        message = message.get("message", {})
        if isinstance(message, dict):
            extra = message.get("extraInfo", {})
            return f"{message.get('message', '')}\n{extra.get('py_callstack', '')}".strip()
    return str(message or failure.error_file)


def _mark_failed(cfg: DictConfig, job: JobInfo) -> None:
    """If rank 0 died before it could close its MLflow run, close it as FAILED here."""
    path = os.path.join(job.output_dir, RUN_ID_FILE)
    if not cfg.tracking.enabled or not os.path.exists(path):
        return
    from mlflow.tracking import MlflowClient

    from pinchpoint.tracking.store import absolute_uri
    with open(path) as f:
        run_id = f.read().strip()
    client = MlflowClient(absolute_uri(cfg.tracking.uri))
    if client.get_run(run_id).info.status == "RUNNING":
        client.set_tag(run_id, "status", "failed")
        client.set_terminated(run_id, "FAILED")


def _log_level() -> int:
    return logging.getLogger().getEffectiveLevel()


def _on_sigterm(signum, frame):
    # The elastic agent SIGTERMs surviving ranks when one fails: unwind through the session's
    # finally-blocks so rank 0 marks its MLflow run failed instead of dying silently. Further
    # SIGTERMs are ignored so they cannot interrupt that clean-up.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(f"rank stopped by signal {signum} (another rank failed)")


def _rank_entry(cfg: DictConfig, job: JobInfo, level: int) -> Optional[float]:
    from torch.distributed.elastic.multiprocessing.errors import record

    return record(_rank_main)(cfg, job, level)


def _rank_main(cfg: DictConfig, job: JobInfo, level: int) -> Optional[float]:
    from pinchpoint.config import setup
    from pinchpoint.runner import run_rank

    setup()
    signal.signal(signal.SIGTERM, _on_sigterm)
    rank = int(os.environ["RANK"])
    logging.basicConfig(level=level if rank == 0 else logging.WARNING, stream=sys.stdout,
                        format=f"[%(asctime)s][rank {rank}][%(name)s] %(message)s",
                        datefmt="%H:%M:%S")
    ctx = init_rank(cfg, "spawn")
    try:
        return run_rank(cfg, ctx, job)
    finally:
        shutdown()
