"""A run's MLflow bookkeeping, kept out of the run's lifecycle: which run to open (fresh, the
one a checkpoint or an earlier Slurm attempt opened, a sweep's child), its tags and params, the
run-id file other processes read, what is logged at each eval and at the end."""
from __future__ import annotations

import os
import platform
import socket
import subprocess
from typing import Any, Optional, Sequence

from pinchpoint.metric_names import run_metrics
from pinchpoint.tracking.mlflow_run import RunTracker
from pinchpoint.tracking.sweep_folder import parent_run_id

RUN_ID_FILE = "mlflow_run_id"   # in the run's output folder: launchers and Slurm read it
SLURM_TAGS = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_NODELIST",
              "SLURM_JOB_PARTITION")


def run_id_path(output_dir: str) -> str:
    return os.path.join(output_dir, RUN_ID_FILE)


def read_run_id(output_dir: str) -> Optional[str]:
    try:
        with open(run_id_path(output_dir)) as f:
            return f.read().strip() or None
    except FileNotFoundError:
        return None


def requeued_run_id(output_dir: str) -> Optional[str]:
    """A Slurm job requeued before its first checkpoint continues the MLflow run its earlier
    attempt opened (training restarts from step 0; metric steps already logged are skipped)."""
    if int(os.environ.get("SLURM_RESTART_COUNT") or 0) < 1:
        return None
    return read_run_id(output_dir)


def mark_failed(tracking, output_dir: str) -> None:
    """If rank 0 died before it could close its MLflow run, close it as FAILED from outside."""
    run_id = read_run_id(output_dir)
    if not tracking.enabled or run_id is None:
        return
    from mlflow.tracking import MlflowClient

    from pinchpoint.tracking.store import absolute_uri
    client = MlflowClient(absolute_uri(tracking.uri))
    if client.get_run(run_id).info.status == "RUNNING":
        client.set_tag(run_id, "status", "failed")
        client.set_terminated(run_id, "FAILED")


def environment_tags(job, ctx, tier_description: dict, run_key: str) -> dict[str, Any]:
    import mlflow
    import torch

    import pinchpoint
    tags = {"pinchpoint.run_key": run_key, "pinchpoint.kind": "point",
            "host": socket.gethostname(), "git_sha": git_sha(),
            "pinchpoint_version": pinchpoint.__version__, "torch_version": torch.__version__,
            "mlflow_version": mlflow.__version__, "python_version": platform.python_version(),
            "device": str(ctx.device), "world_size": ctx.world_size, "launcher": ctx.launcher,
            "output_dir": os.path.abspath(job.output_dir), "overrides": " ".join(job.overrides),
            **{f"choice.{k}": v for k, v in job.choices.items() if not k.startswith("hydra")}}
    tags.update({k: str(v).lower() if isinstance(v, bool) else v
                 for k, v in tier_description.items()})
    tags.update({k.lower(): v for k, v in os.environ.items() if k in SLURM_TAGS})
    return tags


def cluster_tags(ctx, dims, fabric_cfg) -> dict[str, Any]:
    """Where the run ran: its nodes, which dimensions crossed them, the fabric between them
    (shaped: ``fabric_emulated``; read: the link as the kernel describes it)."""
    from pinchpoint.cluster.fabric import read_link
    tags: dict[str, Any] = {"nodes": ctx.nodes, "node_list": ",".join(ctx.node_list),
                            "fabric": fabric_cfg.name,
                            "fabric_emulated": str(fabric_cfg.gbps is not None).lower()}
    if ctx.nodes > 1:
        tags["layout_across_nodes"] = " ".join(dims.layout().crossing()) or "none"
        tags.update(read_link(fabric_cfg.interface).describe())
    if fabric_cfg.gbps is not None:
        tags["fabric_gbps"] = fabric_cfg.gbps
        if fabric_cfg.stands_for:
            tags["fabric_stands_for"] = f"{fabric_cfg.stands_for} (scale 1:{fabric_cfg.scale:g})" \
                if fabric_cfg.scale else fabric_cfg.stands_for
    return tags


def log_fabric_series(tracker: RunTracker, report: dict) -> None:
    """Each node link's send and receive rate over the loop, one MLflow point a second
    (fabric/<node>/sent_MB_per_s, step = seconds since the loop began)."""
    from pinchpoint.cluster.fabric_meter import rates
    for host, e in report["per_node"].items():
        if "samples" not in e or not e["samples"]:
            continue
        t0 = e["samples"][0][0]
        for t, tx, rx in rates(e["samples"], e["interface"]):
            tracker.log_metrics({f"fabric/{host}/sent_MB_per_s": tx,
                                 f"fabric/{host}/received_MB_per_s": rx}, step=round(t - t0))


def open_run(tracking, job, name: str, tags: dict, params: dict,
             continuing: Optional[str]) -> RunTracker:
    """Start (or continue) the point's MLflow run and publish its id in the output folder."""
    tracker = RunTracker(tracking.uri, tracking.artifact_root, tracking.experiment,
                         tracking.system_metrics, tracking.system_metrics_interval_s)
    tracker.start(name, tags, parent_run_id(job.sweep_dir), continuing)
    tracker.log_params(used_params(params, str(tags.get("device", ""))))
    with open(run_id_path(job.output_dir), "w") as f:
        f.write(tracker.run_id)
    return tracker


def used_params(params: dict[str, Any], device: str) -> dict[str, Any]:
    """What the run used: not the model scales it did not run (a proxy run's ``model.full.*``
    lists 26 tables of 40 M rows) and not an accelerator preset (``gpu.*``) on a CPU run (the
    planner's, for full-scale estimates; printed by plan_only runs)."""
    scale = params.get("model.scale")
    unused = tuple(f"model.{s}." for s in SCALES if s != scale) if scale in SCALES else ()
    if device.startswith("cpu"):
        unused += ("gpu.",)
    return {k: v for k, v in params.items() if not k.startswith(unused)}


SCALES = ("proxy", "full", "smoke")


def close_run(tracker: RunTracker, status: str, summary: Optional[dict], name: str,
              artifacts: list[str], plots: Sequence[str] = ()) -> None:
    """Log the outcome, the artifacts and the ``plots`` (under plots/), then end the run."""
    tags = {"status": status}
    if summary is not None:
        tracker.log_metrics(run_metrics(summary))
        tags.update(bottleneck=summary["bottleneck"], quality_metric=summary["quality_metric"])
        tags["mlflow.note.content"] = note(name, summary)
    tracker.set_tags(tags)
    for path in artifacts:
        tracker.log_artifact(path)
    for path in plots:
        tracker.log_artifact(path, "plots")
    tracker.end(status)


def note(name: str, s: dict) -> str:
    """The run's description in the MLflow UI: a small markdown table of its outcome."""
    rows = [("status", s["status"]), ("time_to_train_s", f"{s['time_to_train_s']:.2f}"),
            ("bottleneck", s["bottleneck"]),
            ("throughput (samples/s)", f"{s['throughput_samples_per_s']:.0f}"),
            (f"final {s['quality_metric']}", s["final_quality"]),
            (f"target {s['quality_metric']}", s["quality_target"])]
    rows += [(k.removesuffix("_fraction"), f"{v:.1%}") for k, v in s.items()
             if k.endswith("_fraction") and k != "epoch_fraction"]
    return f"**{name}**\n\n| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def git_sha() -> str:
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                              text=True, timeout=5).stdout.strip() or "unknown"
    except Exception:
        return "unknown"
