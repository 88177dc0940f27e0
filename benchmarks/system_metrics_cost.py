"""What MLflow's system-metrics monitor costs a training thread, measured directly
(python benchmarks/system_metrics_cost.py [--seconds 6] [--rounds 4] [--interval 10]).

A fixed CPU-bound loop (matmuls on one thread, like a training step's kernels) runs inside an
MLflow run on a sqlite store with ``log_system_metrics`` off and on, alternating, and counts its
iterations; the ratio of medians is the monitor's cost. Also the monitor's own work per sample
(collect, the run-status query it makes every sample, publish), timed on this thread. The
whole-run benchmark (dlrm_overhead_and_loader.py --only overhead) cannot resolve a cost this
small on a 2-core machine: its run-to-run spread is about +-10 %.
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time


def loop(seconds: float, a) -> int:
    n, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        for _ in range(20):
            a @ a
        n += 1
    return n


def per_sample_ms(uri: str, run_id: str) -> dict[str, float]:
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
    from mlflow.tracking import MlflowClient
    monitor = SystemMetricsMonitor(run_id, tracking_uri=uri)
    out = {}
    for name, work in (("collect", monitor.collect_metrics),
                       ("run status query", lambda: MlflowClient(uri).get_run(run_id)),
                       ("aggregate + publish", lambda: (
                           monitor.collect_metrics(),
                           monitor.publish_metrics(monitor.aggregate_metrics())))):
        work()   # first call warms caches
        began = time.thread_time()
        for _ in range(10):
            work()
        out[name] = (time.thread_time() - began) / 10 * 1e3
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--interval", type=float, default=10.0, help="sampling interval, s")
    args = ap.parse_args()
    logging.getLogger("alembic").setLevel(logging.WARNING)
    import mlflow
    import torch
    from mlflow.system_metrics import (set_system_metrics_samples_before_logging,
                                       set_system_metrics_sampling_interval)
    torch.set_num_threads(1)
    uri = f"sqlite:///{tempfile.mkdtemp()}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    set_system_metrics_sampling_interval(args.interval)
    set_system_metrics_samples_before_logging(1)
    a = torch.randn(256, 256)
    counts: dict[bool, list[int]] = {False: [], True: []}
    for r in range(args.rounds):
        for on in ((False, True) if r % 2 == 0 else (True, False)):
            with mlflow.start_run(log_system_metrics=on) as run:
                counts[on].append(loop(args.seconds, a))
    ratio = statistics.median(counts[True]) / statistics.median(counts[False])
    print(f"== MLflow system metrics every {args.interval:g} s, {args.rounds} alternating "
          f"rounds of {args.seconds:g} s; load {os.getloadavg()[0]:.1f} ==")
    print(f"loop iterations off {counts[False]}, on {counts[True]}: on/off {ratio:.3f}x")
    costs = per_sample_ms(uri, run.info.run_id)
    total = sum(costs.values())
    print("monitor work per sample (CPU ms): " + ", ".join(f"{k} {v:.1f}" for k, v in
                                                           costs.items()) +
          f"; total {total:.1f} ms = {total / (args.interval * 1e3) * 100:.2f} % of one core")


if __name__ == "__main__":
    main()
