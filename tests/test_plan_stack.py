"""plan.stack: whose collectives a full-scale plan charges. megatron (NeMo / Megatron-LM, what
the published submissions run) against fsdp2 (pinchpoint's runner, torchtitan's FSDP2), for
the MoE, LoRA and FLUX.1 planners, and the reference's stack when it is null."""
from __future__ import annotations

import pytest
from conftest import plan_of

from pinchpoint.errors import ConfigError
from pinchpoint.plan.moe import MoELayout, communication_per_step
from pinchpoint.workloads import spec
from pinchpoint.workloads.gpt_oss_20b import plan as oss_plan
from pinchpoint.workloads.gpt_oss_20b.config import GptOssScaleConfig
from test_moe_models import scale

OSS = ["model=gpt_oss_20b", "model.scale=full", "plan_only=true", "parallel.dp_shard=8",
       "+gpu=b300", "model.full.global_batch_size=48", "model.full.micro_batch_size=3",
       "plan.precision=mxfp8"]


def test_null_stack_is_the_references():
    assert spec("gpt_oss_20b").rules.reference_stack == "megatron"     # Primus
    assert spec("deepseek_v3_671b").rules.reference_stack == "megatron"  # Megatron-Bridge
    assert spec("llama2_70b_lora").rules.reference_stack == "fsdp2"  # accelerate + ZeRO-3
    assert spec("flux1").rules.reference_stack == "fsdp2"            # torchtitan


def test_moe_megatron_gathers_once_a_step_in_bf16():
    """Two micro-batches: FSDP2 gathers every block twice per micro-batch (4 x) in the
    runner's bytes, Megatron's distributed optimizer once a step in BF16."""
    shape = oss_plan.shape(scale("gpt_oss_20b", GptOssScaleConfig, "full"))
    base = dict(dp_shard=8, ep=1, micro_batch=3, global_batch=48, seq_len=8192,
                precision="fp8")
    fsdp = communication_per_step(shape, MoELayout(**base, stack="fsdp2"), "b300")
    mega = communication_per_step(shape, MoELayout(**base, stack="megatron"), "b300")
    fp8 = communication_per_step(shape, MoELayout(**base, stack="megatron",
                                                  fp8_param_gather=True), "b300")
    # the experts (one FSDP unit per layer with the blocks): exactly 4 gathers against 1
    assert fsdp["expert_fsdp_all_gather"]["bytes"] == pytest.approx(
        4 * mega["expert_fsdp_all_gather"]["bytes"])
    assert fsdp["fsdp_all_gather"]["bytes"] > 2 * mega["fsdp_all_gather"]["bytes"]
    assert mega["fsdp_reduce_scatter"]["bytes"] == pytest.approx(
        mega["fsdp_all_gather"]["bytes"], rel=0.01)
    assert fp8["fsdp_all_gather"]["bytes"] == pytest.approx(
        mega["fsdp_all_gather"]["bytes"] / 2, rel=0.01)


def test_moe_full_scale_plans_the_reference_stack_unless_told(tmp_path):
    mega = plan_of(OSS, tmp_path)
    fsdp = plan_of(OSS + ["plan.stack=fsdp2"], tmp_path)
    assert mega.details["layout"]["stack"] == "megatron"
    assert fsdp.details["layout"]["stack"] == "fsdp2"
    assert mega.terms_s["data_parallel"] < fsdp.terms_s["data_parallel"]


def test_lora_megatron_replicates_the_frozen_base(tmp_path):
    base = ["model=llama2_70b_lora", "model.scale=full", "plan_only=true",
            "parallel.dp_shard=8", "+gpu=gb300", "plan.precision=fp8"]
    fsdp = plan_of(base, tmp_path)
    mega = plan_of(base + ["plan.stack=megatron"], tmp_path)
    assert fsdp.details["layout"]["stack"] == "fsdp2"        # the reference's: ZeRO-3
    comm = mega.details["step"]["communication_s"]
    assert comm["fsdp_all_gather"] == 0 and "adapter_all_reduce" in comm
    assert mega.terms_s["data_parallel"] < fsdp.terms_s["data_parallel"] / 100
    # NeMo's base: whole on every rank, in FP8 (te.fp8_model_init); the runner's: BF16 / 8
    w = mega.details["memory_per_device"]["without_recompute"]["frozen_weights_bytes"]
    assert w == mega.parameters["base"] == pytest.approx(4 * fsdp.details["memory_per_device"][
        "without_recompute"]["frozen_weights_bytes"])


def test_lora_context_parallel_is_megatrons(tmp_path):
    base = ["model=llama2_70b_lora", "model.scale=full", "plan_only=true",
            "parallel.dp_shard=9", "parallel.cp=8", "+gpu=gb300", "plan.precision=fp8",
            "model.full.global_batch_size=9", "model.recompute=false"]
    p = plan_of(base + ["plan.stack=megatron"], tmp_path)
    one = plan_of(base[:4] + ["parallel.cp=1"] + base[5:] + ["plan.stack=megatron",
                                                            "parallel.dp_shard=9"], tmp_path)
    assert "cp" in p.terms_s and p.step_s < one.step_s / 4       # 8 ranks per sequence
    with pytest.raises(ConfigError, match="parallel.cp"):
        plan_of(base + ["plan.stack=fsdp2"], tmp_path)


