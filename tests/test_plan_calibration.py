"""The planner against published MLPerf results (benchmarks/planner_vs_published.py): every
row of the calibration set (v5.0, v5.1, v6.0; all seven benchmarks), predicted time-to-train
over the published score, read from the table's own columns."""
from __future__ import annotations

import math
import statistics

import pytest
from conftest import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmarks/planner_vs_published.py", "planner_vs_published")


@pytest.fixture(scope="module")
def results(bench):
    return bench.predict(bench.plannable(bench.load_rows()))


def test_every_benchmark_has_rows_with_their_sources(bench):
    rows = bench.load_rows()
    assert {r["benchmark"] for r in rows} == {
        "dlrm_dcnv2", "llama31_8b", "llama31_405b", "llama2_70b_lora", "flux1", "gpt_oss_20b",
        "deepseekv3_671b"}
    assert {r["round"] for r in rows} == {"v5.0", "v5.1", "v6.0"}
    for r in rows:
        assert r["source"], r["system"]
    planned = bench.plannable(rows)
    listed = [r for r in rows if "refused" in r]
    assert len(planned) + len(listed) == len(rows) and all(r["refused"] for r in listed)
    # a layout read from a config that is not the row's run is refused, not planned
    assert any("global_batch_size" in r["refused"] for r in listed)


def test_shipped_constants_reproduce_the_recorded_fit(results):
    """calibration.py's comment records time-to-train 161/163 within 25 %, median 7.9 %, mean
    |log| 0.087; the step 128/129, median 7.2 %."""
    ratios = [r["ratio"] for r in results]
    assert len(ratios) == 163
    assert sum(0.75 <= x <= 1.25 for x in ratios) == 161
    assert statistics.median(abs(x - 1) for x in ratios) == pytest.approx(0.079, abs=0.002)
    assert sum(abs(math.log(x)) for x in ratios) / len(ratios) == pytest.approx(0.087, abs=0.002)
    steps = [r["step_ratio"] for r in results if r["step_ratio"]]
    assert len(steps) == 129 and sum(0.75 <= x <= 1.25 for x in steps) == 128
    assert statistics.median(abs(x - 1) for x in steps) == pytest.approx(0.072, abs=0.002)


def test_the_fit_aims_at_the_logged_step_where_a_log_gives_it(bench, results):
    """A row whose result log gives its step is fitted on planned / logged step, not on
    time-to-train, which also holds how many steps its runs happened to take; a row trained
    partly in another precision (healing) and the v6.0 rows (no logs here) on time-to-train."""
    lambda_8b = next(r for r in results if r["system"] == "Lambda / gb300_n18_ngc25.04_nemo"
                     and r["benchmark"] == "llama31_8b")
    assert lambda_8b["logged_step_s"] == pytest.approx(0.16116, rel=1e-4)
    assert lambda_8b["step_ratio"] == pytest.approx(lambda_8b["plan"].step_s / 0.16116,
                                                    rel=1e-4)
    assert all(r["step_ratio"] is None for r in results
               if r["round"] == "v6.0" or r["inputs"].get("healing_after"))
    # the residual the fit minimises is the step's where there is one
    with_step = [r for r in results if r["step_ratio"]][:3]
    assert [math.log(r["step_ratio"] or r["ratio"]) for r in with_step] == \
        [math.log(r["plan"].step_s / r["logged_step_s"]) for r in with_step]


def test_rows_inputs_reach_the_plan(bench):
    """A row's inputs are Hydra overrides of the plan group, not code that knows systems."""
    rows = {(r["benchmark"], r["system"]): r for r in bench.load_rows()}
    cisco = bench.overrides_for(rows["llama31_8b", "Cisco / hpf_n16"])
    assert "plan.overlap_tensor_parallel=0" in cisco and "parallel.tp=2" in cisco
    assert "plan.nccl_max_ctas={dp:8,tp:8,cp:null,pp:2,all:null}" in cisco
    lora = bench.overrides_for(rows["llama2_70b_lora", "NVIDIA / theia_ngpu72_ngc26.04_nemo"])
    assert {"plan.stack=megatron", "parallel.cp=8", "parallel.dp_shard=9",
            "model.recompute=false", "plan.fp8_attention=true"} <= set(lora)


def test_healing_rows_plan_their_fp8_steps(bench, results):
    """NVFP4 until HEALING_ITER, FP8 after: slower than NVFP4 throughout, faster than FP8."""
    row = next(r for r in results if r["inputs"].get("healing_after"))
    from pinchpoint.workloads import plan_point
    fp4 = plan_point(bench.row_config(row)).time_to_train.minutes
    fp8 = plan_point(bench.row_config(row, "fp8")).time_to_train.minutes
    assert fp4 < row["predicted_min"] < fp8


def test_dense_rows_fit_their_gpus(results):
    for r in results:
        if r["benchmark"].startswith("llama31") or r["benchmark"] == "deepseekv3_671b":
            assert r["fits"], r["system"]


@pytest.mark.full
def test_leave_one_submitter_out(bench):
    """The cross-validated figure the closing note reports: 160/163 within 25 %, median 8.2 %
    (issue 22's goal: at least 90 % within 25 %, median at most 10 %)."""
    rows = bench.plannable(bench.load_rows())
    cv, _ = bench.leave_one_submitter_out(rows)
    ratios = list(cv.values())
    assert len(ratios) == 163
    assert sum(0.75 <= x <= 1.25 for x in ratios) >= 160
    assert statistics.median(abs(x - 1) for x in ratios) <= 0.09


def test_gb300_sustained_rate_is_what_same_config_logs_measure(bench):
    """conf/gpu/gb300.yaml's sustained_rate is an input measured from the logs, not fitted:
    the median GB200 / GB300 logged step over rows that differ in nothing but the part (same
    round, submitter, GPU count, layout, precision and inputs; FP8/BF16, where the two have
    the same datasheet peak)."""
    from pinchpoint.plan.hardware import preset
    rows = [r for r in bench.load_rows() if r["logged_step_s"] and r["layout"]
            and r["precision"] not in ("nvfp4", "mxfp4")]

    def same(r):
        return (r["round"], r["benchmark"], r["submitter"], r["gpus"], str(r["layout"]),
                r["precision"], tuple(sorted(r["inputs"].items())))
    gb200 = {same(r): r for r in rows if "GB200" in r["accelerator"]}
    ratios = [gb200[same(r)]["logged_step_s"] / r["logged_step_s"] for r in rows
              if "GB300" in r["accelerator"] and same(r) in gb200]
    assert len(ratios) >= 3 and all(1.05 < x < 1.25 for x in ratios)
    assert preset("gb300").sustained_rate == pytest.approx(statistics.median(ratios), abs=0.005)
    assert preset("gb200").sustained_rate == preset("b300").sustained_rate == 1.0
