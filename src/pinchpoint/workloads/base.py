"""The one small protocol every MLPerf workload implements.

A workload knows nothing of Hydra, MLflow or Slurm: it receives typed config (dataclasses), a
rank context and a storage tier, and reports through the runner's phase timer and measurement
sink. The runner (pinchpoint.runner) owns the loop, timing, MLPerf events, checkpoints and
tracking, so adding a workload never touches it.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import torch

from pinchpoint.parallel.context import RankContext
from pinchpoint.parallel.dims import ParallelDims
from pinchpoint.storage.tier import StorageTier
from pinchpoint.telemetry.phases import PhaseTimer


@dataclass
class Quality:
    metric: str              # e.g. "auroc", "log_perplexity"
    target: float
    higher_is_better: bool
    best_reachable: Optional[float] = None  # known for planted synthetic data

    def reached(self, value: float) -> bool:
        return value >= self.target if self.higher_is_better else value <= self.target


@dataclass
class Sizes:
    global_batch_size: int   # samples per optimizer step, all ranks
    steps_per_epoch: int
    train_samples: int       # MLPerf train_samples (one epoch)
    eval_samples: int
    eval_every_steps: int = 0  # fixed eval cadence (LLMs: every N sequences); 0 = evals_per_epoch
    # (evaluations skipped at the start: the spec's MLPerfRules.eval_skip, applied by the loop)


@dataclass
class RunInputs:
    """What the runner hands a workload."""
    model: Any               # the model group's dataclass
    dataset: Any             # the dataset group's dataclass
    parallel: Any            # the parallel group's dataclass (degrees: use ``dims``)
    dims: ParallelDims       # the checked degrees and world size
    seed: int
    ctx: RankContext
    tier: StorageTier
    phases: PhaseTimer
    collectives: Any = None  # parallel.collectives.CollectiveProfile: use it for every collective
    measurements: dict = field(default_factory=dict)  # workload-specific numbers for tracking
    compile: bool = False    # train.compile: compile each block (workloads/common/compile.py)


class Workload(ABC):
    # The benchmark's name, eval keys, cadence and skip: the WorkloadSpec's MLPerfRules.
    # train.compile=true compiles this workload's blocks; a workload without (DLRM) refuses it.
    compiles_blocks: bool = False

    def __init__(self, inputs: RunInputs):
        self.inputs = inputs

    # --- before anything runs (pure checks and arithmetic, no allocation) --------------------
    @classmethod
    def validate(cls, run) -> None:
        """Raise pinchpoint.errors.ConfigError (naming the dotted field) for values this
        workload cannot run. ``run`` is the typed run config: ``run.model`` is this workload's
        model dataclass, ``run.dataset``, ``run.parallel``, ``run.train`` ... likewise."""

    def describe(self) -> dict[str, Any]:
        """What a run name should show besides model, tier and layout, keyed by config path
        (e.g. {"dataset.batch_size": 4096}); a sweep's own axes are added to the name anyway."""
        return {}

    # --- init (untimed, between init_start and init_stop) -------------------------------------
    @abstractmethod
    def prepare_data(self) -> list[str]:
        """Make sure the dataset exists on the tier; return its files (for cache clearing)."""

    @abstractmethod
    def build(self) -> None:
        """Create model and optimizer on ``ctx.device``."""

    @abstractmethod
    def sizes(self) -> Sizes: ...

    @abstractmethod
    def quality(self) -> Quality: ...

    @abstractmethod
    def mlperf_hyperparameters(self) -> dict[str, Any]:
        """MLPerf hyperparameter keys (global_batch_size, opt_*, ...) for the result log."""

    # --- timed region -------------------------------------------------------------------------
    @abstractmethod
    def open_data(self) -> None:
        """Open/load the training data (timed: MLPerf's clock runs once data is touched)."""

    @abstractmethod
    def batches(self, start_step: int) -> Iterator[Any]:
        """Training batches for this rank from ``start_step`` on (the runner times next())."""

    @abstractmethod
    def forward_backward(self, batch: Any) -> torch.Tensor:
        """Loss for the batch with gradients computed; returns the (detached) loss."""

    @abstractmethod
    def optimizer_step(self) -> None: ...

    @abstractmethod
    def evaluate(self) -> float:
        """The quality metric on the validation set (same value on every rank)."""

    # --- checkpoints (torch.distributed.checkpoint, written and read by the runner) ----------
    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Called on every rank. A nested dict of tensors (DTensors, or rank-local tensors under
        layout-independent names: the same name whichever rank or layout holds it) and plain
        values. DCP writes each rank's part; a load reshards into any layout or world size."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Apply ``state``: the structure state_dict() returns, filled in place from disk."""

    def close(self) -> None:
        """Release loader workers and files."""
