"""MLPerf workloads, one folder each; each folder registers itself (see registry.py)."""
from pinchpoint.workloads.registry import plan_point, spec, workload_class, workload_names

__all__ = ["plan_point", "spec", "workload_class", "workload_names"]
