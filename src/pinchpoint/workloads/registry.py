"""The workload registry: ``model.name`` -> a WorkloadSpec that its own folder registers.

Each ``pinchpoint/workloads/<name>/__init__.py`` calls ``register(WorkloadSpec(...))`` with its
config dataclasses and the dotted paths of its Workload class and its planner (imported only
when needed, so composing a config never imports torch). ``discover()`` imports every package
under ``pinchpoint.workloads`` plus the modules named in ``PINCHPOINT_WORKLOADS`` (comma-separated,
for workloads that live outside this package, e.g. in a user's repository or in tests/), so a
new workload is its folder and its conf/ files: nothing else changes.

``setup()`` is what must run before Hydra composes a run config: config's resolvers and
run-level schemas (pinchpoint.config, a leaf that knows no workload), then, handed Hydra's
ConfigStore by config, every registered workload's model and dataset schemas.
"""
from __future__ import annotations

import importlib
import os
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Optional

from pinchpoint.errors import ConfigError
from pinchpoint.plan.result import PlanResult
from pinchpoint.plan.rules import MLPerfRules

ENV_MODULES = "PINCHPOINT_WORKLOADS"


@dataclass(frozen=True)
class WorkloadSpec:
    name: str                      # model.name, and conf/model/<name>.yaml
    workload: str                  # "package.module:Class", imported on demand
    model_schema: type             # registered as schema/model/<schema_name>
    schema_name: str = ""          # default: name (several models may share one schema)
    datasets: dict[str, type] = field(default_factory=dict)  # schema/dataset/<key> -> dataclass
    # Overrides that make a run of this workload take seconds (its smoke scale, small data):
    # what the conformance suite and the sweep smoke tests add to every run of it.
    smoke: tuple[str, ...] = ("model.scale=smoke",)
    # A 2-rank layout the workload supports: the conformance suite checkpoints in it and resumes
    # in one process (layout-independent checkpoints).
    two_rank_layout: str = "parallel=fsdp2"
    # A 4-rank layout for 2 nodes x 2 ranks (overrides added to the smoke ones): what the
    # multi-node suite runs across nodes, chosen so that some collective crosses them.
    multi_node_layout: tuple[str, ...] = ("parallel=hsdp2x2",)
    # "package.module:function" taking the run config and returning its full-scale
    # pinchpoint.plan.result.PlanResult (torch-free, imported on demand); empty: the workload
    # has no planner (plan_point refuses it).
    planner: str = ""
    # The benchmark's MLPerf rules (name, eval keys, cadence and skip, RCP unit, constants):
    # read by the runtime loop and by the planner alike. Required.
    rules: Optional[MLPerfRules] = None

    @property
    def model_schema_name(self) -> str:
        return self.schema_name or self.name


_SPECS: dict[str, WorkloadSpec] = {}
_DATASETS: dict[str, type] = {}
_discovered = False
_set_up = False


def register(spec: WorkloadSpec) -> WorkloadSpec:
    if not isinstance(spec.rules, MLPerfRules):
        raise TypeError(f"WorkloadSpec {spec.name!r}: rules=MLPerfRules(benchmark=...) is "
                        "required (the name its MLPerf log and RCP files use)")
    _SPECS[spec.name] = spec
    _DATASETS.update(spec.datasets)
    return spec


def register_dataset(key: str, schema: type) -> None:
    """A dataset schema shared by several workloads (e.g. Megatron C4 for every decoder LLM)."""
    _DATASETS[key] = schema


def discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    package = __name__.rsplit(".", 1)[0]   # pinchpoint.workloads, this module's folder
    for info in pkgutil.iter_modules([os.path.dirname(os.path.abspath(__file__))]):
        if info.ispkg:
            importlib.import_module(f"{package}.{info.name}")
    for module in filter(None, os.environ.get(ENV_MODULES, "").split(",")):
        importlib.import_module(module.strip())


def workload_names() -> list[str]:
    discover()
    return sorted(_SPECS)


def spec(name: str) -> WorkloadSpec:
    discover()
    if name not in _SPECS:
        raise ConfigError("model.name", name, "one of " + ", ".join(workload_names()))
    return _SPECS[name]


def workload_class(name: str) -> Any:
    module, attr = spec(name).workload.split(":")
    return getattr(importlib.import_module(module), attr)


def plan_point(cfg) -> PlanResult:
    """The full-scale plan of a run config, by the planner its model's workload names."""
    target = spec(cfg.model.name).planner
    if not target:
        raise ConfigError("model.name", cfg.model.name,
                          "a workload whose WorkloadSpec names a planner")
    module, attr = target.split(":")
    result = getattr(importlib.import_module(module), attr)(cfg)
    if not isinstance(result, PlanResult):
        raise TypeError(f"{target} returned {type(result).__name__}, not a PlanResult")
    return result


def register_schemas(store: Any) -> None:
    """Put every registered model and dataset schema into Hydra's ConfigStore."""
    discover()
    for s in _SPECS.values():
        store.store(group="schema/model", name=s.model_schema_name, node=s.model_schema)
    for key, schema in _DATASETS.items():
        store.store(group="schema/dataset", name=key, node=schema)


def setup() -> None:
    """Before Hydra composes: resolvers, the run-level schemas and every workload's schemas."""
    global _set_up
    if _set_up:
        return
    # config (and with it Hydra) is imported when a config is composed, not when a workload
    # registers itself.
    from pinchpoint import config
    config.setup(register_schemas)
    _set_up = True
