"""The runner: validate, plan, get ranks, run one session per rank, print the summary."""
from __future__ import annotations

import json
import logging
import math

from omegaconf import DictConfig

log = logging.getLogger("pinchpoint")


def run(cfg: DictConfig) -> float:
    """Run one sweep point; returns time_to_train_s (inf when the target was not reached)."""
    from pinchpoint.config import validate
    from pinchpoint.runner.info import from_hydra

    validate(cfg)
    if cfg.plan_only:
        return print_plan(cfg)
    job = from_hydra(f"{cfg.output_root}/runs/adhoc")
    from pinchpoint.parallel.launch import launch

    return launch(cfg, job)


def run_rank(cfg: DictConfig, ctx, job) -> float:
    import torch

    from pinchpoint.runner.session import Session

    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    session = Session(cfg, ctx, job)
    summary = session.run()
    if ctx.is_main:
        print_summary(summary, session)
    ttt = summary.get("time_to_train_s", math.inf)
    return ttt if summary["status"] == "success" else math.inf


def print_plan(cfg: DictConfig) -> float:
    from pinchpoint.workloads import workload_class

    plan = workload_class(cfg.model.name).plan(cfg)
    print(json.dumps(plan, indent=2))
    return math.nan


def print_summary(s: dict, session) -> None:
    fractions = ", ".join(f"{k.removesuffix('_fraction')} {v:.0%}" for k, v in s.items()
                          if k.endswith("_fraction") and v >= 0.005)
    where = ""
    if session.tracker is not None:
        where = (f"\n  MLflow run  {session.cfg.tracking.experiment} / {session._run_name()} "
                 f"(id {getattr(session.tracker, 'last_run_id', '')})")
    log.info(
        "\n== %s ==\n  status           %s (%s %.5f, target %.5f)\n  time_to_train_s  %.2f"
        "\n  throughput       %.0f samples/s over %d steps\n  bottleneck       %s"
        "\n  phases           %s\n  outputs          %s%s",
        session._run_name(), s["status"], s["quality_metric"], s["final_quality"] or float("nan"),
        s["quality_target"], s["time_to_train_s"], s["throughput_samples_per_s"], s["steps"],
        s["bottleneck"], fractions, session.job.output_dir, where)
