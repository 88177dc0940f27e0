"""One row per sweep point: swept values, time-to-train (olympic mean over seeds), throughput,
phase fractions, bottleneck, status. Written as a terminal table and as CSV."""
from __future__ import annotations

import csv
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

from pinchpoint.analysis.runs import ReportError, RunRecord, number
from pinchpoint.metric_names import PHASES


def olympic_mean(values: list[float]) -> float:
    """MLPerf's result summarizer: with 3+ runs drop the fastest and the slowest, average the
    rest (a run that missed the target is inf, so one such run is dropped as the slowest)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) >= 3:
        ordered = ordered[1:-1]
    return sum(ordered) / len(ordered)


@dataclass
class Point:
    x: object                      # the swept axis value (a number when it is one)
    by: str                        # the alternative ("" when there is none)
    runs: list[RunRecord] = field(default_factory=list)
    metric: str = "time_to_train_s"

    def _values(self, name: str, success_only: bool) -> list[float]:
        out = []
        for r in self.runs:
            v = r.metrics.get(name)
            if name == "time_to_train_s" and r.status != "success":
                v = math.inf   # not at target: no time-to-train (MLPerf counts it as a miss)
            if v is not None and not (success_only and r.status != "success"):
                out.append(float(v))
        return out

    def value(self, name: Optional[str] = None) -> float:
        name = name or self.metric
        values = self._values(name, success_only=False)
        if name == "time_to_train_s":
            return olympic_mean(values)
        finite = [v for v in values if math.isfinite(v)]
        return sum(finite) / len(finite) if finite else math.nan

    @property
    def bottleneck(self) -> str:
        counts = Counter(r.tags.get("bottleneck") for r in self.runs if r.tags.get("bottleneck"))
        return counts.most_common(1)[0][0] if counts else ""

    @property
    def status(self) -> str:
        counts = Counter(r.status for r in self.runs)
        if len(counts) == 1:
            return next(iter(counts))
        return ", ".join(f"{n} {s}" for s, n in counts.most_common())

    def fractions(self) -> dict[str, float]:
        return {p: self.value(f"{p}_fraction") for p in PHASES}


def points(runs: list[RunRecord], x: str, by: list[str], metric: str,
           seed_key: str = "seed") -> list[Point]:
    """Group runs by (x, alternative); runs differing only in seed are one point."""
    for key in [x, *by]:
        missing = [r.name for r in runs if r.get(key) is None]
        if len(missing) == len(runs):
            raise ReportError(f"{key!r} is not a setting of these runs (see --x / --by)")
    groups: dict[tuple, Point] = {}
    for r in runs:
        raw = r.get(x)
        xv = number(raw)
        xv = raw if xv is None else (int(xv) if xv.is_integer() else xv)
        alt = ", ".join(f"{k}={r.get(k)}" for k in by if k != seed_key)
        groups.setdefault((str(xv), alt), Point(xv, alt, metric=metric)).runs.append(r)
    return sorted(groups.values(), key=lambda p: (p.by, _order(p.x)))


def _order(x) -> tuple:
    return (0, x, "") if isinstance(x, (int, float)) else (1, 0, str(x))


# data_wait split into storage and CPU (what a run recorded; FLUX.1's raw pipeline decodes and
# encodes, every pipeline reads), in ms per step.
DATA_SPLIT = {"data/read_seconds_per_step": "read_ms_per_step",
              "data/decode_seconds_per_step": "decode_ms_per_step",
              "data/encode_seconds_per_step": "encode_ms_per_step"}


def rows(pts: list[Point], x: str, metric: str) -> list[dict]:
    split = [k for k in DATA_SPLIT if any(k in r.metrics for p in pts for r in p.runs)]
    out = []
    for p in pts:
        row = {x: p.x}
        if p.by:
            row["alternative"] = p.by
        row.update({"seeds": len(p.runs), "time_to_train_s": p.value("time_to_train_s"),
                    "throughput_samples_per_s": p.value("throughput_samples_per_s")})
        if metric not in row:
            row[metric] = p.value(metric)
        row.update({f"{k}_fraction": v for k, v in p.fractions().items()})
        row.update({DATA_SPLIT[k]: p.value(k) * 1000 for k in split})
        row.update({"bottleneck": p.bottleneck, "status": p.status})
        out.append(row)
    return out


def write_csv(table: list[dict], path: str) -> str:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(table[0]))
        w.writeheader()
        w.writerows(table)
    return path


def format_table(table: list[dict]) -> str:
    """A fixed-width text table (fractions as percentages)."""
    def cell(key: str, v) -> str:
        if isinstance(v, float):
            if key.endswith("_fraction"):
                return "-" if math.isnan(v) else f"{v:.0%}"
            return "inf" if math.isinf(v) else ("-" if math.isnan(v) else f"{v:,.2f}")
        return str(v)

    heads = [k.replace("_fraction", "").replace("throughput_samples_per_s", "samples/s")
             for k in table[0]]
    body = [[cell(k, v) for k, v in row.items()] for row in table]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(heads)]
    line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(heads), line(["-" * w for w in widths]), *map(line, body)])
