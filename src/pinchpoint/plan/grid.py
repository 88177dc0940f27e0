"""A plan grid in one process: ``pinchpoint plan model=llama31_405b +gpu=gb200
parallel.tp=1,2,4,8 parallel.pp=1,2,4,8`` composes each distinct choice of config groups once
with Hydra, then applies every point's field overrides to a plain copy and plans it (pure
arithmetic, ~0.2 ms a point). Values are typed against the composed config, so a wrong type or
an unknown field fails before anything is planned, naming the field.

Grid syntax (Hydra's): ``key=a,b,c`` and ``key=range(start,stop[,step])`` sweep; everything
else is one value. Group choices (``model=``, ``+gpu=``, ``parallel=``) may sweep too.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Optional

import yaml

from pinchpoint.errors import ConfigError

CONF = Path(__file__).resolve().parents[3] / "conf"
COLUMNS = ("world_size", "step_s", "time_to_train_min", "memory_gib", "fits", "dominant",
           "pinch")


@dataclass
class Axis:
    key: str            # as typed, with a leading + for group additions
    values: list

    @property
    def name(self) -> str:
        return self.key.lstrip("+~")

    @property
    def is_group(self) -> bool:
        return "." not in self.name and (CONF / self.name).is_dir()


@dataclass
class Point:
    settings: dict                       # axis name -> value
    plan: Optional[dict] = None
    error: Optional[str] = None
    row: dict = field(default_factory=dict)


# --- parsing -----------------------------------------------------------------------------------
def _split_top(text: str) -> list[str]:
    """Split on commas outside brackets/parentheses/quotes."""
    parts, depth, cur, quote = [], 0, "", None
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        cur += ch
    return parts + [cur]


def parse_value(text: str) -> Any:
    text = text.strip()
    if text in ("null", "None", "~"):
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_axes(overrides: Iterable[str]) -> list[Axis]:
    axes = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(item, None, "an override key=value (key=a,b,c or "
                              "key=range(start,stop,step) to sweep)")
        key, raw = item.split("=", 1)
        m = re.fullmatch(r"range\((-?\d+),\s*(-?\d+)(?:,\s*(-?\d+))?\)", raw.strip())
        if m:
            start, stop, step = int(m[1]), int(m[2]), int(m[3] or 1)
            values = list(range(start, stop, step))
        else:
            values = [parse_value(v) for v in _split_top(raw)]
        axes.append(Axis(key, values))
    return axes


# --- composing and overriding ------------------------------------------------------------------
def compose_base(group_overrides: list[str]) -> dict:
    """The config train.py would compose for these group choices, as plain containers."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from pinchpoint.workloads.registry import setup

    setup()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=group_overrides)
    return OmegaConf.to_container(cfg, resolve=True)


def _check_type(key: str, old: Any, new: Any) -> None:
    if old is None or new is None:
        return
    if isinstance(old, bool) != isinstance(new, bool):
        raise ConfigError(key, new, f"a {type(old).__name__} like the current {old!r}")
    if isinstance(old, (int, float)) and not isinstance(new, (int, float)):
        raise ConfigError(key, new, f"a number (currently {old!r})")
    if isinstance(old, int) and not isinstance(old, bool) and isinstance(new, float) \
            and not new.is_integer():
        raise ConfigError(key, new, f"an integer (currently {old!r})")
    if isinstance(old, str) and not isinstance(new, str):
        raise ConfigError(key, new, f"a string (currently {old!r})")
    if isinstance(old, list) and not isinstance(new, list):
        raise ConfigError(key, new, f"a list (currently {old!r})")


def with_overrides(base: dict, settings: dict) -> dict:
    """A copy of ``base`` with dotted-key values set; only the dicts on the paths are copied."""
    out = dict(base)
    for key, value in settings.items():
        parts = key.lstrip("+~").split(".")
        node = out
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if not isinstance(child, dict):
                raise ConfigError(key, value, f"a known field ({'.'.join(parts[:depth + 1])} "
                                  "is not a config node)")
            node[part] = dict(child)
            node = node[part]
        leaf = parts[-1]
        if leaf not in node and not key.startswith("+"):
            raise ConfigError(key, value, "a known field; fields here: " + ", ".join(node))
        _check_type(key, node.get(leaf), value)
        if isinstance(node.get(leaf), float) and isinstance(value, int) \
                and not isinstance(value, bool):
            value = float(value)
        node[leaf] = value
    return out


