"""A plan sweep drawn like a measured one: time-to-train against the swept axis, one line per
combination of the other swept settings, each point coloured by its pinch (the largest step
term besides compute: what to attack once compute dominates; the dominant term when that is
not compute); below, the step time of the best layout at each x split into its terms.
Crossovers reported: where the best layout changes along x, and where a layout's dominant
term or pinch changes.

Input: the rows ``pinchpoint plan`` prints (in memory or its CSV). No torch, no MLflow."""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

TERMS = ("compute", "memory", "bubble", "data_parallel", "tp", "pp", "cp", "ep", "overhead")
COLOURS = {"compute": "tab:blue", "memory": "tab:cyan", "bubble": "tab:orange",
           "data_parallel": "tab:red", "tp": "tab:purple", "pp": "tab:brown", "cp": "tab:pink",
           "ep": "tab:olive", "overhead": "tab:gray"}
RESULT_COLUMNS = {"world_size", "step_s", "time_to_train_min", "memory_gib", "fits",
                  "dominant", "pinch", "error"}


@dataclass
class PlanReport:
    text: str
    png: str
    crossovers: list = field(default_factory=list)


def _number(v: Any) -> Any:
    if isinstance(v, str):
        if v in ("", "None"):
            return None
        if v in ("True", "False"):
            return v == "True"
        try:
            f = float(v)
            return int(f) if f.is_integer() and "." not in v else f
        except ValueError:
            return v
    return v


def read_csv(path: str | Path) -> list[dict]:
    with open(path) as f:
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]


def swept(rows: list[dict]) -> list[str]:
    keys = []
    for k in rows[0]:
        if k in RESULT_COLUMNS or k.endswith("_s"):
            break
        keys.append(k)
    return keys


