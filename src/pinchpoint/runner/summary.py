"""A run's outcome as numbers (logged to MLflow, written to phase_summary.json) and as the
terminal summary a user reads."""
from __future__ import annotations

import logging
from typing import Any, Optional

log = logging.getLogger("pinchpoint")


def summarize(state, quality, phases, tier_io, collectives, measurements: dict, writes: list,
              loop_seconds: float, attempt: int, steps_redone: int, resume,
              world_size: int) -> dict[str, Any]:
    p, io = phases, tier_io
    steps_here = max(state.step - (resume.step if resume else 0), 1)
    return {
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
        "checkpoint_writes": len(writes),
        "checkpoint_write_bytes": sum(w.nbytes for w in writes),
        "checkpoint_write_seconds": sum(w.seconds for w in writes),
        **measurements,
        **collectives.per_step(steps_here),
        "world_size": world_size,
    }


def across_ranks(ctx, totals: dict) -> dict[str, float]:
    """min/mean/max over ranks of the phases that differ between ranks (rank 0 reports)."""
    if not ctx.distributed:
        return {}
    import torch.distributed as dist
    gathered: list = [None] * ctx.world_size
    dist.all_gather_object(gathered, dict(totals))
    out = {}
    for phase in ("data_wait", "communication", "forward_backward"):
        values = [t.get(phase, 0.0) for t in gathered]
        out.update({f"{phase}_s_min": min(values), f"{phase}_s_max": max(values),
                    f"{phase}_s_mean": sum(values) / len(values)})
    return out


def print_summary(s: dict, name: str, output_dir: str, mlflow_where: Optional[str]) -> None:
    fractions = ", ".join(f"{k.removesuffix('_fraction')} {v:.0%}" for k, v in s.items()
                          if k.endswith("_fraction") and v >= 0.005)
    where = f"\n  MLflow run  {mlflow_where}" if mlflow_where else ""
    log.info(
        "\n== %s ==\n  status           %s (%s %.5f, target %.5f)\n  time_to_train_s  %.2f"
        "\n  throughput       %.0f samples/s over %d steps\n  bottleneck       %s"
        "\n  phases           %s\n  outputs          %s%s",
        name, s["status"], s["quality_metric"], s["final_quality"] or float("nan"),
        s["quality_target"], s["time_to_train_s"], s["throughput_samples_per_s"], s["steps"],
        s["bottleneck"], fractions, output_dir, where)
