"""Check every point of a sweep before launching any, fast enough for a thousand points.

Composing each point with Hydra and typing it with OmegaConf costs 60-150 ms a point on a
2-core laptop (2.5 min for 1,000 points). Sweep points mostly differ in a few field values, so:
each distinct choice of config groups (``model=``, ``storage=``, ``+sweep=``, any ``hydra.``
override) is composed by Hydra once and typed once; a point that only sets existing fields
gets a deep copy of that typed config, each value converted by the field's own OmegaConf node
(the types, conversions and errors a compose gives), and then pinchpoint's validation on the
typed config. A point the shortcut cannot reproduce exactly -- adding or deleting a key, a list
or dict value, an interpolation, a field that other values interpolate, a value the node
refuses -- is composed by Hydra in full, so its config (or its error) is what the launch gets.
``benchmarks/sweep_preflight_speed.py`` times both paths side by side.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.nodes import ValueNode

from pinchpoint.errors import ConfigError


@dataclass
class Checked:
    """A point that passed validation: its typed run config (world size derived) and key
    (None when not asked for: a plan needs none)."""
    overrides: list[str]
    run: Any
    key: Optional[str]


@dataclass
class _Base:
    cfg: DictConfig          # composed by Hydra, without its hydra node
    run: Any                 # typed once (not yet validated), or the error it raised
    interpolated: set[str]   # the nodes interpolations refer to (output_root, model.name)


class Preflight:
    """``check(overrides)`` -> Checked, or raises ConfigError (the point is invalid) or
    SweepError (it does not compose). ``checker`` is the sweeper's PointChecker."""

    def __init__(self, checker):
        from hydra.core.override_parser.overrides_parser import OverridesParser

        self.checker = checker
        self.parser = OverridesParser.create()
        self.bases: dict[tuple[str, ...], _Base] = {}
        self.groups = _group_names(checker.loader, checker.config)
        self.interpolated = _referenced(checker.config)
        self.composed = 0   # points composed in full (for the benchmark and tests)
        self.parsed: dict[str, Any] = {}   # override text -> Hydra's Override (parsed once)

    def check(self, overrides: Sequence[str], keyed: bool = True) -> Checked:
        """``keyed``: compute the point's run key (the sweepers' resume needs it)."""
        from pinchpoint.runner.validation import validate, validate_typed
        from pinchpoint.runner.run_key import run_key

        fields, composed = self._split(overrides)
        run = self._fast_run(composed, fields)
        if run is None:   # the whole Hydra compose, as the launcher will
            self.composed += 1
            cfg = self.checker.task_config(overrides)
            run = validate(cfg)
            return Checked(list(overrides), run, run_key(cfg) if keyed else None)
        validate_typed(run)
        return Checked(list(overrides), run, run_key(run) if keyed else None)

    # --- the shortcut ------------------------------------------------------------------------
    def _split(self, overrides: Sequence[str]) -> tuple[list, tuple[str, ...]]:
        """(field values the shortcut sets, the overrides Hydra composes). Hydra takes group
        choices, hydra.* keys, additions and deletions, lists, dicts, interpolations and the
        fields other values interpolate (output_root): a sweep's fixed overrides are mostly
        these, and each distinct set of them is composed once."""
        fields, composed = [], []
        new = [text for text in dict.fromkeys(overrides) if text not in self.parsed]
        if new:   # Hydra's grammar is an ANTLR parser: ~0.5 ms an override
            self.parsed.update(zip(new, self.parser.parse_overrides(new)))
        for text in overrides:
            ov = self.parsed[text]
            key, value = ov.key_or_group, ov.value()
            if ov.package is not None or "/" in key or key in self.groups \
                    or key.startswith("hydra.") or ov.is_add() or ov.is_delete() \
                    or ov.is_force_add() or isinstance(value, (list, dict)) \
                    or (isinstance(value, str) and "${" in value) \
                    or _depended_on(key, self.interpolated):
                composed.append(text)
            else:
                fields.append((key, value))
        return fields, tuple(composed)

    def _fast_run(self, composed: tuple[str, ...], fields: list) -> Any:
        base = self._base(composed)
        if isinstance(base.run, ConfigError):
            return None     # the composed part is invalid: the full path reports it
        values = []
        for key, value in fields:
            node = _value_node(base.cfg, key)
            if node is None or _depended_on(key, base.interpolated):
                return None
            try:
                values.append((key, node.validate_and_convert(value)))
            except Exception:   # Hydra's compose words the type error: let it
                return None
        run = copy.deepcopy(base.run)
        for key, value in values:
            *path, leaf = key.split(".")
            node = run
            for part in path:
                node = getattr(node, part)
            setattr(node, leaf, value)
        return run

    def _base(self, group_key: tuple[str, ...]) -> _Base:
        if group_key not in self.bases:
            from pinchpoint.config.validate import check_known_keys, typed

            cfg = self.checker.task_config(list(group_key))
            try:   # the degrees are derived per point (validate_typed), not here
                check_known_keys(cfg)
                run: Any = typed(cfg)
            except ConfigError as err:
                run = err
            self.bases[group_key] = _Base(cfg, run, _referenced(cfg))
        return self.bases[group_key]