def lines(rows: list[dict], x: str, by: list[str]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("time_to_train_min") is None:
            continue
        name = ", ".join(f"{k.rsplit('.', 1)[-1]}={r[k]}" for k in by) or "plan"
        out.setdefault(name, []).append(r)
    for pts in out.values():
        pts.sort(key=lambda r: r[x])
    return dict(sorted(out.items(), key=lambda kv: [_number(part.split("=")[-1]) if
                                                     isinstance(_number(part.split("=")[-1]),
                                                                (int, float)) else 0
                                                     for part in kv[0].split(", ")]))


def crossovers(rows: list[dict], x: str, by: list[str]) -> list[dict]:
    found = []
    best_prev = None
    for xv in sorted({r[x] for r in rows if r.get("time_to_train_min") is not None}):
        fitting = [r for r in rows if r[x] == xv and r.get("fits") and
                   r.get("time_to_train_min") is not None]
        if not fitting:
            continue
        best = min(fitting, key=lambda r: r["time_to_train_min"])
        name = ", ".join(f"{k.rsplit('.', 1)[-1]}={best[k]}" for k in by) or "plan"
        if best_prev and best_prev[0] != name:
            found.append({"kind": "best layout", "low": best_prev[1], "high": xv,
                          "below": best_prev[0], "above": name})
        best_prev = (name, xv)
    for name, pts in lines(rows, x, by).items():
        for a, b in zip(pts, pts[1:]):
            for col in ("dominant", "pinch"):
                if a.get(col) != b.get(col):
                    found.append({"kind": f"{col} ({name})", "low": a[x], "high": b[x],
                                  "below": a.get(col), "above": b.get(col)})
    return found


def colour_term(r: dict) -> str:
    return r.get("pinch") if r.get("dominant") == "compute" and r.get("pinch") else \
        r.get("dominant", "compute")


def draw(rows: list[dict], x: str, by: Optional[list[str]], png: str | Path,
         title: Optional[str] = None) -> PlanReport:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [{k: _number(v) for k, v in r.items()} for r in rows]
    if not rows or x not in rows[0]:
        have = ", ".join(swept(rows)) if rows else "none"
        raise ValueError(f"--plot {x}: not a swept axis of this plan (swept: {have})")
    if not any(r.get("time_to_train_min") is not None for r in rows):
        raise ValueError(f"--plot {x}: no point of this plan is valid, nothing to draw (each "
                         "row's error says why)")
    if by is None:
        by = [k for k in swept(rows) if k != x]
    else:   # repeatable, and each may be a comma list: --by parallel.pp,parallel.cp
        by = [k.strip() for item in by for k in item.split(",") if k.strip()]
        unknown = [k for k in by if k not in rows[0]]
        if unknown:
            raise ValueError(f"--by {','.join(unknown)}: not a column of this plan (swept: "
                             f"{', '.join(swept(rows))})")
    groups = lines(rows, x, by)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 10),
                                      gridspec_kw={"height_ratios": [3, 2]})
    for name, pts in groups.items():
        xs = [p[x] for p in pts]
        ys = [p["time_to_train_min"] for p in pts]
        (line,) = top.plot(xs, ys, "-", lw=1, alpha=0.6, label=name if len(groups) <= 24 else None)
        for p in pts:
            c = COLOURS.get(colour_term(p), "k")
            top.scatter(p[x], p["time_to_train_min"], s=36, zorder=3, edgecolors=c,
                        facecolors=c if p["fits"] else "none")
    for term, colour in COLOURS.items():
        if any(colour_term(r) == term for r in rows if r.get("time_to_train_min")):
            top.scatter([], [], color=colour, label=f"pinch: {term}")
    top.scatter([], [], facecolors="none", edgecolors="k", label="does not fit (hollow)")
    top.set_yscale("log")
    numeric = all(isinstance(r[x], (int, float)) for r in rows)
    if numeric and min(r[x] for r in rows) > 0:
        top.set_xscale("log", base=2)
        ticks = sorted({r[x] for r in rows})
        top.set_xticks(ticks, [str(t) for t in ticks])
    top.set_xlabel(x)
    top.set_ylabel("predicted time-to-train (min)")
    top.grid(alpha=0.3, which="both")
    top.legend(fontsize=7, ncol=2, loc="best")
    top.set_title(title or f"plan sweep: time-to-train vs {x}")
    found = crossovers(rows, x, by)
    _best_terms(bottom, rows, x)
    fig.tight_layout()
    png = str(png)
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)
    text = "\n".join(f"crossover ({c['kind']}): {c['below']} -> {c['above']} between "
                     f"{x}={c['low']} and {c['high']}" for c in found) or \
        "crossover: none in the planned range"
    return PlanReport(text, png, found)


def _best_terms(ax, rows: list[dict], x: str) -> None:
    """Step time of the fastest fitting layout at each x, split into its terms."""
    xs = sorted({r[x] for r in rows if r.get("fits") and r.get("step_s") is not None},
                key=lambda v: (not isinstance(v, (int, float)), v))
    bests = [min((r for r in rows if r[x] == v and r.get("fits") and r.get("step_s")),
                 key=lambda r: r["time_to_train_min"]) for v in xs]
    bottom = [0.0] * len(xs)
    for term in TERMS:
        vals = [b.get(f"{term}_s") or 0.0 for b in bests]
        if any(vals):
            ax.bar(range(len(xs)), vals, bottom=bottom, color=COLOURS[term], label=term)
            bottom = [a + b for a, b in zip(bottom, vals)]
    ax.set_xticks(range(len(xs)), [str(v) for v in xs])
    ax.set_xlabel(f"{x} (fastest fitting layout at each value)")
    ax.set_ylabel("step time (s) by term")
    ax.legend(fontsize=7, ncol=3)
    ax.grid(alpha=0.3, axis="y")


def main_from_csv(path: str, x: str, by: Optional[list[str]] = None) -> PlanReport:
    """Draw a plan CSV written by ``pinchpoint plan`` (the PNG lands next to it)."""
    return draw(read_csv(path), x, by, Path(path).with_suffix(".png"))
