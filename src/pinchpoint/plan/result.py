"""The typed result every workload's planner returns (``WorkloadSpec.planner``, run by
``pinchpoint.workloads.plan_point``): torch-free, frozen, and one shape for all workloads, so the
plan table, ``plan_only=true``'s JSON and the benchmarks read attributes, not dict keys.
Workload-specific extras (communication per step, layouts, vocabulary, both pipelines' memory)
go in ``details``."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Optional


@dataclass(frozen=True)
class TimeToTrain:
    """RCP steps x step + the evaluations at the benchmark's cadence + init inside the clock."""
    benchmark: str
    ruleset: str
    samples_to_converge: float    # the RCP mean (interpolated), in training samples
    rcp: str                      # 'RCP found' | 'RCP interpolation a..b' | 'smallest RCP (BS n)'
    steps: float
    step_s: float
    train_s: float                # steps x step_s
    evaluations: int              # run up to and including the one that meets the target
    eval_each_s: float
    evals_s: float                # evaluations x eval_each_s
    init_s: float
    total_s: float                # train_s + evals_s + init_s

    @property
    def minutes(self) -> float:
        return self.total_s / 60

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "minutes": self.minutes}


@dataclass(frozen=True)
class PlanResult:
    model: str                    # model.name
    scale: str                    # model.scale
    gpu: str
    world_size: int
    global_batch: int
    precision: str
    parameters: dict[str, Any]    # counts by part (the workload's own parts)
    memory_per_device_bytes: dict[str, float]   # the worst device's memory by term
    memory_needed_gib: float
    memory_usable_gib: float
    fits: bool
    step_s: float
    terms_s: dict[str, float]     # step time by term; they sum to step_s
    time_to_train: TimeToTrain
    dominant: str                 # the largest term
    pinch: str                    # the largest term other than compute ('none' if none)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def time_to_train_min(self) -> float:
        return self.time_to_train.minutes

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "time_to_train"}
        out["time_to_train"] = self.time_to_train.to_dict()
        return out

    def finite(self) -> bool:
        """Every number of the contract is finite (details aside)."""
        numbers = [self.memory_needed_gib, self.memory_usable_gib, self.step_s,
                   *self.terms_s.values(), *self.memory_per_device_bytes.values(),
                   *(v for k, v in self.time_to_train.to_dict().items()
                     if isinstance(v, (int, float)))]
        return all(math.isfinite(float(v)) for v in numbers)


def memory_terms(worst: dict[str, Any]) -> dict[str, float]:
    """The ``*_bytes`` terms of one device's memory dict (its total included)."""
    return {k: float(v) for k, v in worst.items()
            if k.endswith("_bytes") and isinstance(v, (int, float))}


def from_parts(plan: dict[str, Any], memory: dict[str, Any], *, model: str, scale: str,
               time_to_train: Optional[TimeToTrain] = None) -> PlanResult:
    """A PlanResult from a planner's step/memory arithmetic (a dict with gpu, world_size,
    global_batch, precision, parameters, memory_needed_gib, memory_usable_gib, fits, step_s,
    terms_s, dominant, pinch, time_to_train); every other key goes to ``details``."""
    core = ("gpu", "world_size", "global_batch", "precision", "parameters",
            "memory_needed_gib", "memory_usable_gib", "fits", "step_s", "terms_s", "dominant",
            "pinch", "time_to_train", "model", "scale", "workload")
    ttt = time_to_train or plan["time_to_train"]
    params = plan["parameters"]
    return PlanResult(
        model=model, scale=scale, gpu=str(plan["gpu"]), world_size=int(plan["world_size"]),
        global_batch=int(plan["global_batch"]), precision=str(plan["precision"]),
        parameters=dict(params) if isinstance(params, dict) else {"total": params},
        memory_per_device_bytes=memory_terms(memory),
        memory_needed_gib=float(plan["memory_needed_gib"]),
        memory_usable_gib=float(plan["memory_usable_gib"]), fits=bool(plan["fits"]),
        step_s=float(plan["step_s"]), terms_s={k: float(v) for k, v in plan["terms_s"].items()},
        time_to_train=ttt, dominant=str(plan["dominant"]), pinch=str(plan["pinch"]),
        details={k: v for k, v in plan.items() if k not in core})
