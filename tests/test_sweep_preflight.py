"""The sweepers' fast pre-flight gives each point exactly the config, validation result and run
key that composing it in full gives, and composes only what it must."""
from __future__ import annotations

import types

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from conftest import ROOT
from pinchpoint.errors import ConfigError
from pinchpoint.runner.run_key import run_key
from pinchpoint.runner.validation import validate
from pinchpoint.sweepers.common import DEFAULT_VALIDATOR, PointChecker
from pinchpoint.sweepers.space import SweepError
from pinchpoint.workloads.registry import setup

BASE = ["model=llama31_8b", "storage=nfs"]
POINTS = [
    ["model.proxy.global_batch_size=32"],
    ["parallel.tp=2", "parallel.pp=2"],                      # world size derived per point
    ["parallel.dp_shard=2", "checkpoint.interval=5"],
    ["storage.emulation.read_mb_per_s=5"],                   # an int into a float field
    ["storage.emulation.enabled=true", "train.max_steps=7"],  # a bool, an int
    ["model=dlrm", "dataset.batch_size=1024"],               # another group choice
    ["output_root=OTHER", "train.max_steps=3"],              # a field others interpolate
    ["parallel=fsdp2", "seed=3"],
]


@pytest.fixture
def checker(tmp_path):
    setup()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        master = compose("train", [*BASE, f"output_root={tmp_path}"], return_hydra_config=True)
        context = types.SimpleNamespace(config_loader=GlobalHydra.instance().config_loader())
        yield PointChecker(context, master, DEFAULT_VALIDATOR)


def full(checker, overrides):
    cfg = checker.task_config(overrides)
    return validate(cfg), run_key(cfg)


@pytest.mark.parametrize("point", POINTS, ids=lambda p: " ".join(p))
def test_each_point_gets_what_a_full_compose_gives(checker, tmp_path, point):
    point = [p.replace("OTHER", str(tmp_path / "other")) for p in point]
    overrides = [*BASE, f"output_root={tmp_path}", *point]
    got = checker.preflight.check(overrides)
    run, key = full(checker, overrides)
    assert got.run == run and got.key == key


def test_only_distinct_group_choices_are_composed(checker, tmp_path):
    for size in (16, 32, 80, 160):
        checker.preflight.check([*BASE, f"output_root={tmp_path}",
                                 f"model.proxy.global_batch_size={size}", "parallel.tp=2"])
    assert len(checker.preflight.bases) == 1 and checker.preflight.composed == 0


@pytest.mark.parametrize("point,field", [
    (["model.proxy.global_batch_size=-8"], "model.proxy.global_batch_size"),
    (["parallel.tp=3", "parallel.world_size=4"], "parallel.world_size"),
    (["model=dlrm", "dataset.batch_size=0"], "dataset.batch_size"),
])
def test_an_invalid_point_names_the_same_field(checker, tmp_path, point, field):
    overrides = [*BASE, f"output_root={tmp_path}", *point]
    with pytest.raises(ConfigError) as fast:
        checker.preflight.check(overrides)
    with pytest.raises(ConfigError) as slow:
        full(checker, overrides)
    assert fast.value.field == slow.value.field == field
    assert str(fast.value) == str(slow.value)


def test_a_value_of_the_wrong_type_gets_hydras_own_error(checker, tmp_path):
    with pytest.raises(SweepError, match="does not compose.*train.max_steps"):
        checker.preflight.check([*BASE, f"output_root={tmp_path}", "train.max_steps=many"])
    assert checker.preflight.composed == 1
