"""Adaptive crossover search: along one ordered axis, find where the best of two or more
alternatives changes (or where the dominant phase changes) with far fewer runs than a dense grid.

The axis values are the dense grid a user would otherwise run (a list, a range, or an interval cut
to ``resolution``). Round 1 runs ``coarse`` evenly spaced values (both ends included); each later
round bisects every interval whose ends disagree, until each such interval joins neighbouring
values. A flip that happens and un-happens between two coarse points is not seen: raise
``coarse`` when the curves may cross twice.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from omegaconf import DictConfig

from pinchpoint.analysis.crossover import Crossover, crossovers, winner
from pinchpoint.sweepers import common
from pinchpoint.sweepers.space import (Axis, SweepError, check_keys, exits_cleanly, parse,
                                       render)

log = logging.getLogger(__name__)
PHASE = ("dominant_phase", "phase", "bottleneck")   # spellings of "compare dominant phases"
VALIDATE_ALL_UP_TO = 10_000   # points checked before the first launch (sweepers/preflight.py)


# --- the search, independent of Hydra ---------------------------------------------------------
@dataclass
class Bisection:
    """Which indices of the dense grid to measure next, given the labels measured so far."""
    n: int
    coarse: int
    labels: dict[int, str] = field(default_factory=dict)

    def first(self) -> list[int]:
        k = max(2, min(self.coarse, self.n))
        return sorted({round(i * (self.n - 1) / (k - 1)) for i in range(k)})

    def next(self) -> list[int]:
        seen = sorted(self.labels)
        return [(i + j) // 2 for i, j in zip(seen, seen[1:])
                if j - i > 1 and self.labels[i] != self.labels[j]]


def search(n: int, coarse: int, measure: Callable[[list[int]], dict[int, str]]) -> Bisection:
    """Run the bisection with ``measure(indices) -> {index: label}``; returns the final state."""
    state = Bisection(n, coarse)
    todo = state.first()
    while todo:
        state.labels.update(measure(todo))
        todo = state.next()
    return state


def dense_values(axis: Axis, resolution: Optional[float]) -> list:
    """The ordered dense grid of an axis; refuses axes without an order."""
    if not axis.is_numeric():
        raise SweepError(f"crossover axis {axis.key!r} is not ordered: its values "
                         f"{axis.values} are not numbers (use it as hydra.sweeper.by instead)")
    if axis.kind != "interval":
        if resolution is not None:
            log.info("hydra.sweeper.resolution is ignored: %s lists its values", axis.key)
        return sorted(set(axis.values))
    if resolution is None or resolution <= 0 or (axis.log and resolution <= 1):
        raise SweepError(f"hydra.sweeper.resolution={resolution!r}: an interval axis "
                         f"({axis.key}) needs the width to locate a crossover to: a step > 0, or "
                         "a factor > 1 with tag(log, ...)")
    values, x = [], float(axis.low)
    while x < axis.high * (1 - 1e-12):
        values.append(x)
        x = x * resolution if axis.log else x + resolution
    values.append(float(axis.high))
    if axis.integer:
        values = [int(round(v)) for v in values]
    return sorted(set(values))


# --- the Hydra sweeper ------------------------------------------------------------------------
class CrossoverSearch(common.LaunchingSweeper):
    def __init__(self, axis: Optional[str] = None, by: Optional[str] = None,
                 metric: str = "time_to_train_s", direction: str = "minimize", coarse: int = 3,
                 resolution: Optional[float] = None, params: Optional[DictConfig] = None,
                 validator: Optional[str] = common.AUTO, **unused: Any) -> None:
        if direction not in ("minimize", "maximize"):
            raise SweepError(f"hydra.sweeper.direction={direction!r}: minimize or maximize")
        if not isinstance(coarse, int) or coarse < 2:
            raise SweepError(f"hydra.sweeper.coarse={coarse!r}: an integer >= 2 (both ends)")
        self.axis_key, self.by_key = axis, by
        self.metric, self.direction, self.coarse = metric, direction, coarse
        self.resolution, self.params, self.validator = resolution, params, validator
        self.job_idx = 0

    @exits_cleanly
    def sweep(self, arguments: list[str]) -> list[common.PointResult]:
        with self.closing_parent():
            return self._sweep(arguments)

    def _sweep(self, arguments: list[str]) -> list[common.PointResult]:
        space = parse(self.params, arguments)
        check_keys(space, self.config)
        axis, by = self._axes(space)
        xs = dense_values(axis, self.resolution)
        alts = [render(v) for v in by.values] if by else [""]
        base = space.fixed_overrides()

        def point(i: int, alt: str) -> list[str]:
            return [*base, f"{axis.key}={render(xs[i])}", *([f"{by.key}={alt}"] if by else [])]

        checker = common.PointChecker(self.hydra_context, self.config, self.validator)
        every = [point(i, a) for i in range(len(xs)) for a in alts]
        checker.require_all(every if len(every) <= VALIDATE_ALL_UP_TO else
                            [point(i, a) for i in Bisection(len(xs), self.coarse).first()
                             for a in alts])
        results: dict[tuple[int, str], common.PointResult] = {}

        def measure(indices: list[int]) -> dict[int, str]:
            batch = [point(i, a) for i in indices for a in alts]
            if len(every) > VALIDATE_ALL_UP_TO:
                checker.require_all(batch)
            log.info("crossover round: %s=%s", axis.name, [xs[i] for i in indices])
            returns = self.launch(batch, self.job_idx)
            self.job_idx += len(returns)
            for (i, a), res in zip([(i, a) for i in indices for a in alts],
                                   common.read_results(returns)):
                results[(i, a)] = res
            return {i: self._label(i, alts, by, results) for i in indices}

        state = search(len(xs), self.coarse, measure)
        seen = sorted(state.labels)
        found = crossovers([xs[i] for i in seen], [state.labels[i] for i in seen])
        self._record(axis, by, xs, alts, state, found, results)
        return list(results.values())

    def _axes(self, space) -> tuple[Axis, Optional[Axis]]:
        swept = dict(space.axes)
        names = ", ".join(swept) or "none"
        key = self.axis_key
        if key is None:
            numeric = [k for k, a in swept.items() if a.is_numeric()]
            if len(numeric) != 1:
                raise SweepError("set hydra.sweeper.axis to the ordered axis (swept keys: "
                                 f"{names})")
            key = numeric[0]
        axis = _find(swept, key)
        if axis is None:
            raise SweepError(f"hydra.sweeper.axis={key!r} is not swept: give its values, e.g. "
                             f"{key}=choice(...) (swept keys: {names})")
        del swept[axis.key]
        if self.by_key in PHASE:
            by = None
        elif self.by_key is not None:
            by = _find(swept, self.by_key)
            if by is None:
                raise SweepError(f"hydra.sweeper.by={self.by_key!r} is not swept: give its "
                                 f"alternatives, e.g. {self.by_key}=a,b (swept keys: {names})")
        else:
            by = next(iter(swept.values()), None)
        if by is not None:
            del swept[by.key]
            if by.kind == "interval" or len(by.values) < 2:
                raise SweepError(f"hydra.sweeper.by={by.key}: a crossover needs two or more "
                                 "listed alternatives, e.g. dataset.mmap=true,false")
        if swept:
            raise SweepError(f"crossover sweeps one axis and one alternatives axis; also swept: "
                             f"{', '.join(swept)} (fix them, or use the grid or Optuna sweeper)")
        return axis, by

    def _label(self, i: int, alts: list[str], by: Optional[Axis], results) -> str:
        if by is None or self.by_key in PHASE:
            return "|".join(str(results[(i, a)].bottleneck or results[(i, a)].status)
                            for a in alts)
        values = {f"{by.name}={a}": results[(i, a)].value(self.metric, self.direction)
                  for a in alts}
        return winner(values, self.direction)

    def _record(self, axis: Axis, by, xs, alts, state: Bisection, found: list[Crossover],
                results) -> None:
        runs, dense = len(results), len(xs) * len(alts)
        compare = f"{by.name} by {self.metric} ({self.direction})" if by else "dominant phase"
        summary = {"axis": axis.name, "by": by.name if by else "dominant_phase",
                   "metric": self.metric if by else "bottleneck", "direction": self.direction,
                   "values": xs, "measured": [xs[i] for i in sorted(state.labels)],
                   "labels": {str(xs[i]): state.labels[i] for i in sorted(state.labels)},
                   "crossovers": [c.to_dict() for c in found], "runs": runs,
                   "dense_grid_runs": dense, "run_fraction": runs / dense,
                   "points": [{"overrides": r.overrides, "status": r.status,
                               "bottleneck": r.bottleneck, "run_id": r.run_id,
                               self.metric: r.metrics.get(self.metric)}
                              for r in results.values()]}
        text = "; ".join(c.describe(axis.name) for c in found) or "no crossover in range"
        log.info("crossover of %s along %s: %s (%d runs; a dense grid is %d)", compare,
                 axis.name, text, runs, dense)
        path = os.path.join(self.config.hydra.sweep.dir, "crossover.json")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump(summary, f, indent=1, default=str)
        parent = common.ParentRun(self.config)
        parent.set_tags({"pinchpoint.sweeper": "crossover", "pinchpoint.x": axis.name,
                         "pinchpoint.by": by.name if by else "dominant_phase",
                         "crossover.metric": summary["metric"],
                         "crossover.direction": self.direction,
                         "crossover.intervals": json.dumps(summary["crossovers"], default=str),
                         "crossover.summary": text})
        parent.log_metrics({"crossover_runs": runs, "crossover_dense_grid_runs": dense,
                            "crossover_count": len(found),
                            "crossover_run_fraction": runs / dense})
        parent.log_artifact(path)


def _find(swept: dict[str, Axis], key: str) -> Optional[Axis]:
    for k, a in swept.items():
        if key in (k, a.name):
            return a
    return None


__all__: Sequence[str] = ["CrossoverSearch", "Bisection", "search", "dense_values"]
