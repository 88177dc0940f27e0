"""A small MLflow store shaped like a pinchpoint sweep (parent run + tagged child runs), with a
known crossover, so report tests need no training runs."""
from __future__ import annotations

from pathlib import Path

PHASES = ("data_wait", "forward_backward", "eval")


def fake_sweep(root: Path, experiment: str = "fake_mmap_batch", seeds: int = 1,
               flat: float = 30.0, aborted: frozenset = frozenset(),
               parent_tags: dict | None = None, sizes=(512, 1024, 2048, 4096, 8192)) -> str:
    """mmap=true costs bs/100 s, mmap=false a flat ``flat`` s: mmap wins below bs=100*flat.
    Points in ``aborted`` ((mmap, bs) pairs) stop before the target. Returns the parent run
    id; the store is sqlite:///root/mlflow.db (a second call adds a sweep to the experiment)."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    found = client.get_experiment_by_name(experiment)
    exp = found.experiment_id if found else \
        client.create_experiment(experiment, artifact_location=f"file://{root}/art")
    parent = client.create_run(exp, tags={"pinchpoint.kind": "sweep",
                                          **(parent_tags or {})}).info.run_id
    for bs in sizes:
        for mmap in ("true", "false"):
            for seed in range(seeds):
                ttt = (bs / 100 if mmap == "true" else flat) + seed * 0.5
                wait = 0.6 if bs < 2048 else 0.2
                fractions = {"data_wait": wait, "forward_backward": 0.9 - wait, "eval": 0.1}
                status = "aborted" if (mmap, bs) in aborted else "success"
                tags = {"pinchpoint.kind": "point", "mlflow.parentRunId": parent,
                        "status": status, "bottleneck": max(fractions, key=fractions.get),
                        "overrides": f"+sweep=x dataset.batch_size={bs} dataset.mmap={mmap}"
                                     + (f" seed={seed}" if seeds > 1 else ""),
                        "mlflow.runName": f"bs={bs} mmap={mmap} seed={seed}"}
                run = client.create_run(exp, tags=tags).info.run_id
                metrics = {"throughput_samples_per_s": 1e5 / ttt,
                           **{f"{k}_fraction": v for k, v in fractions.items()}}
                if status == "success":   # an aborted run has no time-to-train
                    metrics["time_to_train_s"] = ttt
                client.log_batch(run, metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()],
                                 params=[Param("dataset.batch_size", str(bs)),
                                         Param("dataset.mmap", mmap)])
                client.set_terminated(run)
    client.set_terminated(parent)
    return parent
