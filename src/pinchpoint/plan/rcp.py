"""Steps to converge from the Reference Convergence Points that ship with mlperf-logging
(``mlperf_logging/rcp_checker/training_<ruleset>/rcps_<benchmark>.json``), found the way its
RCP checker finds them: olympic mean of each reference's runs, the pruned set of references,
an exact batch-size match, else linear interpolation between the neighbouring batch sizes,
else (below the smallest) the smallest reference. That last rule is the checker's, but a batch
below every reference is refused here unless asked for (``below_smallest=True``,
``plan.below_smallest_rcp=true``): planned silently it charges a proxy's batch the smallest
reference's samples (DLRM at 2,048: 1.45 M steps), a plan nobody meant to make. The checker module itself imports pandas and
scipy (~2.5 s); this reads the same files with the same rules in milliseconds, and
tests/test_plan_rcp.py checks it against ``RCP_Checker`` on every shipped file.

Units: each record names its own ("samples to converge" or "Epochs to converge", the LLM files
counting samples under the latter); what one unit is in training samples is the workload's
MLPerfRules (``samples_per_rcp_unit``: DLRM's RCPs count epochs of Criteo days 0-22).
"""
from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from pinchpoint.errors import ConfigError

@dataclass(frozen=True)
class Convergence:
    benchmark: str
    ruleset: str
    global_batch: int
    samples: float          # training samples to reach the target (RCP mean)
    how: str                # 'RCP found' | 'RCP interpolation a..b' | 'smallest RCP (BS n)'

    @property
    def steps(self) -> float:
        return self.samples / self.global_batch


def rcp_dir(ruleset: str) -> Path:
    spec = importlib.util.find_spec("mlperf_logging")
    if spec is None:
        raise ConfigError("mlperf.ruleset", ruleset, "mlperf-logging installed (pip install "
                          "mlperf-logging): its RCP files give the steps to converge")
    return Path(list(spec.submodule_search_locations)[0]) / "rcp_checker" / f"training_{ruleset}"


@lru_cache(maxsize=None)
def references(benchmark: str, ruleset: str) -> tuple[tuple[int, float], ...]:
    """(batch size, olympic-mean convergence) of the pruned references, by batch size."""
    path = rcp_dir(ruleset) / f"rcps_{benchmark}.json"
    if not path.exists():
        have = sorted(p.stem.removeprefix("rcps_") for p in path.parent.glob("rcps_*.json"))
        raise ConfigError("mlperf.ruleset", ruleset,
                          f"a ruleset with RCPs for {benchmark} (training_{ruleset} has: "
                          f"{', '.join(have) or 'no such folder'})")
    raw = json.loads(path.read_text())
    points = []
    for record in raw.values():
        unit = next(k for k in ("samples to converge", "Epochs to converge") if k in record)
        runs = sorted(record[unit])
        drop = 4 if record["Benchmark"] == "unet3d" else 1
        kept = runs[drop:len(runs) - drop]
        points.append((int(record["BS"]), sum(kept) / len(kept)))
    points.sort()
    return tuple(_prune(points))


def _interp(bs: float, low: tuple[int, float], high: tuple[int, float]) -> float:
    (b0, m0), (b1, m1) = low, high
    return m0 + (m1 - m0) * (bs - b0) / (b1 - b0)


def _prune(points: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """The checker's pruning: drop references below the fastest-converging batch size, then any
    reference slower than the interpolation of its neighbours."""
    fastest = min(points, key=lambda p: p[1])
    kept = [p for p in points if p[0] >= fastest[0]]
    i = 1
    while i < len(kept) - 1:
        if kept[i][1] > _interp(kept[i][0], kept[i - 1], kept[i + 1]):
            del kept[i]
            i -= 1
        i += 1
    return kept


def batch_sizes(benchmark: str, ruleset: str) -> list[int]:
    """Every reference batch size of a benchmark's RCP file (before the checker's pruning)."""
    references(benchmark, ruleset)          # refuses a missing file
    raw = json.loads((rcp_dir(ruleset) / f"rcps_{benchmark}.json").read_text())
    return sorted({int(r["BS"]) for r in raw.values()})


def convergence(benchmark: str, global_batch: int, ruleset: str = "6.0.0",
                field: str = "global_batch_size", below_smallest: bool = False,
                samples_per_unit: float = 1) -> Convergence:
    """``samples_per_unit``: training samples per unit of the RCP file (the workload's
    ``MLPerfRules.samples_per_rcp_unit``)."""
    refs = references(benchmark, ruleset)
    scale = samples_per_unit
    exact = [m for b, m in refs if b == global_batch]
    if exact:
        return Convergence(benchmark, ruleset, global_batch, exact[0] * scale, "RCP found")
    below = [p for p in refs if p[0] < global_batch]
    above = [p for p in refs if p[0] > global_batch]
    if below and above:
        low, high = below[-1], above[0]
        return Convergence(benchmark, ruleset, global_batch, _interp(global_batch, low, high)
                           * scale, f"RCP interpolation {low[0]}..{high[0]}")
    if above and not below_smallest:
        raise ConfigError(field, global_batch,
                          f"a global batch of at least the smallest reference convergence point "
                          f"for {benchmark} under ruleset {ruleset}; its RCP batch sizes: "
                          f"{', '.join(str(b) for b in batch_sizes(benchmark, ruleset))} (below "
                          "them MLPerf scores a run at the smallest one's samples: "
                          "plan.below_smallest_rcp=true plans that)")
    if above:
        # The checker accepts a smaller batch than any reference if it converges no faster than
        # the smallest one: the score is normalised to at least that reference's mean.
        return Convergence(benchmark, ruleset, global_batch, refs[0][1] * scale,
                           f"smallest RCP (BS {refs[0][0]})")
    raise ConfigError(field, global_batch,
                      f"at most {refs[-1][0]} for {benchmark} under ruleset {ruleset} (the "
                      "largest reference convergence point; above it there is no RCP)")
