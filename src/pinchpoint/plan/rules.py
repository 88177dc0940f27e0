"""A workload's MLPerf rules, torch-free: what both the runtime loop (runner/) and the planner
(plan/time_to_train.py, plan/rcp.py) read from its WorkloadSpec (``spec(name).rules``), so the
two can never disagree on the benchmark's name, its eval keys, its eval cadence and skip, or the
unit of its Reference Convergence Points."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

EVAL_ACCURACY = "eval_accuracy"     # mlperf_logging.mllog.constants.EVAL_ACCURACY
STACKS = ("megatron", "fsdp2")      # the values of plan.stack


@dataclass(frozen=True)
class EvalSkip:
    """Evaluations never run at the start of a run (so never on the clock, never logged):
    ``floor(slope x global_batch + intercept) - offset`` of them. ``offset`` 1 where the
    reference's rule names the first evaluation that runs rather than the number skipped."""
    slope: float
    intercept: float
    offset: int = 0

    def skipped(self, global_batch: int) -> int:
        return max(0, math.floor(self.slope * global_batch + self.intercept) - self.offset)


@dataclass(frozen=True)
class MLPerfRules:
    # The benchmark's name as the MLPerf log (submission_benchmark), the compliance checker and
    # mlperf-logging's RCP files (rcps_<benchmark>.json) spell it.
    benchmark: str
    # The keys the runtime logs each evaluation's quality under: eval_accuracy always, plus any
    # name the benchmark's rules give the metric.
    eval_keys: tuple[str, ...] = (EVAL_ACCURACY,)
    # Evaluation cadence: "eval_every_samples" (the scale's model.<scale>.eval_every_samples,
    # training samples between evaluations) or "evals_per_epoch" (train.evals_per_epoch
    # evaluations per epoch of ``epoch_samples``).
    eval_cadence: str = "eval_every_samples"
    eval_skip: Optional[EvalSkip] = None
    # What the RCP file counts: "samples" or "epochs" (of ``epoch_samples`` training samples).
    rcp_unit: str = "samples"
    epoch_samples: int = 0
    # Fixed full-scale constants of the open ruleset (e.g. the validation set's size).
    constants: dict[str, Any] = field(default_factory=dict)
    # Whose collectives the reference implementation runs (the planner's default plan.stack):
    # "megatron" (NeMo, Primus, Megatron-Bridge) or "fsdp2" (torchtitan's FSDP2, and the
    # per-layer gathers of DeepSpeed ZeRO-3 that the LoRA reference runs through accelerate).
    reference_stack: str = "megatron"

    def __post_init__(self) -> None:
        if not self.benchmark or not self.eval_keys:
            raise ValueError("MLPerfRules needs a benchmark name and at least one eval key")
        if self.eval_cadence not in ("eval_every_samples", "evals_per_epoch"):
            raise ValueError(f"eval_cadence {self.eval_cadence!r}")
        if self.reference_stack not in STACKS:
            raise ValueError(f"reference_stack {self.reference_stack!r}: one of {STACKS}")
        if self.rcp_unit not in ("samples", "epochs") or \
                (self.rcp_unit == "epochs") != (self.epoch_samples > 0):
            raise ValueError(f"rcp_unit {self.rcp_unit!r} with epoch_samples "
                             f"{self.epoch_samples}")

    @property
    def samples_per_rcp_unit(self) -> int:
        return self.epoch_samples if self.rcp_unit == "epochs" else 1

    def evals_skipped(self, global_batch: int) -> int:
        return self.eval_skip.skipped(global_batch) if self.eval_skip else 0

    def eval_every_samples(self, run) -> float:
        """Training samples between evaluations for a run config (torch-free)."""
        if self.eval_cadence == "evals_per_epoch":
            per_epoch = getattr(getattr(run, "train", None), "evals_per_epoch", None) or 20
            return self.epoch_samples / per_epoch
        model = run.model
        return getattr(model, model.scale).eval_every_samples

    def evaluations(self, samples: float, every: float, global_batch: int) -> int:
        """Evaluations run up to and including the one that meets the target."""
        done = math.ceil(samples / every - 1e-9)
        return max(1, done - self.evals_skipped(global_batch))

    def first_eval_step(self, global_batch: int, eval_every_steps: int) -> int:
        """The runtime's first evaluation step: the skipped ones are not run."""
        return (self.evals_skipped(global_batch) + 1) * eval_every_steps \
            if self.eval_skip else 0
