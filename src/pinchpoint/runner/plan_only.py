"""``plan_only=true`` on one run: print the full-scale plan as JSON instead of training."""
from __future__ import annotations

import json
import sys

from pinchpoint.workloads import plan_point


def run_plan_only(cfg) -> float:
    """Print the plan (PlanResult.to_dict() as JSON) and return its time-to-train in seconds;
    a point that does not fit in the GPU's memory exits with status 2 and says what it needs."""
    p = plan_point(cfg)
    print(json.dumps(p.to_dict(), indent=2, default=float))
    if not p.fits:
        print(f"pinchpoint plan: does not fit: {p.model} needs "
              f"{p.memory_needed_gib:.1f} GiB per device, {p.gpu} has "
              f"{p.memory_usable_gib:.1f} GiB usable (gpu.memory_gib - gpu.reserved_gib); "
              "raise parallel.tp/pp/dp_shard, set recompute=true or lower the micro-batch",
              file=sys.stderr)
        raise SystemExit(2)
    return p.time_to_train.total_s
