"""Time-to-train = steps to converge (RCP mean samples / global batch) x step time + the
evaluations the benchmark runs inside the clock + init inside the clock (MLPerf starts the
clock at run_start, after init_stop: usually nothing). Each term is reported."""
from __future__ import annotations

import math
from typing import Any, Callable

from pinchpoint.plan.rcp import convergence

# Evaluations skipped at the start of a run (never run, so never on the clock), per benchmark.
# Llama 3.1 405B: floor(0.0026 x GBS + 12), the reference's rule (github.com/mlcommons/training,
# large_language_model_pretraining/nemo).
EVALS_SKIPPED: dict[str, Callable[[int], int]] = {
    "llama31_405b": lambda gbs: math.floor(0.0026 * gbs + 12),
}


def evaluations(benchmark: str, samples: float, every: float, global_batch: int) -> int:
    """Evaluations run up to and including the one that meets the target."""
    done = math.ceil(samples / every - 1e-9)
    return max(1, done - EVALS_SKIPPED.get(benchmark, lambda g: 0)(global_batch))


def assemble(benchmark: str, global_batch: int, ruleset: str, step_s: float,
             eval_each_s: float, eval_every_samples: float, init_s: float,
             batch_field: str = "global_batch_size",
             below_smallest_rcp: bool = False) -> dict[str, Any]:
    """``below_smallest_rcp``: plan a batch below every RCP at the smallest reference's samples
    (MLPerf's rule) instead of refusing it (plan/rcp.py)."""
    conv = convergence(benchmark, global_batch, ruleset, batch_field, below_smallest_rcp)
    n_evals = evaluations(benchmark, conv.samples, eval_every_samples, global_batch)
    train = conv.steps * step_s
    evals = n_evals * eval_each_s
    total = train + evals + init_s
    return {"samples_to_converge": conv.samples, "rcp": conv.how, "ruleset": ruleset,
            "steps": conv.steps, "step_s": step_s, "train_s": train, "evaluations": n_evals,
            "eval_each_s": eval_each_s, "eval_s": evals, "init_s": init_s,
            "time_to_train_s": total, "time_to_train_min": total / 60}


def dominant(terms: dict[str, float]) -> str:
    return max(terms, key=lambda k: terms[k]) if terms else "compute"


def pinch(terms: dict[str, float]) -> str:
    """The largest term other than compute: what stands between the step and pure compute
    (the term to attack when compute already dominates)."""
    rest = {k: v for k, v in terms.items() if k != "compute" and v > 0}
    return dominant(rest) if rest else "none"
