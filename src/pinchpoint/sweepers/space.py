"""Search spaces in Hydra's override syntax, as hydra-optuna-sweeper reads them.

``choice(a,b)`` or ``a,b`` -> categorical; ``range(lo,hi,step)`` -> an ordered grid from lo to hi
(Optuna: hi included, as the official plugin; Hydra's grid and the crossover search list it as
Python's range does, hi excluded); ``interval(lo,hi)`` -> a float range, ``int(interval(..))``
an integer one; tags ``log`` and ``int`` change the scale and type, e.g.
``tag(log, int, interval(256, 65536))``. Anything that is not a sweep is a fixed override
(``~key`` deletes a key, as on Hydra's command line).
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.errors import CompactHydraException
from omegaconf import DictConfig, OmegaConf


class SweepError(CompactHydraException, ValueError):
    """A sweep that cannot run; the message names the field (axis or hydra.sweeper option).
    Compact: Hydra prints the message alone, without a traceback."""
    exit_code = 2      # refused before any point ran (train.py's convention for refusals)


class PointsFailed(SweepError):
    """Points ran and failed (the sweep's parent run is closed FAILED first)."""
    exit_code = 1


def exits_cleanly(sweep):
    """For a sweeper's ``sweep``: Hydra follows even a compact error with "Set the environment
    variable HYDRA_FULL_ERROR=1 for a complete stack trace", although a refused sweep has none
    to show. Say the message alone and exit with its code (HYDRA_FULL_ERROR=1: re-raised)."""
    import functools
    import os
    import sys

    @functools.wraps(sweep)
    def wrapper(*args, **kwargs):
        try:
            return sweep(*args, **kwargs)
        except SweepError as err:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            sys.stderr.write(f"{err}\n")
            raise SystemExit(err.exit_code) from None
    return wrapper


@dataclass
class Axis:
    key: str                       # as written in the override, '+'/'++' prefix included
    kind: str                      # choice | range | interval
    values: list = field(default_factory=list)  # choice and range: every value, in order
    low: Optional[float] = None    # interval, range (range: its start and stop as written)
    high: Optional[float] = None
    log: bool = False
    integer: bool = False
    step: Optional[float] = None   # range
    shuffle: bool = False          # shuffle(...): no order (Optuna: categorical)

    @property
    def name(self) -> str:
        return self.key.lstrip("+~")

    def is_numeric(self) -> bool:
        if self.kind == "interval":
            return True
        return bool(self.values) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                         for v in self.values)


@dataclass
class Space:
    axes: dict[str, Axis]          # by key, in the order written
    fixed: dict[str, str]          # key -> the whole override as written (key=value, ~key)

    def fixed_overrides(self) -> list[str]:
        return list(self.fixed.values())


def render(value: Any) -> str:
    """A value as Hydra's override grammar reads it back (a string that the grammar would
    read as something else is quoted)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str) and not _PLAIN.fullmatch(value):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return str(value)


_PLAIN = re.compile(r"[A-Za-z0-9_\-./:@]+")


def parse(params: Optional[DictConfig | dict], arguments: list[str]) -> Space:
    """Axes and fixed overrides from ``hydra.sweeper.params`` then the command line (later wins)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    written = [f"{k}={v}" for k, v in (params or {}).items()] + list(arguments)
    axes: dict[str, Axis] = {}
    fixed: dict[str, str] = {}
    from hydra.errors import HydraException
    try:
        parsed = OverridesParser.create().parse_overrides(written)
    except HydraException as err:  # e.g. "empty choice is not legal", with the override
        raise SweepError(f"search space: {err}") from err
    for o in parsed:
        key = o.get_key_element()
        axes.pop(key, None)
        fixed.pop(key, None)
        if not o.is_sweep_override():
            fixed[key] = o.input_line if o.is_delete() else \
                f"{key}={o.get_value_element_as_str()}"
            continue
        value = o.value()
        tags = set(getattr(value, "tags", set()) or set())
        if o.is_interval_sweep():
            integer = "int" in tags or (isinstance(value.start, int) and
                                        isinstance(value.end, int))   # int(interval(1, 5))
            low, high = (int(value.start), int(value.end)) if integer else (value.start,
                                                                             value.end)
            if not low < high:
                raise SweepError(f"{key}: empty search space interval({value.start}, "
                                 f"{value.end}) (the low end must be below the high end)")
            axes[key] = Axis(key, "interval", low=low, high=high, log="log" in tags,
                             integer=integer)
        else:
            values = list(o.sweep_iterator())
            if not values:
                raise SweepError(f"{key}: empty search space {o.input_line!r} (no values)")
            axis = Axis(key, "choice", values=values, log="log" in tags,
                        shuffle=bool(getattr(value, "shuffle", False)))
            if o.is_range_sweep():
                axis.kind, axis.low, axis.high, axis.step = \
                    "range", value.start, value.stop, value.step
            axes[key] = axis
    return Space(axes, fixed)


def check_keys(space: Space, config: DictConfig) -> None:
    """Every axis and fixed override names a config field or group (or adds one with '+')."""
    groups = set(OmegaConf.select(config, "hydra.runtime.choices", default={}) or {})
    fields = _leaf_paths(config)
    for key in [*space.axes, *space.fixed]:
        # '~key' is already applied to the sweep's config (Hydra applies every override that
        # is not a sweep there), and composing the point reports a missing key itself
        if key.startswith(("~", "+")) or key.startswith("hydra.") or key in groups:
            continue
        name = key
        if OmegaConf.select(config, name, default=_ABSENT, throw_on_missing=False) is _ABSENT:
            near = difflib.get_close_matches(name, [*fields, *groups], n=3)
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            raise SweepError(f"unknown axis {key!r}: not a config field or group{hint}")


_ABSENT = object()


def _leaf_paths(config: DictConfig) -> list[str]:
    out: list[str] = []

    def walk(node, prefix: str) -> None:
        for k in node.keys() if isinstance(node, DictConfig) else []:
            if prefix == "" and k == "hydra":
                continue
            child = node._get_node(k)
            path = f"{prefix}{k}"
            out.append(path)
            if isinstance(child, DictConfig):
                walk(child, path + ".")

    walk(config, "")
    return out
