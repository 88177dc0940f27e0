"""benchmarks/gpu_check.py's model checks, the parts that need no GPU: the verdicts on fake
measurements, the device name -> planner preset mapping, the planner's FLOP count of a Llama
block against what torch counts, the MoE paths' fp32 forward, and the rows a CPU run prints."""
from __future__ import annotations

import tempfile

import pytest
import torch
from conftest import load_script

gc = load_script("benchmarks/gpu_check.py", "gpu_check")


@pytest.mark.parametrize("planned, status", [(110, "ok"), (115, "ok"), (86, "ok"),
                                             (116, "fail"), (84, "fail")])
def test_memory_verdict_is_planned_over_measured_within_15_percent(planned, status):
    v = gc.memory_verdict(100.0, float(planned))
    assert v["status"] == status
    assert v["error"] == pytest.approx(planned / 100 - 1)
    detail = gc.memory_detail({**v, "planned": {"precision": "bf16"},
                               "phases": [{"forward_backward_peak_bytes": 90.0}]})
    assert "peak in the optimizer step" in detail and f"{planned / 100 - 1:+.1%}" in detail


def test_the_memory_case_is_planned_at_bf16_and_fits_an_h100_comfortably():
    from pinchpoint.plan.hardware import preset
    with tempfile.TemporaryDirectory() as tmp:
        planned = gc.planned_memory(gc.memory_config("cuda", tmp))
    assert planned["precision"] == "bf16"
    assert planned["activation_bytes"] > 0 and planned["logits_bytes"] > 0
    assert 20 * 2**30 < planned["total_bytes"] < 0.7 * preset("h100").usable_bytes


@pytest.mark.parametrize("name, preset", [
    ("NVIDIA H100 80GB HBM3", "h100"), ("NVIDIA H200", "h200"), ("NVIDIA H200 NVL", "h200_nvl"),
    ("NVIDIA B200", "b200"), ("NVIDIA GB200", "gb200"), ("NVIDIA B300 SXM6 AC", "b300"),
    ("AMD Instinct MI300X", "mi300x"), ("AMD Instinct MI355X", "mi355x"),
    # other cards, or variants whose peaks differ from the SXM preset: no preset
    ("NVIDIA H100 PCIe", None), ("NVIDIA H100 NVL", None), ("NVIDIA A100-SXM4-80GB", None),
    ("Tesla V100-SXM2-16GB", None), ("", None)])
def test_device_name_to_preset(name, preset):
    from pinchpoint.plan.hardware import preset_names
    assert gc.gpu_preset(name) == preset
    assert preset is None or preset in preset_names()


def test_planner_flop_count_is_what_torch_counts_in_a_llama_block():
    """On the meta device SDPA decomposes to bmm over the whole (non-causal) square: twice the
    planner's causal attention; the matmuls are the planner's 6 x linear parameters x tokens."""
    from pinchpoint.workloads.llama31.model import Llama, LlamaArgs
    args = LlamaArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=160, vocab_size=32,
                     max_seq_len=128)
    with torch.device("meta"):
        model = Llama(args)
    counted = gc.counted_block_flops(model.layers, model.rope, micro_batch=2, seq_len=96)
    plan = gc.planned_block(args, 2, seq_len=96, micro_batch=2, preset=None)
    assert counted == {"mm": plan["gemm_flops"], "bmm": 2 * plan["attention_flops"]}


def test_layer_flops_add_up_to_the_model_flops_per_sequence():
    from pinchpoint.plan.llm import (DecoderShape, Layout, layer_flops,
                                     model_flops_per_sequence)
    s = DecoderShape(n_layers=32, dim=4096, n_heads=32, n_kv_heads=8, ffn_dim=14336,
                     vocab_size=128256)
    seq = 8192
    per = layer_flops(s, Layout(seq_len=seq))
    norms_and_head = 6 * (2 * s.dim * s.n_layers + s.dim + s.vocab_size * s.dim) * seq
    assert s.n_layers * (per["gemm"] + per["attention"]) + norms_and_head == \
        pytest.approx(model_flops_per_sequence(s, seq))


def test_flops_verdict_against_the_h100_preset():
    from pinchpoint.workloads.llama31.model import LlamaArgs
    args = LlamaArgs(dim=4096, n_layers=2, n_heads=32, n_kv_heads=8, ffn_dim=14336,
                     vocab_size=256, max_seq_len=8192)
    from pinchpoint.plan import calibration
    f = calibration.ACHIEVED_FRACTION[("hopper", "bf16")]      # the shipped, fitted value
    plan = gc.planned_block(args, 2, seq_len=4096, micro_batch=1, preset="h100")
    assert plan["peak_tflops"] == 989 and plan["achieved_fraction"] == pytest.approx(f)
    # exactly the planner's compute term: rate ratio 1, the planner's fraction of peak
    v = gc.flops_verdict(plan["compute_s"], plan)
    assert v["status"] == "ok" and v["rate_ratio"] == pytest.approx(1.0)
    assert v["fraction_of_peak"] == pytest.approx(f)
    assert v["achieved_tflops"] == pytest.approx(f * 989)
    assert v["time_ratio"] == pytest.approx(plan["compute_s"] / (plan["compute_s"] +
                                                                 plan["memory_s"]))
    half = gc.flops_verdict(2 * plan["compute_s"], plan)
    assert half["rate_ratio"] == pytest.approx(0.5) and "0.50" in gc.flops_detail(half)
    # faster than the tensor cores' peak: the count or the timing is wrong
    assert gc.flops_verdict(plan["flops"] / 1000e12, plan)["status"] == "fail"
    # no preset: the rate only
    bare = gc.flops_verdict(0.01, {**plan, "preset": None})
    assert "rate_ratio" not in bare and "no planner preset" in gc.flops_detail(bare)


def test_moe_verdict_and_compare():
    ref = torch.tensor([1.0, -2.0, 2.0])
    e = gc.compare(ref + torch.tensor([0.0, 0.03, 0.0]), ref)
    assert e["max_abs"] == pytest.approx(0.03) and e["max_ref"] == 2.0
    assert e["rel"] == pytest.approx(0.01)
    v = gc.moe_verdict({"a": e, "b": {**e, "rel": 0.05}}, 2e-2)
    assert v["status"] == "fail" and v["worst"] == "b"
    assert gc.moe_verdict({"a": e}, 2e-2)["status"] == "ok"


def test_moe_paths_agree_in_fp32_on_cpu():
    v = gc.moe_cpu()
    assert v["status"] == "ok", v
    assert {"padded vs loop", "grouped vs loop", "grouped vs padded"} <= set(v["errors"])
    _, _, counts = gc.moe_case(gc.moe_args(tiny=True), 64, "cpu")
    assert counts[-1] == 0 and counts.sum() == 64 * 2 and counts.max() > counts[:-1].min()


def test_cpu_rows_say_what_needs_cuda():
    rows = {r["check"]: r for r in gc.cuda_only("cpu")}
    memory, flops, moe = (rows[gc.NAMES[k]] for k in ("memory", "flops", "moe"))
    assert memory["status"] == "needs CUDA"
    assert flops["status"] == "needs CUDA" and flops["flop_count_matches"]
    assert moe["status"] == "ok, cpu part"
