"""Run names that say what the run is and what varies, e.g. ``dlrm_dcnv2 nfs mmap=off bs=4096``."""
from __future__ import annotations

from typing import Iterable

# Overrides already spelled by the fixed part of the name, or that change nothing a reader cares
# about in a runs table.
_SHOWN = {"model", "storage", "parallel", "dataset.mmap", "dataset.batch_size"}
_HIDDEN_PREFIXES = ("tracking.", "hydra.", "output_root", "train.progress_every_s", "+sweep",
                    "sweep")
_SHORT = {"checkpoint.interval": "ckpt", "dataset.num_workers": "workers",
          "dataset.prefetch": "prefetch", "dataset.pin_memory": "pin", "model.scale": "scale"}


def _flag(value) -> str:
    return {True: "on", False: "off"}.get(value, str(value))


def run_name(model: str, storage: str, parallel: str, mmap, batch_size,
             overrides: Iterable[str] = ()) -> str:
    parts = [model, storage]
    if parallel and parallel != "single":
        parts.append(parallel)
    if mmap is not None:
        parts.append(f"mmap={_flag(mmap)}")
    if batch_size is not None:
        parts.append(f"bs={batch_size}")
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if key in _SHOWN or key.startswith(_HIDDEN_PREFIXES):
            continue
        short = _SHORT.get(key, key.split(".")[-1])
        parts.append(f"{short}={value}")
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
