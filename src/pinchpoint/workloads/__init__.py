"""Workload registry: config ``model.name`` -> Workload class. One line per workload."""
from __future__ import annotations

import importlib

_REGISTRY = {
    "dlrm_dcnv2": "pinchpoint.workloads.dlrm_dcnv2.workload:DLRMWorkload",
    "llama31_8b": "pinchpoint.workloads.llama31.workload:Llama31_8B",
    "llama31_405b": "pinchpoint.workloads.llama31.workload:Llama31_405B",
}


def workload_names() -> list[str]:
    return sorted(_REGISTRY)


def workload_class(name: str):
    from pinchpoint.config.validate import ConfigError

    if name not in _REGISTRY:
        raise ConfigError("model.name", name, "one of " + ", ".join(workload_names()))
    module, attr = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), attr)
