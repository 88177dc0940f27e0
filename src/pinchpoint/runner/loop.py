"""The phase-timed training loop shared by every workload.

Evaluation at a fixed step interval, stop at the quality target (success) or at the epoch/step
limit (aborted), checkpoints every ``interval`` steps. MLPerf epoch and eval events are logged
here, so every workload's log has the same shape.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from pinchpoint.plan.rules import MLPerfRules
from pinchpoint.telemetry.mlperf_log import C, MLPerfLog
from pinchpoint.telemetry.phases import PhaseTimer
from pinchpoint.workloads.base import Quality, Sizes, Workload

log = logging.getLogger(__name__)


@dataclass
class LoopState:
    step: int = 0                      # optimizer steps done (global)
    samples: int = 0                   # training samples consumed (global)
    evals: list[tuple[int, float]] = field(default_factory=list)  # (step, quality)
    loss_sum: Any = 0.0                # float, or a tensor summed on-device between evals
    loss_count: int = 0
    status: str = "aborted"
    samples_to_target: Optional[int] = None

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["loss_sum"] = float(out["loss_sum"])
        return out


@dataclass
class LoopHooks:
    """Callbacks into the runner (tracking, checkpoints, progress, faults)."""
    on_eval: Callable[[LoopState, float, float], None]          # state, quality, train loss
    save_checkpoint: Optional[Callable[[LoopState], None]] = None
    on_step: Callable[[LoopState], None] = lambda state: None
    # Before step n (numbered from 1, as the timeline's "step n") takes its batch: the
    # profiler's window opens here (telemetry/profiler.py).
    before_step: Callable[[int], None] = lambda step: None
    # Collectives inside evaluation are reported apart from the training step's.
    evaluating: Callable[[], Any] = contextlib.nullcontext


@dataclass
class LoopLimits:
    max_epochs: float
    evals_per_epoch: int
    max_steps: int = 0
    checkpoint_interval: int = 0

    def total_steps(self, sizes: Sizes) -> int:
        steps = int(math.floor(self.max_epochs * sizes.steps_per_epoch))
        return min(steps, self.max_steps) if self.max_steps else steps

    def eval_every(self, sizes: Sizes) -> int:
        if sizes.eval_every_steps:
            return sizes.eval_every_steps
        return max(1, sizes.steps_per_epoch // self.evals_per_epoch)


def train(workload: Workload, phases: PhaseTimer, mlperf: MLPerfLog, sizes: Sizes,
          quality: Quality, limits: LoopLimits, state: LoopState, hooks: LoopHooks,
          rules: MLPerfRules) -> LoopState:
    """``rules``: the workload's MLPerf rules (its WorkloadSpec's): the evaluations its eval
    skip names are not run and not logged, and each one's quality is logged under its keys."""
    total, eval_every = limits.total_steps(sizes), limits.eval_every(sizes)
    first_eval = rules.first_eval_step(sizes.global_batch_size, eval_every)
    spe = sizes.steps_per_epoch
    while state.step < total and state.status != "success":
        epoch = state.step // spe
        mlperf.start(C.EPOCH_START, metadata={C.EPOCH_NUM: epoch + 1})
        batches = iter(workload.batches(state.step % spe))
        stop_in_epoch = min(total, (epoch + 1) * spe)
        while state.step < stop_in_epoch:
            hooks.before_step(state.step + 1)
            batch = next(batches)
            phases.mark("data_wait")
            loss = workload.forward_backward(batch)
            phases.mark("forward_backward")
            workload.optimizer_step()
            state.loss_sum = state.loss_sum + loss  # no host sync per step (GPU)
            state.loss_count += 1
            phases.mark("optimizer")
            state.step += 1
            state.samples += sizes.global_batch_size
            last = state.step == stop_in_epoch
            if (state.step % eval_every == 0 and state.step >= first_eval) or last:
                _evaluate(workload, mlperf, sizes, quality, state, hooks, rules)
                phases.mark("eval")
            if hooks.save_checkpoint and limits.checkpoint_interval and \
                    state.step % limits.checkpoint_interval == 0 and state.status != "success":
                hooks.save_checkpoint(state)
                phases.mark("checkpoint")
            phases.end_step(state.step)
            hooks.on_step(state)
            if state.status == "success":
                break
        workload.close()
        mlperf.end(C.EPOCH_STOP, metadata={C.EPOCH_NUM: epoch + 1})
    return state


def _evaluate(workload: Workload, mlperf: MLPerfLog, sizes: Sizes, quality: Quality,
              state: LoopState, hooks: LoopHooks, rules: MLPerfRules) -> None:
    epoch_num = round(state.samples / sizes.train_samples, 6)
    meta = {C.EPOCH_NUM: epoch_num, "samples_count": state.samples}
    mlperf.start(C.EVAL_START, metadata=meta)
    with hooks.evaluating():
        value = workload.evaluate()
    mlperf.end(C.EVAL_STOP, metadata=meta)
    for key in rules.eval_keys:      # eval_accuracy, and a benchmark's own name for it
        mlperf.event(key, value=value, metadata=meta)
    train_loss = float(state.loss_sum) / max(state.loss_count, 1)
    state.loss_sum, state.loss_count = 0.0, 0
    state.evals.append((state.step, value))
    if quality.reached(value) and state.samples_to_target is None:
        state.status = "success"
        state.samples_to_target = state.samples
    hooks.on_eval(state, value, train_loss)


def rng_state() -> dict:
    import random

    import numpy as np
    return {"torch": torch.random.get_rng_state(), "numpy": np.random.get_state(),
            "python": random.getstate()}


def set_rng_state(rng: dict) -> None:
    import random

    import numpy as np
    torch.random.set_rng_state(rng["torch"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])


class Progress:
    """One terminal line every few seconds: step, samples/s, last quality, ETA."""

    def __init__(self, every_s: float, total_steps: int, global_batch: int, metric: str,
                 target: float):
        self.every_s, self.total, self.batch = every_s, total_steps, global_batch
        self.metric, self.target = metric, target
        self.started = self.last = time.perf_counter()
        self.last_step = 0
        self.quality: Optional[float] = None

    def __call__(self, state: LoopState) -> None:
        now = time.perf_counter()
        if now - self.last < self.every_s:
            return
        rate = (state.step - self.last_step) * self.batch / (now - self.last)
        steps_left = self.total - state.step
        eta = steps_left * (now - self.started) / max(state.step, 1)
        quality = "-" if self.quality is None else f"{self.quality:.4f}"
        log.info("step %d/%d | %.0f samples/s | %s %s (target %.4f) | ETA %.0fs (epoch limit)",
                 state.step, self.total, rate, self.metric, quality, self.target, eta)
        self.last, self.last_step = now, state.step