def test_flux_megatron_reduces_once_in_bf16(tmp_path):
    base = ["model=flux1", "model.scale=full", "plan_only=true", "parallel.dp_shard=64",
            "+gpu=gb300", "model.full.batch_size=32"]
    fsdp = plan_of(base, tmp_path)
    mega = plan_of(base + ["plan.stack=megatron"], tmp_path)
    assert set(mega.details["step"]["communication_s"]) == {"reduce_scatter", "all_gather"}
    assert mega.terms_s["data_parallel"] < fsdp.terms_s["data_parallel"]


def test_unknown_stack_is_refused_naming_the_field(tmp_path):
    with pytest.raises(ConfigError, match="plan.stack"):
        plan_of(OSS + ["plan.stack=deepspeed"], tmp_path)


def test_mxfp8_runs_at_the_fp8_rate(tmp_path):
    fp8 = plan_of(OSS[:-1] + ["plan.precision=fp8"], tmp_path)
    mx = plan_of(OSS, tmp_path)
    assert mx.terms_s["compute"] == pytest.approx(fp8.terms_s["compute"])


# --- MoE inputs read from the submissions -----------------------------------------------------
EP4 = ["model=gpt_oss_20b", "model.scale=full", "plan_only=true", "parallel.dp_shard=32",
       "parallel.ep=4", "parallel.cp=2", "+gpu=gb300", "model.full.global_batch_size=32",
       "model.full.micro_batch_size=1", "plan.precision=mxfp8"]


def test_expert_load_imbalance_slows_the_busiest_ep_rank(tmp_path):
    even = plan_of(EP4, tmp_path)
    skew = plan_of(EP4 + ["plan.expert_load_imbalance=1.5"], tmp_path)
    comm = "communication_per_step"
    assert skew.details[comm]["all_to_all_dispatch"]["bytes"] == pytest.approx(
        1.5 * even.details[comm]["all_to_all_dispatch"]["bytes"])
    assert even.terms_s["compute"] < skew.terms_s["compute"] < 1.5 * even.terms_s["compute"]
    one = plan_of(EP4[:4] + ["parallel.ep=1"] + EP4[5:], tmp_path)      # no EP: no busiest rank
    assert plan_of(EP4[:4] + ["parallel.ep=1"] + EP4[5:] + ["plan.expert_load_imbalance=1.5"],
                 tmp_path).terms_s["compute"] == pytest.approx(one.terms_s["compute"])
    with pytest.raises(ConfigError, match="plan.expert_load_imbalance"):
        plan_of(EP4 + ["plan.expert_load_imbalance=0.5"], tmp_path)


def test_overlapped_all_to_all_hides_behind_compute(tmp_path):
    exposed = plan_of(EP4, tmp_path)
    hidden = plan_of(EP4 + ["plan.overlap_expert_parallel=1"], tmp_path)
    assert exposed.terms_s["all_to_all"] > 0 and hidden.terms_s["all_to_all"] == 0


def test_selective_recompute_adds_a_forward_of_the_modules_named(tmp_path):
    none = plan_of(EP4, tmp_path).terms_s["compute"]
    mlp = plan_of(EP4 + ["plan.recompute_modules=[mlp]"], tmp_path).terms_s["compute"]
    both = plan_of(EP4 + ["plan.recompute_modules=[mlp,core_attn]"], tmp_path).terms_s["compute"]
    full = plan_of(EP4 + ["model.full.recompute=true"], tmp_path).terms_s["compute"]
    assert none < mlp < both < full <= none * 4 / 3 * 1.0001
    with pytest.raises(ConfigError, match="plan.recompute_modules"):
        plan_of(EP4 + ["plan.recompute_modules=[moe_act]"], tmp_path)


def test_lora_tensor_parallel_splits_the_frozen_base(tmp_path):
    base = ["model=llama2_70b_lora", "model.scale=full", "plan_only=true", "+gpu=h200",
            "plan.precision=fp8", "plan.stack=megatron", "model.recompute=false"]
    tp1 = plan_of(base + ["parallel.dp_shard=8"], tmp_path)
    tp4 = plan_of(base + ["parallel.dp_shard=2", "parallel.tp=4",
                        "model.full.global_batch_size=8", "model.full.micro_batch_size=4"],
                tmp_path)
    assert tp4.terms_s["tp"] >= 0 and "tp" not in tp1.terms_s
    mem = "memory_per_device"
    assert tp4.details[mem]["without_recompute"]["frozen_weights_bytes"] == pytest.approx(
        tp1.details[mem]["without_recompute"]["frozen_weights_bytes"] / 4)
    # the same 8 sequences on 8 GPUs: 4 micro-batch sequences on a quarter of the work each
    assert tp4.terms_s["compute"] == pytest.approx(tp1.terms_s["compute"], rel=0.01)
    with pytest.raises(ConfigError, match="parallel.tp"):
        plan_of(base[:-2] + ["plan.stack=fsdp2", "parallel.dp_shard=2", "parallel.tp=4",
                           "model.full.micro_batch_size=4"], tmp_path)


def test_flux_planner_refuses_model_parallel_layouts(tmp_path):
    with pytest.raises(ConfigError, match="parallel.tp"):
        plan_of(["model=flux1", "model.scale=full", "plan_only=true", "parallel.dp_shard=16",
               "parallel.tp=4", "+gpu=gb300"], tmp_path)
