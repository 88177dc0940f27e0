"""Find a sweep's runs in MLflow and read each as a flat record (swept values, metrics, tags)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional

from pinchpoint.metric_names import flat_metrics   # MLflow's grouped names, flat


class ReportError(ValueError):
    """A report that cannot be made; the message says what was asked and what exists."""


@dataclass
class RunRecord:
    run_id: str
    name: str
    overrides: dict[str, str]      # the run's task overrides (what the sweep set)
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]

    def get(self, key: str) -> Optional[str]:
        """A setting by name: an override, a config param, a group choice, or a tag."""
        for source in (self.overrides, self.params):
            if key in source:
                return source[key]
        return self.tags.get(f"choice.{key}", self.tags.get(key))

    @property
    def status(self) -> str:
        return self.tags.get("status", "failed")


@dataclass
class Source:
    uri: str
    experiment: str
    parent_id: Optional[str]       # the sweep's parent run (artifacts go there)
    parent_tags: dict[str, str] = field(default_factory=dict)
    runs: list[RunRecord] = field(default_factory=list)
    sweeps: list[str] = field(default_factory=list)   # every parent whose runs are included
    scope: str = "sweep"           # sweep | study (an Optuna study over resumed sweeps) | all

    @property
    def artifact_dir(self) -> str:
        """Where on the parent run the report goes: its own sweep (or study) in report/, any
        other scope in a folder of its own, so no report overwrites another's."""
        return "report" if self.scope in ("sweep", "study") else f"report/{self.scope}_runs"


def client_for(uri: str):
    """An MlflowClient, refusing to create an empty sqlite store by looking at a missing one."""
    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):]
        if not os.path.exists(path):
            raise ReportError(f"no MLflow store at {path} (run a sweep first, or pass "
                              "--tracking-uri)")
        uri = "sqlite:///" + os.path.abspath(path)
    return uri, MlflowClient(tracking_uri=uri)


def load(uri: str, experiment: Optional[str] = None, parent: Optional[str] = None,
         all_runs: bool = False) -> Source:
    """The runs of a parent run, of an experiment's latest sweep (or all its runs), or of the
    latest sweep anywhere in the store."""
    uri, client = client_for(uri)
    if parent:
        try:
            run = client.get_run(parent)
        except Exception as err:
            raise ReportError(f"--parent {parent}: no such run in {uri}") from err
        exp = client.get_experiment(run.info.experiment_id)
        return _from_parent(client, uri, exp, run)
    if experiment:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            names = sorted(e.name for e in client.search_experiments())
            raise ReportError(f"--experiment {experiment!r} does not exist in {uri}; "
                              f"experiments there: {', '.join(names) or 'none'}")
        exps = [exp]
    else:
        exps = client.search_experiments()
    sweeps = client.search_runs([e.experiment_id for e in exps],
                                "tags.`pinchpoint.kind` = 'sweep'",
                                order_by=["attributes.start_time DESC"], max_results=1) \
        if exps else []
    if all_runs or not sweeps:
        if not experiment:
            raise ReportError(f"no sweep found in {uri}: run one (python train.py -m ...) or "
                              "name an --experiment")
        exp = exps[0]
        points = client.search_runs([exp.experiment_id], "tags.`pinchpoint.kind` = 'point'",
                                    max_results=5000)
        src = Source(uri, exp.name, sweeps[0].info.run_id if sweeps else None,
                     dict(sweeps[0].data.tags) if sweeps else {}, scope="all")
        src.runs = [_record(r) for r in points]
        return _nonempty(src)
    exp = client.get_experiment(sweeps[0].info.experiment_id)
    return _from_parent(client, uri, exp, sweeps[0])


def _from_parent(client, uri: str, exp, run) -> Source:
    """A sweep's runs; for a persistent Optuna study resumed over several sweeps, the runs of
    every sweep of that study (the study is the experiment a user asked for)."""
    parents = [run.info.run_id, *_same_study(client, exp, run)]
    children = [c for p in parents for c in client.search_runs(
        [exp.experiment_id], f"tags.`mlflow.parentRunId` = '{p}'", max_results=5000)]
    src = Source(uri, exp.name, run.info.run_id, dict(run.data.tags),
                 [_record(c) for c in children], parents,
                 "study" if len(parents) > 1 else "sweep")
    return _nonempty(src)


def _same_study(client, exp, run) -> list[str]:
    """Earlier sweeps that continued the same stored Optuna study (same name and storage)."""
    tags = run.data.tags
    name, storage = tags.get("optuna.study_name"), tags.get("optuna.storage")
    if not name or not storage or storage == "in memory":
        return []
    name_q = name.replace("'", "\\'")
    others = client.search_runs([exp.experiment_id],
                                f"tags.`optuna.study_name` = '{name_q}'", max_results=1000)
    return [o.info.run_id for o in others if o.info.run_id != run.info.run_id
            and o.data.tags.get("optuna.storage") == storage
            and o.info.start_time <= run.info.start_time]


def _nonempty(src: Source) -> Source:
    if not src.runs:
        raise ReportError(f"experiment {src.experiment!r}: the sweep {src.parent_id} has no "
                          "recorded runs yet")
    return src


def _record(run) -> RunRecord:
    tags = dict(run.data.tags)
    overrides = {}
    for item in tags.get("overrides", "").split():
        key, sep, value = item.partition("=")
        if sep:
            overrides[key.lstrip("+~")] = value
    return RunRecord(run.info.run_id, tags.get("mlflow.runName", run.info.run_id), overrides,
                     dict(run.data.params), flat_metrics(run.data.metrics), tags)


# Overrides that say where or how a run was recorded, not what was measured.
NOT_AXES = ("output_root", "tracking.", "train.progress_every_s", "sweep", "hydra.")


def swept_keys(runs: list[RunRecord]) -> list[str]:
    """Overrides whose value differs between runs, in the order first written."""
    keys: list[str] = []
    for r in runs:
        keys += [k for k in r.overrides if k not in keys]
    return [k for k in keys if not k.startswith(NOT_AXES)
            and len({r.overrides.get(k) for r in runs}) > 1]


def number(value: Any) -> Optional[float]:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
