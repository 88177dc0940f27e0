"""The runner: validate, plan, get ranks, run one session per rank, print the summary."""
from __future__ import annotations

import logging
import math

from omegaconf import DictConfig

log = logging.getLogger("pinchpoint")


def run(cfg: DictConfig) -> float:
    """Run one sweep point; returns time_to_train_s (inf when the target was not reached)."""
    from pinchpoint.runner.validation import validate
    from pinchpoint.runner.info import from_hydra
    from pinchpoint.runner.ranks import rank_source

    validate(cfg)
    if cfg.plan_only:   # print the full-scale plan; a point that does not fit exits 2
        from pinchpoint.runner.plan_only import run_plan_only
        return run_plan_only(cfg)
    job = from_hydra(f"{cfg.output_root}/runs/adhoc")
    return rank_source(cfg.parallel.world_size).run(cfg, job, run_rank)


def run_rank(cfg: DictConfig, ctx, job) -> float:
    """The body every rank runs: one session."""
    import torch

    from pinchpoint.runner.session import Session
    from pinchpoint.runner.summary import print_summary

    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    session = Session(cfg, ctx, job)
    summary = session.run()
    if ctx.is_main:
        where = None
        if session.tracker is not None:
            where = (f"{cfg.tracking.experiment} / {session.name()} "
                     f"(id {session.tracker.last_run_id})")
        print_summary(summary, session.name(), job.output_dir, where)
    ttt = summary.get("time_to_train_s", math.inf)
    return ttt if summary["status"] == "success" else math.inf
