"""Report plots: the metric against the swept axis per alternative with crossovers marked, and
stacked phase fractions per point (where the bottleneck moves); one run's phase chart. PNG via matplotlib, interactive
HTML via plotly (plotly.min.js saved once beside the page, so it opens offline)."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Optional

from pinchpoint.analysis.crossover import (NONE, Crossover, approx, crossing_x, crossovers,
                                           winner)
from pinchpoint.analysis.table import Point
from pinchpoint.metric_names import PHASES

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


def phase_changes(pts: list[Point]) -> list[tuple[str, Crossover]]:
    """Per alternative, where its bottleneck (dominant phase) changes along x: with several
    alternatives (e.g. --by parallel) the crossovers above compare the alternatives, and these
    say where each one's time moves (e.g. ep4: communication -> forward_backward)."""
    alts = sorted({p.by for p in pts})
    if len(alts) < 2:
        return []
    out = []
    for alt in alts:
        mine = sorted((p for p in pts if p.by == alt and isinstance(p.x, (int, float))
                       and p.bottleneck), key=lambda p: p.x)
        out += [(alt, c) for c in crossovers([p.x for p in mine], [p.bottleneck for p in mine])]
    return out


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
    import matplotlib.pyplot as plt

    fig = figure(pts, x, metric, marks, title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def figure(pts: list[Point], x: str, metric: str, marks: list[Marked], title: str):
    """The metric per alternative along x (crossovers marked); points without a value (did not
    reach the target, or failed) in a band of their own below, never on the value axis."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    numeric = all(isinstance(p.x, (int, float)) for p in pts)
    missed = [p for p in pts if not math.isfinite(p.value())]
    rows = [3, 0.35 + 0.25 * len({p.by for p in missed}), 2] if missed else [3, 2]
    fig, axes = plt.subplots(len(rows), 1, figsize=(10, 9 + (1 if missed else 0)),
                             gridspec_kw={"height_ratios": rows})
    top, bottom = axes[0], axes[-1]
    cats = sorted({str(p.x) for p in pts}, key=lambda s: (len(s), s))
    pos = (lambda v: v) if numeric else (lambda v: cats.index(str(v)))
    alts = sorted({p.by for p in pts})
    color = {a: f"C{i % 10}" for i, a in enumerate(alts)}
    for alt in alts:
        ok = [p for p in pts if p.by == alt and math.isfinite(p.value())]
        if ok:   # an alternative with no value anywhere gets no line (and no legend entry)
            # categories (storage=local,nvme,nfs) have no order to draw a line along
            top.plot([pos(p.x) for p in ok], [p.value() for p in ok],
                     "o-" if numeric else "o", color=color[alt], label=alt or metric)
    _crossover_marks(top, marks)
    if numeric:
        _phase_change_marks(top, pts, color, is_log(pts))
    _x_axis(top, pts, x, numeric, cats)
    top.set_ylabel(label(metric))
    top.set_ylim(bottom=0)
    top.grid(alpha=0.3)
    if top.get_legend_handles_labels()[0]:
        top.legend(fontsize=8, loc="best")
    top.set_title(title)
    if missed:
        _missed_band(axes[1], top, missed, alts, color, pos)
    _phase_bars(bottom, pts)
    fig.tight_layout()
    return fig


def _crossover_marks(ax, marks: list[Marked]) -> None:
    for i, m in enumerate(marks):
        c = m.crossover
        ax.axvline(m.x, color="k", ls="--", lw=1, label="crossover" if i == 0 else None)
        if m.y is not None:
            ax.plot([m.x], [m.y], "k*", ms=14)
        ax.annotate(f"{c.below} → {c.above}\n≈ {approx(m.x)} (between {c.low:,} and {c.high:,})",
                    (m.x, 1), xycoords=("data", "axes fraction"), xytext=(4, -4),
                    textcoords="offset points", va="top", fontsize=8)


def _x_axis(ax, pts: list[Point], x: str, numeric: bool, cats: list[str]) -> None:
    if numeric and is_log(pts):
        ax.set_xscale("log", base=2)
    if numeric:
        ticks = sorted({p.x for p in pts})
        ax.set_xticks(ticks, [f"{t:,}" for t in ticks], rotation=30)
        lo, hi = ticks[0], ticks[-1]
        if ax.get_xscale() == "log":   # room for the end points' markers
            ax.set_xlim(lo / 1.2, hi * 1.2)
        else:
            pad = 0.05 * (hi - lo) or 1
            ax.set_xlim(lo - pad, hi + pad)
    else:
        ax.set_xticks(range(len(cats)), cats)
        ax.set_xlim(-0.5, len(cats) - 0.5)
    ax.set_xlabel(label(x))


def _missed_band(band, top, missed: list[Point], alts: list[str], color: dict, pos) -> None:
    """One row per alternative with points that have no value: X at their x, their status."""
    rows = [a for a in alts if any(p.by == a for p in missed)]
    for p in missed:
        y = rows.index(p.by)
        band.plot([pos(p.x)], [y], "x", color=color[p.by], ms=10, mew=2)
        band.annotate(p.status, (pos(p.x), y), xytext=(7, -3), textcoords="offset points",
                      fontsize=7, color="#555555")
    band.set_xscale(top.get_xscale(), **({"base": 2} if top.get_xscale() == "log" else {}))
    band.set_xlim(top.get_xlim())
    band.set_xticks(top.get_xticks(), [t.get_text() for t in top.get_xticklabels()],
                    rotation=30, fontsize=7)
    band.set_yticks(range(len(rows)), [short(a) or "(all)" for a in rows], fontsize=7)
    band.set_ylim(-0.6, len(rows) - 0.4)
    band.set_title("did not reach target (no time-to-train)", fontsize=9, loc="left")
    band.grid(axis="x", alpha=0.3)


def short(alt: str) -> str:
    """'dataset.mmap=true, storage=nfs' -> 'mmap=true, storage=nfs' (bar labels stay legible)."""
    return ", ".join(part.split("=", 1)[0].rsplit(".", 1)[-1] + "=" + part.split("=", 1)[1]
                     if "=" in part else part for part in alt.split(", "))


def _phase_change_marks(ax, pts: list[Point], color: dict, log_x: bool) -> None:
    """A triangle on each alternative's line where its dominant phase changes, labelled."""
    for alt, c in phase_changes(pts):
        on = [p for p in pts if p.by == alt and p.x in (c.low, c.high)
              and math.isfinite(p.value())]
        if len(on) != 2:
            continue
        xm = _mid(c.low, c.high, log_x)
        y = on[0].value() + _frac(c.low, c.high, xm, log_x) * (on[1].value() - on[0].value())
        ax.plot([xm], [y], "^", color=color[alt], ms=9, mec="k")
        ax.annotate(f"{short(alt)}: {c.below} → {c.above}", (xm, y), xytext=(5, 5),
                    textcoords="offset points", fontsize=7, color=color[alt])


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
    from plotly.subplots import make_subplots

    numeric = all(isinstance(p.x, (int, float)) for p in pts)
    missed = [p for p in pts if not math.isfinite(p.value())]
    top = make_subplots(rows=2 if missed else 1, cols=1, shared_xaxes=True,
                        row_heights=[0.85, 0.15] if missed else [1.0], vertical_spacing=0.08,
                        subplot_titles=[title, "did not reach target (no time-to-train)"]
                        if missed else [title])
    alts = sorted({p.by for p in pts})
    color = {a: f"hsl({(i * 137) % 360},65%,45%)" for i, a in enumerate(alts)}
    for alt in alts:
        mine = [p for p in pts if p.by == alt and math.isfinite(p.value())]
        if not mine:   # nothing to draw: no legend entry either
            continue
        top.add_trace(go.Scatter(
            x=[p.x for p in mine], y=[p.value() for p in mine], mode="lines+markers",
            name=alt or metric, line_color=color[alt],
            customdata=[[p.bottleneck, p.status, len(p.runs)] for p in mine],
            hovertemplate=f"{x}=%{{x}}<br>{metric}=%{{y:.3f}}<br>bottleneck %{{customdata[0]}}"
                          "<br>%{customdata[1]} (%{customdata[2]} run(s))<extra></extra>"),
            row=1, col=1)
    if missed:
        top.add_trace(go.Scatter(
            x=[p.x for p in missed], y=[short(p.by) or "(all)" for p in missed],
            mode="markers+text", marker=dict(symbol="x", size=11,
                                             color=[color[p.by] for p in missed]),
            text=[p.status for p in missed], textposition="middle right", showlegend=False,
            hovertemplate=f"{x}=%{{x}}<br>%{{y}}: %{{text}}<extra></extra>"), row=2, col=1)
    for m in marks:
        top.add_vline(x=m.x, line_dash="dash", row=1, col=1,
                      annotation_text=f"{m.crossover.below} → {m.crossover.above} "
                                      f"(≈ {approx(m.x)})", annotation_position="top left")
    ticks = sorted({p.x for p in pts}) if numeric else None
    top.update_xaxes(type="log" if numeric and is_log(pts) else None, tickvals=ticks,
                     ticktext=[f"{t:,}" for t in ticks] if ticks else None)
    top.update_xaxes(title_text=label(x), row=2 if missed else 1, col=1)
    top.update_yaxes(title_text=label(metric), rangemode="tozero", row=1, col=1)
    top.update_layout(height=650 if missed else 550)
    bars = go.Figure()
    names = [f"{p.x} {p.by}".strip() for p in pts]
    for phase in PHASES:
        vals = [p.fractions()[phase] for p in pts]
        if any(v and not math.isnan(v) for v in vals):
            bars.add_trace(go.Bar(x=names, y=vals, name=phase, marker_color=COLORS[phase]))
    bars.update_layout(barmode="stack", title="phase fractions per point",
                       yaxis_title="share of training-loop time")
    body = top.to_html(full_html=False, include_plotlyjs=False) + \
        bars.to_html(full_html=False, include_plotlyjs=False)
    folder = os.path.dirname(os.path.abspath(path))
    script = os.path.join(folder, "plotly.min.js")
    if not os.path.exists(script):   # one copy per folder, shared by its pages
        from plotly.offline import get_plotlyjs
        with open(script, "w") as f:
            f.write(get_plotlyjs())
    with open(path, "w") as f:
        f.write(f"<html><head><meta charset='utf-8'><title>{title}</title>"
                "<script src='plotly.min.js'></script></head><body>"
                f"{body}{table_html}</body></html>")
    return path


def phase_chart(summary: dict[str, Any], name: str, folder: str) -> Optional[str]:
    """One stacked bar of a run's training-loop phases (seconds and share), as ``phases.png``
    in ``folder``; None when no phase took time. The runner logs it with the run."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seconds = {p: summary.get(f"phase_{p}_s", 0.0) for p in PHASES}
    total = sum(seconds.values())
    if total <= 0:
        return None
    fig, ax = plt.subplots(figsize=(8, 2.2))
    left = 0.0
    for phase, value in seconds.items():
        if value <= 0:
            continue
        share = value / total
        ax.barh([0], [share], left=left, color=COLORS.get(phase), label=f"{phase} {value:.2f} s")
        if share >= 0.06:
            ax.text(left + share / 2, 0, f"{share:.0%}", ha="center", va="center", color="white")
        left += share
    ax.set_xlim(0, 1)
    ax.set_yticks([])
    ax.set_xlabel(f"share of the training loop ({total:.2f} s); bottleneck: "
                  f"{summary.get('bottleneck', '?')}")
    ax.set_title(name, fontsize=9)
    ax.legend(ncol=3, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.45), frameon=False)
    path = os.path.join(folder, "phases.png")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