def _group_names(loader, config: DictConfig) -> set[str]:
    """Every config group path Hydra knows in this app (model, storage, sweep, hydra/...), the
    folders ``hydra.searchpath`` adds included: one walk of one repository (Hydra's own
    ``list_groups`` copies its whole repository, every registered schema with it, on each call:
    ~0.1 s each, 50 calls)."""
    from hydra.core.object_type import ObjectType

    list_groups = loader.list_groups
    make = getattr(loader, "_parse_overrides_and_create_caching_repo", None)
    if make is not None:   # Hydra 1.3's ConfigLoaderImpl
        name = OmegaConf.select(config, "hydra.job.config_name", default=None)
        hydra_overrides = OmegaConf.select(config, "hydra.overrides.hydra", default=None)
        _, repo = make(name, list(hydra_overrides or []))
        list_groups = lambda parent: repo.get_group_options(parent, ObjectType.GROUP)  # noqa: E731
    names, todo = set(), [""]
    while todo:
        parent = todo.pop()
        for name in list_groups(parent):
            path = f"{parent}/{name}" if parent else name
            names.add(path)
            todo.append(path)
    return names


def _value_node(cfg: DictConfig, key: str) -> Optional[ValueNode]:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig):
            return None
        node = node._get_node(part, validate_access=False)   # unknown: None, not a raise
        if node is None:
            return None
    return node if isinstance(node, ValueNode) else None


REFERENCE = re.compile(r"\$\{([\w.\[\]]+)\}")   # ${output_root}; not ${oc.env:X} or ${now:...}


def _referenced(cfg: DictConfig) -> set[str]:
    """The nodes this config's interpolations refer to, outside its ``hydra`` node (the run
    config does not include it)."""
    return {m for text in _interpolations(cfg, skip="hydra") for m in REFERENCE.findall(text)}


def _depended_on(key: str, referenced: set[str]) -> bool:
    """Does an interpolation read ``key``, a node under it, or a node above it?"""
    return any(r == key or r.startswith(key + ".") or key.startswith(r + ".")
               for r in referenced)


def _interpolations(node: Any, skip: str = "", out: Optional[list] = None) -> list[str]:
    """The raw text of every interpolation under ``node`` (``${output_root}/storage``...)."""
    out = [] if out is None else out
    if isinstance(node, DictConfig):
        keys = [k for k in node.keys() if k != skip]
    elif OmegaConf.is_list(node):
        keys = range(len(node))
    else:
        return out
    for key in keys:
        child = node._get_node(key)
        if child is not None and child._is_interpolation():
            out.append(str(child._value()))
        else:
            _interpolations(child, "", out)
    return out
