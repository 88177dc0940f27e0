"""Collective traffic per point, by kind, side by side: bytes per step and seconds per step of
each collective the runs recorded (``comm/<kind>/bytes_per_step``, ``.../seconds_per_step``:
FSDP's all-gathers and reduce-scatters, EP's all-to-alls, DDP's all-reduces, pipeline
sends). Drawn only when some run called a collective, as ``collectives.png`` beside the
report (sweeps/dense_vs_moe_collectives.yaml asks exactly this)."""
from __future__ import annotations

import math
import re
from typing import Optional

from pinchpoint.analysis.table import Point

KIND = re.compile(r"^comm/(\w+)/bytes_per_step$")


def kinds(pts: list[Point]) -> list[str]:
    """Collective kinds some run of these points called (bytes > 0), in a stable order."""
    found = {m.group(1) for p in pts for r in p.runs for k, v in r.metrics.items()
             if (m := KIND.match(k)) and v and v > 0}
    return sorted(found)


def per_kind(pts: list[Point], kind: str, what: str) -> list[float]:
    """Mean over each point's runs of comm/<kind>/<what>_per_step (0 where not called)."""
    out = []
    for p in pts:
        v = p.value(f"comm/{kind}/{what}_per_step")
        out.append(0.0 if math.isnan(v) else v)
    return out


def save_png(pts: list[Point], title: str, path: str) -> Optional[str]:
    names = kinds(pts)
    if not names:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pinchpoint.analysis.plots import short

    labels = [f"{p.x}\n{short(p.by)}" if p.by else str(p.x) for p in pts]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    width = 0.8 / len(names)
    for i, kind in enumerate(names):
        at = [j - 0.4 + width * (i + 0.5) for j in range(len(pts))]
        left.bar(at, [b / 1e6 for b in per_kind(pts, kind, "bytes")], width, label=kind,
                 color=f"C{i}")
        right.bar(at, [s * 1e3 for s in per_kind(pts, kind, "seconds")], width, label=kind,
                  color=f"C{i}")
    for ax, unit in ((left, "MB per step (per rank)"), (right, "ms per step (blocked)")):
        ax.set_xticks(range(len(pts)), labels, fontsize=7)
        ax.set_ylabel(unit)
        ax.grid(axis="y", alpha=0.3)
    left.set_title("collective bytes by kind", fontsize=10)
    right.set_title("collective time by kind", fontsize=10)
    left.legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
