"""The metric vocabulary, shared by what records runs (tracking) and what reads them back
(analysis, sweepers): the phases of the training loop, and the MLflow name of each summary key.

Summary keys are flat (``data_wait_fraction``, ``comm_all_to_all_bytes_per_step``; what
phase_summary.json holds); MLflow names group them by prefix so MLflow charts a group together
(``phase/data_wait_fraction``, ``comm/all_to_all/bytes_per_step``; README "MLflow metric names").
A leaf: it imports nothing of pinchpoint, so every layer may read it.
"""
from __future__ import annotations

import re
from typing import Any

# The phases of a training step, in the order they tile it (telemetry/phases.py).
PHASES = ("data_wait", "forward_backward", "communication", "optimizer", "eval", "checkpoint")

GROUPED = ("checkpoint_", "data_", "storage_", "step_time_", "process_", "system_", "quality_",
           "fabric_")
RANK_SPREAD = re.compile(r"^(\w+)_s_(min|mean|max)$")
GPU = re.compile(r"^gpu_(\d+)_(\w+)$")   # gpu_0_power_watts_mean -> gpu/0/power_watts_mean
COMM = re.compile(r"^comm_(\w+?)_(calls|bytes|device_seconds|exposed_seconds|seconds"
                  r"|intra_node_bytes|inter_node_bytes)_per_step$")


def metric_name(flat: str) -> str:
    """The MLflow name of a summary key: grouped by its prefix, so MLflow charts a group
    together (phase/, comm/<kind>/, checkpoint/, data/, ...). phase_summary.json keeps the flat
    keys; ``flat_name`` maps back (README "MLflow metric names")."""
    if flat.endswith("_fraction") and flat[:-len("_fraction")] in PHASES:
        return f"phase/{flat}"
    if flat.startswith("phase_") and flat.endswith("_s"):
        return f"phase/{flat[len('phase_'):]}"
    comm = COMM.match(flat)
    if comm:
        return f"comm/{comm.group(1)}/{comm.group(2)}_per_step"
    gpu = GPU.match(flat)
    if gpu:
        return f"gpu/{gpu.group(1)}/{gpu.group(2)}"
    spread = RANK_SPREAD.match(flat)
    if spread and spread.group(1) in PHASES:
        return f"ranks/{flat}"
    for prefix in GROUPED:
        if flat.startswith(prefix) and flat != "data_wait_fraction":
            return prefix[:-1] + "/" + flat[len(prefix):]
    return flat


def flat_name(name: str) -> str:
    """The summary key of an MLflow metric name (inverse of ``metric_name``)."""
    group, _, rest = name.partition("/")
    if not rest:
        return name
    if group == "phase":
        return rest if rest.endswith("_fraction") else f"phase_{rest}"
    if group == "ranks":
        return rest
    return f"{group}_{rest.replace('/', '_')}"


def flat_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """MLflow metrics with their flat summary names added (readers keep one vocabulary)."""
    return {**metrics, **{flat_name(k): v for k, v in metrics.items()}}


def run_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The numbers worth a chart: no collective kind that was never called (all-zero series)."""
    out = {}
    for key, value in summary.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        comm = COMM.match(key)
        if comm and not summary.get(f"comm_{comm.group(1)}_calls_per_step"):
            continue
        out[metric_name(key)] = value
    return out
