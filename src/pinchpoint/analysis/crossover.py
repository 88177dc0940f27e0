"""Where does the answer change along an ordered axis? Shared by the crossover sweeper (to decide
what to run next) and the report (to mark crossovers on a dense grid). Pure Python, no torch."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Optional, Sequence

TIE = "tie"
NONE = "none"      # no alternative has a result (e.g. none reached the quality target)


@dataclass
class Crossover:
    """The answer is ``below`` at x=low and ``above`` at x=high (adjacent measured points)."""
    low: Any
    high: Any
    below: str
    above: str

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self, axis: str) -> str:
        between = f"between {axis}={self.low} and {axis}={self.high}"
        if self.above == NONE:
            return f"{self.below} until no alternative has a result ({between})"
        if self.below == NONE:
            return f"no alternative has a result, then {self.above} ({between})"
        return f"{self.below} -> {self.above} {between}"


def approx(x: float) -> str:
    """A crossover's estimated position as a reader wants it: 1,536 for a batch size, 0.61 for
    a bandwidth in Gbit/s (three significant digits below 100)."""
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def winner(values: Mapping[str, float], direction: str = "minimize") -> str:
    """The alternative with the best value; ``tie`` when the best is shared, ``none`` when no
    alternative has a finite value."""
    finite = {k: v for k, v in values.items() if v is not None and math.isfinite(v)}
    if not finite:
        return NONE
    best = (min if direction == "minimize" else max)(finite.values())
    leaders = [k for k, v in finite.items() if v == best]
    return leaders[0] if len(leaders) == 1 else TIE


def crossovers(xs: Sequence[Any], labels: Sequence[str]) -> list[Crossover]:
    """Intervals between neighbouring points (xs ascending) whose labels differ."""
    return [Crossover(xs[i], xs[i + 1], labels[i], labels[i + 1])
            for i in range(len(xs) - 1) if labels[i] != labels[i + 1]]


def crossing_x(x0: float, x1: float, d0: float, d1: float, log: bool = False) -> Optional[float]:
    """Where the difference between two curves reaches zero, interpolated between two points
    (in log x when the axis is a log scale); None when it does not change sign."""
    if not (math.isfinite(d0) and math.isfinite(d1)) or d0 * d1 > 0 or d0 == d1:
        return None
    t = d0 / (d0 - d1)
    if log and x0 > 0 and x1 > 0:
        return math.exp(math.log(x0) + t * (math.log(x1) - math.log(x0)))
    return x0 + t * (x1 - x0)
