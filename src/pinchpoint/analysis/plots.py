"""Report plots: the metric against the swept axis per alternative with crossovers marked, and
stacked phase fractions per point (where the bottleneck moves). PNG via matplotlib, interactive
HTML via plotly (one page, plotly.js embedded so it opens offline)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from pinchpoint.analysis.crossover import NONE, Crossover, crossing_x, crossovers, winner
from pinchpoint.analysis.table import PHASES, Point

LABELS = {"time_to_train_s": "time to train (s)",
          "throughput_samples_per_s": "throughput (samples/s)",
          "dataset.batch_size": "global batch size (samples)",
          "checkpoint.interval": "checkpoint interval (steps)",
          "parallel.world_size": "ranks (world size)", "dataset.num_workers": "loader workers",
          "dataset.prefetch": "prefetch depth (batches)"}
COLORS = {"data_wait": "#d62728", "forward_backward": "#1f77b4", "communication": "#9467bd",
          "optimizer": "#2ca02c", "eval": "#ff7f0e", "checkpoint": "#8c564b"}


def label(name: str) -> str:
    if name in LABELS:
        return LABELS[name]
    for suffix, unit in (("_fraction", " (fraction of loop time)"), ("_bytes", " (bytes)"),
                         ("_s", " (s)"), ("_per_s", " (/s)")):
        if name.endswith(suffix):
            return name[: -len(suffix)].replace("_", " ") + unit
    return name


@dataclass
class Marked:
    """A crossover with where to draw it."""
    crossover: Crossover
    x: float
    y: Optional[float]


def find_crossovers(pts: list[Point], direction: str, log_x: bool) -> list[Marked]:
    """Where the best alternative changes along x (or, with one alternative, the bottleneck)."""
    alts = sorted({p.by for p in pts})
    xs = sorted({p.x for p in pts if isinstance(p.x, (int, float))})
    table = {(p.x, p.by): p for p in pts}
    if len(alts) < 2:
        labels = [table[(x, alts[0])].bottleneck for x in xs]
        return [Marked(c, _mid(c.low, c.high, log_x), None) for c in crossovers(xs, labels)]
    full = [x for x in xs if all((x, a) in table for a in alts)]
    labels = [winner({a: table[(x, a)].value() for a in alts}, direction) for x in full]
    marks = []
    for c in crossovers(full, labels):
        if NONE in (c.below, c.above):  # where results stop is not a crossover (shown as x)
            continue
        a, b = c.below, c.above
        if a in alts and b in alts:
            lo, hi = (table[(c.low, a)].value() - table[(c.low, b)].value(),
                      table[(c.high, a)].value() - table[(c.high, b)].value())
            # linear between the two measured points (the estimate; the plot's scale is display)
            xc = crossing_x(c.low, c.high, lo, hi) or _mid(c.low, c.high, log_x)
            t = _frac(c.low, c.high, xc, False)
            ya = table[(c.low, a)].value() + t * (table[(c.high, a)].value() -
                                                  table[(c.low, a)].value())
            marks.append(Marked(c, xc, ya if math.isfinite(ya) else None))
        else:
            marks.append(Marked(c, _mid(c.low, c.high, log_x), None))
    return marks


def _mid(lo: float, hi: float, log_x: bool) -> float:
    return math.sqrt(lo * hi) if log_x and lo > 0 else (lo + hi) / 2


def _frac(lo: float, hi: float, x: float, log_x: bool) -> float:
    if log_x and lo > 0:
        return (math.log(x) - math.log(lo)) / (math.log(hi) - math.log(lo))
    return (x - lo) / (hi - lo)


def is_log(pts: list[Point]) -> bool:
    xs = [p.x for p in pts if isinstance(p.x, (int, float))]
    return bool(xs) and min(xs) > 0 and max(xs) / min(xs) >= 8


def save_png(pts: list[Point], x: str, metric: str, marks: list[Marked], title: str,
             path: str) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    numeric = all(isinstance(p.x, (int, float)) for p in pts)
    log_x = numeric and is_log(pts)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 9),
                                      gridspec_kw={"height_ratios": [3, 2]})
    cats = sorted({str(p.x) for p in pts}, key=lambda s: (len(s), s))
    pos = (lambda v: v) if numeric else (lambda v: cats.index(str(v)))
    for alt in sorted({p.by for p in pts}):
        mine = [p for p in pts if p.by == alt]
        ok = [p for p in mine if math.isfinite(p.value())]
        top.plot([pos(p.x) for p in ok], [p.value() for p in ok], "o-", label=alt or metric)
        missed = [p for p in mine if not math.isfinite(p.value())]
        if missed:  # never reached the target (or failed): drawn on the axis floor
            top.plot([pos(p.x) for p in missed], [0] * len(missed), "x", ms=10, mew=2,
                     clip_on=False, color=top.lines[-1].get_color(),
                     label=f"{alt or metric}: no result ({missed[0].status})")
    for i, m in enumerate(marks):
        c = m.crossover
        top.axvline(m.x, color="k", ls="--", lw=1, label="crossover" if i == 0 else None)
        if m.y is not None:
            top.plot([m.x], [m.y], "k*", ms=14)
        top.annotate(f"{c.below} → {c.above}\n≈ {m.x:,.0f} (between {c.low:,} and {c.high:,})",
                     (m.x, 1), xycoords=("data", "axes fraction"), xytext=(4, -4),
                     textcoords="offset points", va="top", fontsize=8)
    if log_x:
        top.set_xscale("log", base=2)
    if numeric:
        ticks = sorted({p.x for p in pts})
        top.set_xticks(ticks, [f"{t:,}" for t in ticks], rotation=30)
    else:
        top.set_xticks(range(len(cats)), cats)
    top.set_xlabel(label(x))
    top.set_ylabel(label(metric))
    top.set_ylim(bottom=0)
    top.grid(alpha=0.3)
    top.legend(fontsize=8, loc="best")
    top.set_title(title)
    _phase_bars(bottom, pts)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def short(alt: str) -> str:
    """'dataset.mmap=true, storage=nfs' -> 'mmap=true, storage=nfs' (bar labels stay legible)."""
    return ", ".join(part.split("=", 1)[0].rsplit(".", 1)[-1] + "=" + part.split("=", 1)[1]
                     if "=" in part else part for part in alt.split(", "))


def _phase_bars(ax, pts: list[Point]) -> None:
    names = [f"{p.x}\n{short(p.by)}" if p.by else str(p.x) for p in pts]
    base = [0.0] * len(pts)
    for phase in PHASES:
        vals = [p.fractions()[phase] for p in pts]
        vals = [0.0 if math.isnan(v) else v for v in vals]
        if not any(vals):
            continue
        ax.bar(range(len(pts)), vals, bottom=base, color=COLORS[phase], label=phase)
        base = [b + v for b, v in zip(base, vals)]
    for i, p in enumerate(pts):
        ax.annotate(p.status if p.status != "success" else "", (i, 1.0), ha="center",
                    va="bottom", fontsize=7, color="#d62728")
    ax.set_xticks(range(len(pts)), names, fontsize=7)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("share of training-loop time")
    ax.set_title("where the time goes (phase fractions; the largest is the bottleneck)",
                 fontsize=10)
    ax.legend(fontsize=7, ncol=6, loc="upper center", bbox_to_anchor=(0.5, -0.25))


def save_html(pts: list[Point], x: str, metric: str, marks: list[Marked], title: str,
              table_html: str, path: str) -> Optional[str]:
    try:
        import plotly.graph_objects as go
    except ImportError:
        return None
    numeric = all(isinstance(p.x, (int, float)) for p in pts)
    top = go.Figure()
    for alt in sorted({p.by for p in pts}):
        mine = [p for p in pts if p.by == alt and math.isfinite(p.value())]
        top.add_trace(go.Scatter(
            x=[p.x for p in mine], y=[p.value() for p in mine], mode="lines+markers",
            name=alt or metric, customdata=[[p.bottleneck, p.status, len(p.runs)]
                                            for p in mine],
            hovertemplate=f"{x}=%{{x}}<br>{metric}=%{{y:.3f}}<br>bottleneck %{{customdata[0]}}"
                          "<br>%{customdata[1]} (%{customdata[2]} run(s))<extra></extra>"))
    for m in marks:
        top.add_vline(x=m.x, line_dash="dash",
                      annotation_text=f"{m.crossover.below} → {m.crossover.above}")
    top.update_layout(title=title, xaxis_title=label(x), yaxis_title=label(metric),
                      xaxis_type="log" if numeric and is_log(pts) else None)
    bars = go.Figure()
    names = [f"{p.x} {p.by}".strip() for p in pts]
    for phase in PHASES:
        vals = [p.fractions()[phase] for p in pts]
        if any(v and not math.isnan(v) for v in vals):
            bars.add_trace(go.Bar(x=names, y=vals, name=phase, marker_color=COLORS[phase]))
    bars.update_layout(barmode="stack", title="phase fractions per point",
                       yaxis_title="share of training-loop time")
    body = top.to_html(full_html=False, include_plotlyjs=True) + \
        bars.to_html(full_html=False, include_plotlyjs=False)
    with open(path, "w") as f:
        f.write(f"<html><head><meta charset='utf-8'><title>{title}</title></head><body>"
                f"{body}{table_html}</body></html>")
    return path
