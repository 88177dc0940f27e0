"""Axes as Optuna distributions, the way hydra-optuna-sweeper maps them, so a search space
written for that plugin samples the same way here:

- ``choice(...)``, ``a,b``, ``shuffle(range(...))`` -> categorical (no order);
- ``range(lo, hi, step)`` -> an ordered int distribution (a float one when any bound or the
  step is a float), ``hi`` included;
- ``interval(lo, hi)`` -> float, ``int(interval(..))`` or tag ``int`` -> int, tag ``log`` -> log.

The grid sampler lists a range as Python's range does (``hi`` excluded), again as upstream.
"""
from __future__ import annotations

import itertools
import json
import math

from pinchpoint.sweepers.space import Axis, Space, SweepError


def distribution(axis: Axis):
    from optuna.distributions import (CategoricalDistribution, FloatDistribution,
                                      IntDistribution)

    if axis.kind == "interval":
        cls = IntDistribution if axis.integer else FloatDistribution
        return cls(axis.low, axis.high, log=axis.log)
    if axis.kind == "range" and not axis.shuffle:
        if any(isinstance(v, float) for v in (axis.low, axis.high, axis.step)):
            return FloatDistribution(float(axis.low), float(axis.high),
                                     step=float(axis.step) if axis.step else None)
        return IntDistribution(int(axis.low), int(axis.high), step=int(axis.step or 1))
    return CategoricalDistribution(axis.values)


def grid_choices(key: str, axis: Axis) -> list:
    """What the grid sampler walks through for one axis."""
    if axis.kind == "interval":
        raise SweepError(f"{key}: the grid sampler needs discrete values (choice or range), "
                         "not interval(...)")
    return list(axis.values)


def every_point(space: Space, limit: int = 100_000):
    """Every point of a finite space (nothing when an axis is continuous or the grid is huge)."""
    axes = list(space.axes.items())
    if any(a.kind == "interval" for _, a in axes) or \
            math.prod(len(a.values) for _, a in axes) > limit:
        return
    for combo in itertools.product(*(_values(a) for _, a in axes)):
        yield {k: v for (k, _), v in zip(axes, combo)}


def _values(axis: Axis) -> list:
    """An axis's values as the sampler can draw them (a range's stop included)."""
    values = list(axis.values)
    if axis.kind == "range" and not axis.shuffle and values and axis.step and \
            math.isclose((axis.high - axis.low) / axis.step,
                         round((axis.high - axis.low) / axis.step)):
        values.append(axis.high)
    return values


def freeze(params: dict) -> tuple:
    """A hashable key for one point's parameters."""
    return tuple(sorted((k, json.dumps(v)) for k, v in params.items()))
