"""The MoE planner's layout arithmetic on the published GPT-OSS shape (no torch, no config)."""
from __future__ import annotations

import pytest

from pinchpoint.plan.moe import MoELayout, communication_per_step, memory_per_device, plan
from pinchpoint.workloads.gpt_oss_20b import plan as oss_plan
from pinchpoint.workloads.gpt_oss_20b.config import GptOssScaleConfig
from test_moe_models import scale

GPU = {"name": "H200", "architecture": "hopper", "memory_gib": 131.3, "peak_tflops": 989.0,
       "mfu": None, "intra_node_gb_per_s": 450.0, "nvlink_domain": 8,
       "inter_node_gb_per_s": 50.0, "gpus_per_node": 8, "reserved_gib": 6.0}


@pytest.fixture(scope="module")
def shape():
    return oss_plan.shape(scale("gpt_oss_20b", GptOssScaleConfig, "full"))


def test_all_to_all_volume_is_offrank_rows_times_hidden(shape):
    lay = MoELayout(dp_shard=8, ep=8, micro_batch=2, global_batch=16, seq_len=8192)
    comm = communication_per_step(shape, lay, GPU)
    rows = 2 * 8192 * 4 * 7 / 8                    # tokens x top-4, 7 of 8 experts elsewhere
    one_way = rows * 2880 * 2 * 24                 # bf16, 24 MoE layers, 1 micro-batch
    assert comm["all_to_all_dispatch"]["bytes"] == pytest.approx(2 * one_way)   # fwd + bwd
    assert comm["all_to_all_combine"]["bytes"] == comm["all_to_all_dispatch"]["bytes"]
    assert "all_to_all_dispatch" not in communication_per_step(
        shape, MoELayout(dp_shard=8, ep=1, micro_batch=2, global_batch=16, seq_len=8192), GPU)


def test_experts_shard_over_ep_and_memory_falls(shape):
    one = memory_per_device(shape, MoELayout(dp_shard=1, ep=1, seq_len=8192))["worst_stage"]
    eight = memory_per_device(shape, MoELayout(dp_shard=8, ep=8, seq_len=8192))["worst_stage"]
    assert eight["expert_parameters_per_device"] == shape.counts()["routed_experts"] / 8
    assert eight["total_bytes"] < one["total_bytes"]


def test_plan_reports_fit_and_step_terms(shape):
    p = plan(shape, MoELayout(dp_shard=8, ep=8, micro_batch=2, global_batch=16,
                              seq_len=8192, recompute=True), GPU)
    assert p["fits"] and p["memory_needed_gib"] < p["memory_usable_gib"]
    t = p["step_time"]
    assert t["compute_seconds"] > 0 and t["all_to_all_seconds"] > 0
    assert t["step_seconds_no_overlap"] >= t["step_seconds_full_overlap"]
