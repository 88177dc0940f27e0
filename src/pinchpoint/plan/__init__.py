"""Full-scale pre-flight: parameter counts, memory per device, step time by term, and
time-to-train against the MLPerf RCPs. Pure arithmetic over config; nothing here allocates
tensors or touches a device.

Generic pieces for any workload's planner: ``compute`` (FLOPs and bytes -> seconds at the
calibrated achieved rates), ``network`` (collectives on the two-level NVLink-domain + NIC
topology), ``pipeline`` (layer splits, interleaved bubble), ``time_to_train`` (RCP steps x step
+ evals + init), ``hardware`` (GPU presets). Workloads register a planner with
``register_planner(model_name, "module:function")``; the function takes the run config and
returns a dict with at least step_s, terms_s, dominant, fits, memory_needed_gib and
time_to_train."""
from __future__ import annotations

import importlib
import json
import math
import sys
from typing import Any, Callable

from pinchpoint.errors import ConfigError

PLANNERS: dict[str, str] = {
    "llama31_8b": "pinchpoint.plan.llama:plan_run",
    "llama31_405b": "pinchpoint.plan.llama:plan_run",
    "dlrm_dcnv2": "pinchpoint.workloads.dlrm_dcnv2.plan:plan_run",
}


def register_planner(model_name: str, target: str) -> None:
    PLANNERS[model_name] = target


def planner(model_name: str) -> Callable[[Any], dict]:
    """The registered planner, else the workload's own ``plan`` classmethod."""
    if model_name not in PLANNERS:
        try:
            from pinchpoint.workloads import workload_class
            return workload_class(model_name).plan
        except (ImportError, KeyError, ValueError) as err:
            raise ConfigError("model", model_name, "a model with a planner: "
                              + ", ".join(sorted(PLANNERS))) from err
    module, fn = PLANNERS[model_name].split(":")
    return getattr(importlib.import_module(module), fn)


def plan_point(cfg) -> dict[str, Any]:
    return planner(cfg.model.name)(cfg)


def run_plan_only(cfg) -> float:
    """The runner's plan_only path: print the plan as JSON and return time_to_train_s; a point
    that does not fit in the GPU's memory exits with status 2 and says what it needs."""
    p = plan_point(cfg)
    print(json.dumps(p, indent=2, default=float))
    if not p.get("fits", True):
        print(f"pinchpoint plan: does not fit: {p['model']} needs "
              f"{p['memory_needed_gib']:.1f} GiB per device, {p['gpu']} has "
              f"{p['memory_usable_gib']:.1f} GiB usable (gpu.memory_gib - gpu.reserved_gib); "
              "raise parallel.tp/pp/dp_shard, set recompute=true or lower the micro-batch",
              file=sys.stderr)
        raise SystemExit(2)
    ttt = p.get("time_to_train", {}).get("time_to_train_s")
    return float(ttt) if ttt is not None else math.nan
