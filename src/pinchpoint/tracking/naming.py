"""Run names that say what the run is and what varies, e.g. ``dlrm_dcnv2 nfs mmap=off bs=4096``."""
from __future__ import annotations

from typing import Iterable

# Overrides already spelled by the fixed part of the name, or that change nothing a reader cares
# about in a runs table.
_SHOWN = {"model", "storage", "parallel"}
_SHOWN_PREFIXES = ("parallel.",)   # the layout (from the degrees) is in the fixed part
_HIDDEN_PREFIXES = ("tracking.", "hydra.", "output_root", "train.progress_every_s", "+sweep",
                    "sweep")
_SHORT = {"checkpoint.interval": "ckpt", "dataset.num_workers": "workers",
          "dataset.prefetch": "prefetch", "dataset.pin_memory": "pin", "model.scale": "scale",
          "dataset.batch_size": "bs", "dataset.mmap": "mmap"}


def _flag(value) -> str:
    return {True: "on", False: "off", "true": "on", "false": "off"}.get(value, str(value))


def _short(key: str) -> str:
    return _SHORT.get(key, key.split(".")[-1])


def run_name(model: str, storage: str, layout: str, details: dict | None = None,
             overrides: Iterable[str] = ()) -> str:
    """``details``: what the workload says a reader should see, keyed by config path
    (e.g. {"dataset.mmap": True, "dataset.batch_size": 4096} for DLRM)."""
    details = details or {}
    parts = [model, storage]
    if layout and layout != "single":
        parts.append(layout)
    parts += [f"{_short(k)}={_flag(v)}" for k, v in details.items()]
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if key in _SHOWN or key in details or key.startswith(_SHOWN_PREFIXES + _HIDDEN_PREFIXES):
            continue
        parts.append(f"{_short(key)}={_flag(value)}")
    return " ".join(parts)


def point_labels(points: list[list[str]]) -> list[str]:
    """Short labels for sweep points: the overrides that are not shared by all of them."""
    from hydra.core.utils import filter_overrides

    shown = [filter_overrides(p) for p in points]
    if len(shown) == 1:
        return ["(the only point)"]
    common = set.intersection(*(set(s) for s in shown))
    return [" ".join(o for o in s if o not in common) or " ".join(s) or "(defaults)"
            for s in shown]
