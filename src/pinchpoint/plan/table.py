"""The plan table: sort, print aligned, write as CSV."""
from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any, Optional

from pinchpoint.errors import ConfigError


def sort_rows(rows: list[dict], key: Optional[str]) -> list[dict]:
    if not key:
        return rows
    if rows and key not in rows[0]:
        raise ConfigError("--sort", key, "a column: " + ", ".join(rows[0]))
    return sorted(rows, key=lambda r: (r.get(key) is None, r.get(key) if r.get(key) is not None
                                       else 0))


def format_table(rows: list[dict], limit: Optional[int] = None) -> str:
    if not rows:
        return "(no points)"
    cols = [c for c in rows[0] if not c.endswith("_s") or c == "step_s"]
    shown = rows[:limit] if limit else rows

    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, bool):
            return "yes" if v else "NO"
        if isinstance(v, float):
            return f"{v:,.3f}" if abs(v) < 100 else f"{v:,.1f}"
        return str(v)
    cells = [[cell(r.get(c)) for c in cols] for r in shown]
    widths = [max(len(c), *(len(x[i]) for x in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(x.ljust(w) for x, w in zip(line, widths)) for line in cells]
    if limit and len(rows) > limit:
        lines.append(f"... {len(rows) - limit} more rows in the CSV")
    return "\n".join(lines)


def write_csv(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cols: list[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    return path


def default_csv(output_root: str = "outputs") -> Path:
    return Path(output_root) / "plans" / f"plan_{time.strftime('%Y-%m-%d_%H-%M-%S')}.csv"
