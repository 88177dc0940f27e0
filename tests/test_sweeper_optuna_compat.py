"""pinchpoint's hydra/sweeper=optuna as a drop-in for hydra-optuna-sweeper: the official example
apps and configs (tests/optuna_compat, unchanged) run in a foreign Hydra app and meet the
official tests' expectations (plugins/hydra_optuna_sweeper/tests/test_optuna_sweeper_plugin.py
in facebookresearch/hydra)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf

EXAMPLES = Path(__file__).parent / "optuna_compat"


def run(script: str, sweep_dir: Path, *args: str, check: bool = True):
    flags = [a for a in args if a.startswith("--")]   # argparse: flags before overrides
    cmd = [sys.executable, f"example/{script}", "--multirun", *flags,
           f"hydra.sweep.dir={sweep_dir}", *(a for a in args if a not in flags)]
    proc = subprocess.run(cmd, cwd=EXAMPLES, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-3000:]}")
    return proc


def results(sweep_dir: Path):
    return OmegaConf.load(sweep_dir / "optimization_results.yaml")


def dominates(a, b) -> bool:
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def test_discovery_lists_only_the_plugins():
    from hydra.core.plugins import Plugins
    from hydra.plugins.launcher import Launcher
    from hydra.plugins.sweeper import Sweeper

    ours = [c.__name__ for t in (Sweeper, Launcher) for c in Plugins.instance().discover(t)
            if c.__module__.startswith("hydra_plugins.pinchpoint")]
    assert sorted(ours) == ["CrossoverSweeper", "OptunaSweeper", "PinchpointGridSweeper",
                            "PinchpointSlurmLauncher"]


def test_sphere_example_tpe(tmp_path):
    storage = f"sqlite:///{tmp_path}/test.db"
    run("sphere.py", tmp_path, "hydra.job.chdir=True", "hydra.sweeper.n_trials=20",
        "hydra.sweeper.n_jobs=1", f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.study_name=test-optuna-example", "hydra/sweeper/sampler=tpe",
        "hydra.sweeper.sampler.seed=123", "~z")
    out = results(tmp_path)
    best = optuna.load_study(storage=storage, study_name="test-optuna-example").best_trial
    assert out.name == "optuna"
    assert out.best_params.x == best.params["x"] and out.best_params.y == best.params["y"]
    assert out.best_value == best.value
    assert out.best_value <= 2.27    # the official test's 95th percentile over 1000 seeds


def test_sphere_example_in_memory_with_fixed_value(tmp_path):
    run("sphere.py", tmp_path, "x=choice(0, 1, 2)", "y=0")
    out = results(tmp_path)
    assert "y" not in out.best_params and out.best_params.x == 0 and out.best_value == 0
    assert not [*tmp_path.glob("**/*.db"), *EXAMPLES.glob("**/*.db")]  # null = in memory


@pytest.mark.parametrize("with_commandline", [True, False])
def test_multi_objective_example(tmp_path, with_commandline):
    args = ["hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=123"]
    if with_commandline:
        args += ["x=range(0, 5)", "y=range(0, 3)"]
    run("multi-objective.py", tmp_path, "hydra.sweeper.n_trials=10", *args)
    out = results(tmp_path)
    assert out.name == "optuna" and len(out.solutions) >= 2
    allowed = {0} if with_commandline else {0, 0.5}
    for a in out.solutions:
        assert a.params.x % 1 in allowed and a.params.y % 1 in allowed
        assert all(v != float("inf") for v in a["values"])
        assert not any(dominates(a["values"], b["values"]) for b in out.solutions)
    if with_commandline:   # range() includes its stop, as upstream
        study_values = {(s.params.x, s.params.y) for s in out.solutions}
        assert all(0 <= x <= 5 and 0 <= y <= 3 for x, y in study_values)


@pytest.mark.parametrize("sampler, trials", [("random", 6), ("tpe", 12)])
def test_custom_search_space_example(tmp_path, sampler, trials):
    # TPE (the config's own sampler) past its 10 random start-up trials
    run("custom-search-space-objective.py", tmp_path, f"hydra/sweeper/sampler={sampler}",
        "hydra.sweeper.sampler.seed=123", f"hydra.sweeper.n_trials={trials}",
        "max_z_difference_from_x=0.3")
    out = results(tmp_path)
    assert out.name == "optuna"
    assert abs(out.best_params.x - out.best_params.z) <= 0.3
    assert 0 <= out.best_params["+w"] <= 1


@pytest.mark.parametrize("rate, fails", [(None, True), (0.5, True), (1.0, False)])
def test_failure_rate(tmp_path, rate, fails):
    args = ["hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2", "error=true",
            "hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=123"]
    args += [f"hydra.sweeper.max_failure_rate={rate}"] if rate is not None else []
    proc = run("sphere.py", tmp_path, *args, check=False)
    assert proc.returncode != 0   # 1.0 tolerates the failures, but then there is no best value
    assert ("RuntimeError: cfg.error is True" in proc.stderr) == fails
    if fails:
        assert "max_failure_rate" in proc.stderr
        assert len([p for p in tmp_path.iterdir() if p.name.isdigit()]) == 2  # first batch only


@pytest.mark.parametrize("num_trials", [10, 1])
def test_grid_sampler(tmp_path, num_trials):
    run("sphere.py", tmp_path, "--config-dir=test_conf", "--config-name=test_grid",
        "hydra.job.chdir=False", f"hydra.sweeper.n_trials={num_trials}",
        "hydra.sweeper.n_jobs=1")
    out = results(tmp_path)
    assert out.best_params.x in (-1, 1) and out.best_params.y in (-1, 0)
    assert out.best_params.z in ("foo", "bar")
    if num_trials >= 8:   # the whole 2 x 2 x 2 grid
        assert out.best_value == 1


def test_removed_motpe_sampler_is_named(tmp_path):
    proc = run("multi-objective.py", tmp_path, "--config-dir=test_conf",
               "--config-name=test_motpe", check=False)
    assert proc.returncode != 0
    assert "motpe" in proc.stderr and "sampler was removed in Optuna 4.0" in proc.stderr
    assert "Traceback" not in proc.stderr
