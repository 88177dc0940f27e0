"""Time-to-train = steps to converge (RCP mean samples / global batch) x step time + the
evaluations the benchmark runs inside the clock + init inside the clock (MLPerf starts the
clock at run_start, after init_stop: usually nothing). Each term is reported."""
from __future__ import annotations

from pinchpoint.plan.rcp import convergence
from pinchpoint.plan.result import TimeToTrain
from pinchpoint.plan.rules import MLPerfRules


def assemble(rules: MLPerfRules, global_batch: int, ruleset: str, step_s: float,
             eval_each_s: float, eval_every_samples: float, init_s: float,
             batch_field: str = "global_batch_size",
             below_smallest_rcp: bool = False) -> TimeToTrain:
    """Steps from the RCPs of ``rules.benchmark`` (in ``rules.rcp_unit``), evaluations at
    ``eval_every_samples`` less the ones ``rules.eval_skip`` never runs.
    ``below_smallest_rcp``: plan a batch below every RCP at the smallest reference's samples
    (MLPerf's rule) instead of refusing it (plan/rcp.py)."""
    conv = convergence(rules.benchmark, global_batch, ruleset, batch_field, below_smallest_rcp,
                       rules.samples_per_rcp_unit)
    n_evals = rules.evaluations(conv.samples, eval_every_samples, global_batch)
    train = conv.steps * step_s
    evals = n_evals * eval_each_s
    return TimeToTrain(benchmark=rules.benchmark, ruleset=ruleset,
                       samples_to_converge=conv.samples, rcp=conv.how, steps=conv.steps,
                       step_s=step_s, train_s=train, evaluations=n_evals,
                       eval_each_s=eval_each_s, evals_s=evals, init_s=init_s,
                       total_s=train + evals + init_s)


def dominant(terms: dict[str, float]) -> str:
    return max(terms, key=lambda k: terms[k]) if terms else "compute"


def pinch(terms: dict[str, float]) -> str:
    """The largest term other than compute: what stands between the step and pure compute
    (the term to attack when compute already dominates)."""
    rest = {k: v for k, v in terms.items() if k != "compute" and v > 0}
    return dominant(rest) if rest else "none"
