"""One point of a plan grid and its table row: what ``pinchpoint plan`` and the grid sweeper's
``-m plan_only=true`` (sweepers/plan_grid.py, which composes and validates the points) hand to
the planner and print. Pure: no Hydra, no composing."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

COLUMNS = ("world_size", "global_batch", "precision", "step_s", "time_to_train_min", "memory_gib", "fits", "dominant",
           "pinch")
PLANNED = frozenset({"step_s", "terms_s", "time_to_train"})   # what a full plan gives
NO_TIME = "no time-to-train yet"


@dataclass
class Point:
    settings: dict                       # axis name -> value
    plan: Optional[dict] = None
    error: Optional[str] = None
    row: dict = field(default_factory=dict)

    @property
    def status(self) -> str:
        """fit | do not fit | invalid (refused, or not plannable) | no time-to-train yet (its
        workload's planner gives no step time)."""
        if self.plan is None:
            return "invalid"
        if not PLANNED <= set(self.plan):
            return NO_TIME
        return "fit" if self.plan["fits"] else "do not fit"


def summary(points: list[Point], seconds: Optional[float] = None) -> str:
    """'N points planned [in S s]: F fit, D do not fit, B invalid[, T no time-to-train yet]':
    each point counted once, the counts sum to N."""
    count = {k: 0 for k in ("fit", "do not fit", "invalid", NO_TIME)}
    for p in points:
        count[p.status] += 1
    took = "" if seconds is None else f" in {seconds:.2f} s"
    counts = [f"{n} {k}" for k, n in count.items() if n or k != NO_TIME]
    return f"{len(points)} points planned{took}: " + ", ".join(counts)


def row_of(point: Point) -> dict:
    row = dict(point.settings)
    p = point.plan
    if p is not None and not PLANNED <= set(p):
        point.error = ("this workload's planner gives no step time or time-to-train yet "
                       f"(it returns: {', '.join(sorted(p))[:200]})")
        row.update({c: None for c in COLUMNS}, fits=p.get("fits"), error=point.error)
        return row
    if p is None:
        row.update({c: None for c in COLUMNS}, error=point.error)
        return row
    row.update(world_size=p.get("world_size"), global_batch=p.get("global_batch"),
               precision=p.get("precision"), step_s=p["step_s"],
               time_to_train_min=p["time_to_train"]["time_to_train_min"],
               memory_gib=p["memory_needed_gib"], fits=p["fits"], dominant=p["dominant"],
               pinch=p.get("pinch", "none"),
               **{f"{k}_s": v for k, v in p["terms_s"].items()}, error=None)
    return row
