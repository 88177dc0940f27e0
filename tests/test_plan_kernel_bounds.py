"""What bounds a kernel besides its matmuls: softmax's exponentials on the special function
units (plan/compute.py attention_s), the per-layer overhead that does not shrink with a rank's
tokens (calibration.LAYER_OVERHEAD_S), and the evaluation's forward split over TP like the
step's (the LoRA planner)."""
from __future__ import annotations

import dataclasses

import pytest
from conftest import plan_of

from pinchpoint.plan import calibration
from pinchpoint.plan.compute import attention_s, matmul_s
from pinchpoint.plan.hardware import preset


def test_fp8_attention_on_blackwell_waits_for_its_exponentials():
    """B200 and B300 have the same FP8 peak; Blackwell Ultra doubles the SFU rate. With 128-wide
    heads (512 forward FLOPs per score) the B200 forward is bound by its exponentials, the
    backward (twice the matmuls, one exponential per score) is not."""
    b200, b300 = preset("b200"), preset("b300")
    assert b200.peak_flops("fp8") == b300.peak_flops("fp8")
    flops, score = 3e15, 4 * 128
    matmuls = matmul_s(flops, b200, "fp8")
    assert attention_s(flops, b200, "fp8", score) > matmuls
    assert attention_s(flops, b300, "fp8", score) == pytest.approx(matmuls)
    # the forward alone: scores / (SFU rate x achieved fraction)
    exps = flops / 3 / score / (b200.sfu_exp_per_s * calibration.ACHIEVED_FRACTION[
        ("blackwell", "fp8")])
    assert attention_s(flops, b200, "fp8", score) == pytest.approx(
        exps + matmul_s(2 * flops / 3, b200, "fp8"))
    # a recomputed forward adds one more forward pass; no SFU rate: matmuls only
    assert attention_s(flops, b200, "fp8", score, 2) == pytest.approx(
        2 * exps + matmul_s(2 * flops / 3, b200, "fp8"))
    bare = dataclasses.replace(b200, sfu_texp_per_s=None)
    assert attention_s(flops, bare, "fp8", score) == pytest.approx(matmuls)


def test_every_layer_pass_pays_the_layer_overhead(tmp_path):
    """Llama 3.1 8B on 8 GPUs, one and four micro-batches: the overhead term is layers x
    micro-batches x the calibrated constant, whatever the tokens per rank."""
    base = ["model=llama31_8b", "model.scale=full", "plan_only=true", "+gpu=b200",
            "parallel.dp_shard=8", "plan.below_smallest_rcp=true", "model.full.recompute=false"]
    one = plan_of(base + ["model.full.global_batch_size=16", "model.full.micro_batch_size=2"],
                tmp_path)
    four = plan_of(base + ["model.full.global_batch_size=32", "model.full.micro_batch_size=1"],
                 tmp_path)
    assert one.terms_s["overhead"] == pytest.approx(32 * calibration.LAYER_OVERHEAD_S)
    assert four.terms_s["overhead"] == pytest.approx(4 * 32 * calibration.LAYER_OVERHEAD_S)


def test_moe_layers_add_their_dispatch_overhead(tmp_path):
    """GPT-OSS 20B: 24 MoE layers, one micro-batch."""
    p = plan_of(["model=gpt_oss_20b", "model.scale=full", "plan_only=true", "+gpu=b300",
               "parallel.dp_shard=8", "model.full.global_batch_size=24",
               "model.full.micro_batch_size=3", "plan.precision=mxfp8"], tmp_path)
    assert p.terms_s["overhead"] == pytest.approx(
        24 * (calibration.LAYER_OVERHEAD_S + calibration.MOE_LAYER_OVERHEAD_S))


def test_lora_evaluation_forward_is_split_over_tp(tmp_path):
    """The same dp (8) with TP4 on 32 GPUs evaluates as fast as TP1 on 8 (each TP group runs a
    quarter of every GEMM), not four times slower."""
    base = ["model=llama2_70b_lora", "model.scale=full", "plan_only=true", "+gpu=h200",
            "plan.stack=megatron", "parallel.dp_shard=8", "plan.precision=fp8",
            "model.full.global_batch_size=8", "model.full.micro_batch_size=1"]
    tp1 = plan_of(base, tmp_path).time_to_train.eval_each_s
    tp4 = plan_of(base + ["parallel.tp=4"], tmp_path).time_to_train.eval_each_s
    assert tp4 == pytest.approx(tp1 / 4, rel=0.02)
