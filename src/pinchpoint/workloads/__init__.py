"""MLPerf workloads, one folder each; each folder registers itself (see registry.py)."""
from pinchpoint.workloads.registry import spec, workload_class, workload_names

__all__ = ["spec", "workload_class", "workload_names"]
