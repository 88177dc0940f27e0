"""Every named experiment in sweeps/ composes, validates, and runs at a tiny scale.

The test globs the folder, so a new sweep cannot be left untested, and takes each model's
``smoke`` overrides from the workload registry (no table here: a new workload brings its own).
The sweep's own axes are never overridden: each sweep is cut down along them the same way — a
grid runs its first point, a crossover its first two axis values x two alternatives, an Optuna
search two trials — and training stops after two steps.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from conftest import ROOT, mlflow_client, train
from object_store_server import object_store  # noqa: F401  (fixture, for storage=object sweeps)

SWEEPS = sorted(p.stem for p in (ROOT / "sweeps").glob("*.yaml"))
FAST = ["train.max_steps=2", "tracking.system_metrics=false", "train.progress_every_s=1"]


def smoke_overrides(model: str, axes) -> list[str]:
    """The model's smoke overrides (from its registry entry) + FAST, minus the swept keys."""
    from pinchpoint.workloads import spec
    swept = {a.lstrip("+") for a in axes}
    return [o for o in (*spec(model).smoke, *FAST) if o.split("=")[0] not in swept]


def sweep_config(name: str):
    from hydra import compose, initialize_config_dir

    from pinchpoint.workloads.registry import setup

    setup()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=[f"+sweep={name}"],
                       return_hydra_config=True)


def test_every_sweep_is_found_and_says_what_it_answers():
    assert {"dlrm_mmap_batch", "dlrm_sharding", "ckpt_interval_storage", "dlrm_optuna",
            "llama_tp_pp", "llama_ckpt_resume"} <= set(SWEEPS)
    for name in SWEEPS:
        text = (ROOT / "sweeps" / f"{name}.yaml").read_text()
        assert text.startswith("# @package _global_\n# Question:"), name
        assert f"experiment: {name}" in text, name
        # train.yaml's own override of hydra/sweeper wins over a sweep file's (Hydra keeps the
        # first), so a sweep picks its sweeper with `override /sweeper: NAME` (conf/sweeper/).
        assert "override /hydra/sweeper:" not in text, f"{name}: use override /sweeper: NAME"


def plan(cfg) -> tuple[list[str], int, dict]:
    """(overrides that cut the sweep down, runs expected, the grid's points to validate)."""
    from pinchpoint.sweepers.space import parse

    sweeper = cfg.hydra.sweeper
    space = parse(sweeper.get("params") or {}, [])
    target = sweeper._target_
    if target.endswith("OptunaSweeper"):
        return ["hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2"], 2, {}
    if target.endswith("CrossoverSweeper"):
        cut = [f"{k}={','.join(map(str, a.values[:2]))}" for k, a in space.axes.items()]
        runs = 2 ** len(space.axes)   # by=dominant_phase: the axis alone, no alternatives
        return [c.replace("True", "true").replace("False", "false") for c in cut], runs, {}
    return [f"{k}={a.values[0]}" for k, a in space.axes.items()], 1, {
        k: a.values for k, a in space.axes.items()}


@pytest.fixture(scope="module")
def shared_out(tmp_path_factory) -> Path:
    """One output root for all sweeps: synthetic data and the MLflow store are made once."""
    return tmp_path_factory.mktemp("smoke") / "outputs"


@pytest.mark.parametrize("name", SWEEPS)
def test_sweep_validates_and_runs_tiny(name, shared_out, request):
    from pinchpoint.runner.validation import validate
    from pinchpoint.sweepers.space import parse

    cfg = sweep_config(name)
    if cfg.storage.name == "object":   # a real S3 endpoint (SeaweedFS) for the object tier
        request.getfixturevalue("object_store")
    env = {}
    if cfg.cluster.name == "slurm":    # a cross-node sweep: the emulated multi-node cluster
        env = request.getfixturevalue("multinode_cluster").env
    out = shared_out
    axes = parse(cfg.hydra.sweeper.get("params") or {}, []).axes
    cut, runs, grid = plan(cfg)
    from hydra import compose, initialize_config_dir
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        models = [validate(compose("train", [f"+sweep={name}", f"output_root={out}",
                                             *(f"{k}={v}" for k, v in zip(grid, point))]
                                   )).model.name   # every grid point is a valid config
                  for point in itertools.product(*grid.values())]
    model = models[0] if models else cfg.model.name   # the model of the point that runs
    tiny = smoke_overrides(model, axes)
    proc = train(["-m", f"+sweep={name}", *tiny, *cut], out, timeout=400, env=env)
    client = mlflow_client(out)
    exp = client.get_experiment_by_name(name)
    assert exp is not None, proc.stdout[-2000:]
    parents = client.search_runs([exp.experiment_id], "tags.`pinchpoint.kind` = 'sweep'")
    children = client.search_runs([exp.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'")
    assert len(children) == runs, proc.stdout[-3000:]
    assert all(c.data.tags.get("status") in ("success", "aborted") for c in children)
    for key, axis in axes.items():   # the swept axes ran as the sweep says, not overridden
        # An axis over the proxy scale's own fields (model.proxy.seq_len) has no effect on a
        # smoke-scale run, which logs only the scale it ran: not checked here (known gap).
        if axis.values and "." in axis.name and not axis.name.startswith("model.proxy."):
            seen = {str(c.data.params.get(axis.name)).lower() for c in children}
            allowed = {str(v).lower() for v in axis.values}
            assert seen <= allowed, (axis.name, seen, allowed)
    if name == "dlrm_mmap_batch":   # the acceptance path: sweep, then `pinchpoint report`
        report_is_attached(out, parents[0].info.run_id, client)


def report_is_attached(out: Path, parent: str, client) -> None:
    from pinchpoint.cli import main

    assert main(["report", "--tracking-uri", f"sqlite:///{out}/mlflow.db",
                 "--experiment", "dlrm_mmap_batch", "--out", str(out / "report")]) == 0
    assert (out / "report" / "report.csv").read_text().startswith("dataset.batch_size,")
    names = {Path(a.path).name for a in client.list_artifacts(parent, "report")}
    assert {"report.csv", "report.png"} <= names   # report.html stays local (analysis/report.py)
    tags = client.get_run(parent).data.tags
    assert tags["pinchpoint.sweeper"] == "crossover" and "crossover.intervals" in tags


def test_a_point_that_picks_its_model_gets_it():
    """A group option that overrides /model (conf/moe_layout/) must not lose to a model the
    sweep file chose: Hydra keeps the first override of a group, silently."""
    from conftest import compose
    chosen = {layout: compose(["+sweep=dense_vs_moe_collectives", f"+moe_layout={layout}"],
                              "/tmp/unused").model.name
              for layout in ("dense_fsdp4", "moe_fsdp4", "moe_fsdp4_ep4")}
    assert chosen == {"dense_fsdp4": "llama31_8b", "moe_fsdp4": "gpt_oss_20b",
                      "moe_fsdp4_ep4": "gpt_oss_20b"}

