"""One typed contract per workload: every registered workload's WorkloadSpec names a planner
that returns a PlanResult (every field typed and finite, time-to-train = RCP steps x step +
evals + init, the dominant term the largest) and carries MLPerfRules that the runtime and the
planner both read (the MLPerf log's submission_benchmark is spec.rules.benchmark)."""
from __future__ import annotations

import math

import pytest

from pinchpoint.plan.result import PlanResult, TimeToTrain
from pinchpoint.plan.rules import EVAL_ACCURACY, MLPerfRules
from pinchpoint.sweepers.plan_grid import plan_grid
from pinchpoint.workloads import spec, workload_names

BUILT_IN = {"deepseek_v3_671b", "dlrm_dcnv2", "flux1", "gpt_oss_20b", "llama2_70b_lora",
            "llama31_405b", "llama31_8b"}
# A small layout each full scale plans at (FLUX.1's per-rank batch of 16 needs 32 ranks to
# reach its smallest RCP batch, 512).
LAYOUT = {"flux1": ["parallel.dp_shard=32"]}


def test_every_built_in_workload_has_a_planner_and_rules():
    assert BUILT_IN <= set(workload_names())
    for name in workload_names():
        s = spec(name)
        assert isinstance(s.rules, MLPerfRules)
        assert s.rules.benchmark and EVAL_ACCURACY in s.rules.eval_keys
        if name in BUILT_IN:
            assert s.planner


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_plan_point_returns_the_typed_contract(name):
    _, points = plan_grid([f"model={name}", "model.scale=full", "+gpu=gb200",
                           *LAYOUT.get(name, [])])
    (pt,) = points
    assert pt.error is None, pt.error
    p = pt.plan
    assert isinstance(p, PlanResult) and isinstance(p.time_to_train, TimeToTrain)
    assert p.model == name and p.scale == "full" and p.finite()
    for attr, kind in (("gpu", str), ("precision", str), ("world_size", int),
                       ("global_batch", int), ("fits", bool), ("dominant", str),
                       ("pinch", str), ("parameters", dict), ("details", dict)):
        assert isinstance(getattr(p, attr), kind), attr
    assert p.world_size > 0 and p.global_batch > 0 and p.parameters
    assert p.memory_per_device_bytes and all(v >= 0 for v in p.memory_per_device_bytes.values())
    assert p.memory_needed_gib > 0 and p.memory_usable_gib > 0
    assert p.fits == (p.memory_needed_gib <= p.memory_usable_gib)
    assert p.step_s > 0 and sum(p.terms_s.values()) == pytest.approx(p.step_s)
    assert p.dominant == max(p.terms_s, key=p.terms_s.get)
    t = p.time_to_train
    assert t.benchmark == spec(name).rules.benchmark
    assert t.step_s == p.step_s and t.evaluations >= 1
    assert t.steps == pytest.approx(t.samples_to_converge / p.global_batch)
    assert t.total_s == pytest.approx(t.steps * t.step_s + t.evaluations * t.eval_each_s
                                      + t.init_s)
    assert t.evals_s == pytest.approx(t.evaluations * t.eval_each_s)
    assert math.isclose(t.minutes, t.total_s / 60)
    d = p.to_dict()
    assert d["time_to_train"]["total_s"] == t.total_s and d["terms_s"] == p.terms_s


def test_the_eval_skip_is_one_rule_for_planner_and_runtime():
    lora, big = spec("llama2_70b_lora").rules, spec("llama31_405b").rules
    # LoRA: the reference's eval_delay, the first evaluation at floor(0.125 x GBS + 2)
    # intervals: at GBS 8 the first at step 144 of 48-step intervals (two skipped)
    assert lora.evals_skipped(8) == 2 and lora.first_eval_step(8, 48) == 144
    # 405B: floor(0.0026 x GBS + 12) skipped
    assert big.evals_skipped(1152) == 14 and big.first_eval_step(1152, 40) == 15 * 40
    assert big.evaluations(samples=30 * 46080, every=46080, global_batch=1152) == 30 - 14
    assert spec("llama31_8b").rules.first_eval_step(32, 10) == 0


def test_rcp_units_come_from_the_rules():
    dlrm = spec("dlrm_dcnv2").rules
    assert dlrm.rcp_unit == "epochs" and dlrm.samples_per_rcp_unit == 4_195_197_692
    assert all(spec(n).rules.samples_per_rcp_unit == 1 for n in BUILT_IN - {"dlrm_dcnv2"})
