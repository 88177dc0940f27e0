"""One point of a plan grid and its table row: what ``pinchpoint plan`` and the grid sweeper's
``-m plan_only=true`` (sweepers/plan_grid.py, which composes and validates the points) hand to
the planner and print. Pure: no Hydra, no composing."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from pinchpoint.plan.result import PlanResult

COLUMNS = ("world_size", "global_batch", "precision", "step_s", "time_to_train_min",
           "memory_gib", "fits", "dominant", "pinch")


@dataclass
class Point:
    settings: dict                       # axis name -> value
    plan: Optional[PlanResult] = None
    error: Optional[str] = None
    row: dict = field(default_factory=dict)

    @property
    def status(self) -> str:
        """fit | do not fit | invalid (refused, or not plannable)."""
        if self.plan is None:
            return "invalid"
        return "fit" if self.plan.fits else "do not fit"


def summary(points: list[Point], seconds: Optional[float] = None) -> str:
    """'N points planned [in S s]: F fit, D do not fit, B invalid': each point counted once,
    the counts sum to N."""
    count = {k: 0 for k in ("fit", "do not fit", "invalid")}
    for p in points:
        count[p.status] += 1
    took = "" if seconds is None else f" in {seconds:.2f} s"
    return f"{len(points)} points planned{took}: " + ", ".join(f"{n} {k}"
                                                             for k, n in count.items())


def row_of(point: Point) -> dict:
    row = dict(point.settings)
    p = point.plan
    if p is None:
        row.update({c: None for c in COLUMNS}, error=point.error)
        return row
    row.update(world_size=p.world_size, global_batch=p.global_batch, precision=p.precision,
               step_s=p.step_s, time_to_train_min=p.time_to_train.minutes,
               memory_gib=p.memory_needed_gib, fits=p.fits, dominant=p.dominant, pinch=p.pinch,
               **{f"{k}_s": v for k, v in p.terms_s.items()}, error=None)
    return row