class View:
    """Attribute access on a plain dict (what the planners read), without copying it."""
    __slots__ = ("_d",)

    def __init__(self, d: dict):
        self._d = d

    def __getattr__(self, name: str) -> Any:
        try:
            v = self._d[name]
        except KeyError:
            raise AttributeError(name) from None
        return View(v) if isinstance(v, dict) else v

    def get(self, name: str, default: Any = None) -> Any:
        v = self._d.get(name, default)
        return View(v) if isinstance(v, dict) else v

    def items(self):
        return self._d.items()

    def __contains__(self, name: str) -> bool:
        return name in self._d


# --- the grid ----------------------------------------------------------------------------------
def plan_grid(overrides: list[str]) -> tuple[list[Axis], list[Point]]:
    """Every point of the grid these overrides span, planned."""
    axes = parse_axes(["plan_only=true", *overrides])
    jobs = [{a.key: v for a, v in zip(axes, combo)}
            for combo in itertools.product(*(a.values for a in axes))]
    swept = [a.key for a in axes if len(a.values) > 1]
    return axes, plan_settings(jobs, swept)


@lru_cache(maxsize=None)
def _is_group(key: str) -> bool:
    return Axis(key, []).is_group


def plan_settings(jobs: list[dict], shown: list[str]) -> list[Point]:
    bases: dict[tuple, dict] = {}
    points = []
    for settings in jobs:
        # Hydra composes each distinct choice of the groups with a defaults list (model=...);
        # a plain group option (conf/gpu/*.yaml) is merged field by field, typed the same way.
        point = Point({k.lstrip("+~"): settings.get(k) for k in shown})
        try:
            plain = {k: v for k, v in settings.items() if _is_group(k) and
                     _plain_option(k.lstrip("+~"), v) is not None}
            group_key = tuple(f"{k}={v}" for k, v in settings.items()
                              if _is_group(k) and k not in plain)
            if group_key not in bases:
                bases[group_key] = compose_base(list(group_key))
            values = {}
            for k, v in plain.items():
                values.update({f"{k.lstrip('+~')}.{f}": x
                               for f, x in _plain_option(k.lstrip("+~"), v).items()})
            values.update({k: v for k, v in settings.items() if not _is_group(k)})
            plan_into(point, lambda: View(with_overrides(bases[group_key], values)))
        except ConfigError as err:
            point.error = str(err)
            point.row = row_of(point)
        points.append(point)
    return points


def plan_into(point: Point, config) -> Point:
    """Plan ``config()`` (a view of the point's run config) into ``point``: its plan, or the
    error that names what is wrong; then its table row. Also used by the grid sweeper's
    ``-m plan_only=true`` (sweepers/grid.py)."""
    from pinchpoint.plan import plan_point
    try:
        point.plan = plan_point(config())
    except ConfigError as err:
        point.error = str(err)
    except (ZeroDivisionError, ValueError) as err:
        point.error = f"{type(err).__name__}: {err}"
    point.row = row_of(point)
    return point


def summary(rows: list[dict], seconds: Optional[float] = None) -> str:
    """'N points planned [in S s]: F fit, D do not fit, B invalid' for a plan table."""
    fit, bad = sum(1 for r in rows if r["fits"]), sum(1 for r in rows if r["error"])
    took = "" if seconds is None else f" in {seconds:.2f} s"
    return (f"{len(rows)} points planned{took}: {fit} fit, {len(rows) - fit - bad} do not fit, "
            f"{bad} invalid")


_OPTIONS: dict[tuple, Any] = {}


def _plain_option(group: str, option: Any) -> Optional[dict]:
    """The YAML of conf/<group>/<option>.yaml when it has no defaults list, else None."""
    key = (group, str(option))
    if key not in _OPTIONS:
        path = CONF / group / f"{option}.yaml"
        if not path.exists():
            have = ", ".join(sorted(p.stem for p in (CONF / group).glob("*.yaml")))
            raise ConfigError(group, option, f"one of {have}")
        data = yaml.safe_load(path.read_text()) or {}
        _OPTIONS[key] = None if "defaults" in data else data
    return _OPTIONS[key]


def row_of(point: Point) -> dict:
    row = dict(point.settings)
    p = point.plan
    if p is not None and not {"step_s", "terms_s", "time_to_train"} <= set(p):
        point.error = ("this workload's planner gives no step time or time-to-train yet "
                       f"(it returns: {', '.join(sorted(p))[:200]})")
        row.update({c: None for c in COLUMNS}, fits=p.get("fits"), error=point.error)
        return row
    if p is None:
        row.update({c: None for c in COLUMNS}, error=point.error)
        return row
    row.update(world_size=p.get("world_size"), step_s=p["step_s"],
               time_to_train_min=p["time_to_train"]["time_to_train_min"],
               memory_gib=p["memory_needed_gib"], fits=p["fits"], dominant=p["dominant"],
               pinch=p.get("pinch", "none"),
               **{f"{k}_s": v for k, v in p["terms_s"].items()}, error=None)
    return row
