"""What an Optuna sweep leaves behind: ``optimization_results.yaml`` with hydra-optuna-sweeper's
keys (``name: optuna``, ``best_params``/``best_value``, or ``solutions`` for several objectives),
the study's plots, and the best point on the sweep's MLflow parent run."""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Optional

from omegaconf import OmegaConf

from pinchpoint.sweepers.space import PointsFailed

log = logging.getLogger(__name__)


def value_names(sweeper) -> list[str]:
    """What the values are called: the metrics read, else ``value`` (as upstream's logs)."""
    if sweeper.objectives:
        return list(sweeper.objectives)
    n = len(sweeper.directions)
    return ["value"] if n == 1 else [f"values[{i}]" for i in range(n)]


def redact(url: str) -> str:
    """Hide a password in an RDB URL before it is logged or becomes a tag."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def start_tags(sweeper, study, space, storage: Optional[str]) -> dict[str, Any]:
    """The parent run's tags when the search starts (``storage``: the study's URL, or None
    for a study in memory)."""
    return {"pinchpoint.sweeper": "optuna", "optuna.study_name": study.study_name,
            "optuna.storage": redact(storage or "in memory"),
            "pinchpoint.axes": ",".join(a.name for a in space.axes.values()),
            "optuna.objective": ",".join(value_names(sweeper)),
            "optuna.direction": ",".join(sweeper.directions)}


def results(study, directions: list[str]) -> dict[str, Any]:
    """The upstream file's content; refuses a study without a completed trial (no best)."""
    import optuna

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        failed = sum(t.state == optuna.trial.TrialState.FAIL for t in study.trials)
        raise PointsFailed(f"study {study.study_name}: no trial completed ({failed} failed, "
                         f"{len(study.trials) - failed} pruned or unfinished), so there is no "
                         "best value; see the failed trials' logs")
    if len(directions) < 2:
        best = study.best_trial
        return {"name": "optuna", "best_params": best.params, "best_value": best.value}
    return {"name": "optuna",
            "solutions": [{"params": t.params, "values": t.values} for t in study.best_trials]}


def finish(sweeper, study, before: int, parent) -> None:
    out = results(study, sweeper.directions)
    path = os.path.join(sweeper.config.hydra.sweep.dir, "optimization_results.yaml")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    OmegaConf.save(OmegaConf.create(json.loads(json.dumps(out, default=_plain))), path)
    if "best_value" in out:
        log.info("Best parameters: %s", out["best_params"])
        log.info("Best value: %s", out["best_value"])
    else:
        log.info("Number of Pareto solutions: %d", len(out["solutions"]))
        for s in out["solutions"]:
            log.info("    Values: %s, Params: %s", s["values"], s["params"])
    log.info("study %s: %d trial(s) in total, %d in this sweep", study.study_name,
             len(study.trials), len(study.trials) - before)
    _to_parent(sweeper, study, before, parent, out, path)


def _to_parent(sweeper, study, before: int, parent, out: dict, path: str) -> None:
    tags = {"optuna.trials_total": len(study.trials),
            "optuna.trials_this_sweep": len(study.trials) - before}
    if "best_value" in out:
        tags.update({"optuna.best_params": json.dumps(out["best_params"], default=_plain),
                     "optuna.best_value": out["best_value"],
                     "optuna.best_trial": study.best_trial.number})
    else:
        tags["optuna.pareto_front"] = json.dumps(out["solutions"], default=_plain)
    parent.set_tags(tags)
    parent.log_artifact(path)
    if sweeper.plots:
        from pinchpoint.sweepers.optuna_plots import save_plots

        folder = os.path.join(sweeper.config.hydra.sweep.dir, "optuna")
        files, notes = save_plots(study, folder, value_names(sweeper))
        for file in files:
            parent.log_artifact(file, "optuna")
        if notes:
            parent.set_tags({"optuna.plot_notes": " ".join(notes)})


def _plain(value: Any) -> Any:
    """numpy scalars and the like, as YAML can hold them."""
    return value.item() if hasattr(value, "item") else str(value)
