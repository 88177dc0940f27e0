"""Issue 22 items 5 and 6: the full scales plan the reference's batch and the submissions'
precision (a batch below every RCP refused, listing them), and the hardware / precision inputs
the submissions differ by (GB300's NIC, FP8 attention, FP8 parameter all-gather, a global NCCL
CTA cap, the NVLink domain) each move the step the physically right way."""
from __future__ import annotations

import dataclasses

import pytest

from conftest import train
from pinchpoint.cli import main as cli
from pinchpoint.errors import ConfigError
from pinchpoint.plan import network
from pinchpoint.plan.hardware import preset, system_from
from pinchpoint.plan.llm import DecoderShape, Layout, step_terms
from pinchpoint.sweepers.plan_grid import plan_grid

LLAMA_8B = DecoderShape(32, 4096, 32, 8, 14336, 128256)
LLAMA_405B = DecoderShape(126, 16384, 128, 8, 53248, 32000)
DLRM_8xH200 = ["model=dlrm_dcnv2", "model.scale=full", "+gpu=h200", "parallel.dp_replicate=8",
               "parallel.ep=8"]
LLAMA_512xGB200 = ["model=llama31_405b", "model.scale=full", "+gpu=gb200", "parallel.tp=4",
                   "parallel.pp=8", "parallel.cp=2", "parallel.dp_shard=8",
                   "plan.virtual_stages=8", "plan.embedding_as_layer=true",
                   "plan.loss_as_layer=true", "model.full.recompute=false"]


def _one(overrides):
    _, points = plan_grid(overrides)
    assert len(points) == 1
    return points[0]


def test_dlrm_full_scale_plans_the_reference_batch():
    """The reference's GLOBAL_BATCH_SIZE=65536 (was the proxy's 2,048: 1.45 M steps, 19.2 min).
    8 x H200 submissions score 3.53 min at 65,536 and 3.62-3.74 at 55,296 (v5.0): the plan
    sits in their neighbourhood (calibration holds DLRM rows within 25 %)."""
    pt = _one(DLRM_8xH200)
    assert pt.error is None
    assert pt.row["global_batch"] == 65536 and pt.row["precision"] == "fp16"
    assert 3.53 * 0.8 < pt.row["time_to_train_min"] < 3.74 * 1.25
    assert pt.plan.time_to_train.steps < 60_000


def test_llama_405b_full_scale_plans_fp8_at_the_reference_batch():
    """GBS 1152 (the smallest 6.0.0 RCP), FP8 GEMMs; on 512 GB200 in NVIDIA's layout (TP4 PP8
    VP8 CP2, no recompute, asymmetric PP split: the submission's inputs) the published runs take 121-122 min at GBS 896 (v5.0, FP8); the
    plan was 309 min at BF16 with recompute. The plan must land in that neighbourhood."""
    pt = _one(LLAMA_512xGB200)
    assert pt.error is None and pt.plan.fits
    assert pt.row["global_batch"] == 1152 and pt.row["precision"] == "fp8"
    assert 85 < pt.row["time_to_train_min"] < 150
    bf16 = _one(LLAMA_512xGB200 + ["plan.precision=bf16"])
    assert bf16.row["time_to_train_min"] > 1.5 * pt.row["time_to_train_min"]


@pytest.mark.parametrize("overrides, field, sizes", [
    (DLRM_8xH200 + ["model.full.global_batch_size=2048"], "model.full.global_batch_size",
     "32768, 55296, 65536, 102400, 135168, 160000"),
    (LLAMA_512xGB200 + ["model.full.global_batch_size=512"], "model.full.global_batch_size",
     "1152, 2304, 4608"),
    # every planner reads plan.below_smallest_rcp the same way (config_access), MoE included
    (["model=gpt_oss_20b", "model.scale=full", "+gpu=b300", "parallel.dp_shard=8",
      "model.full.global_batch_size=8", "model.full.micro_batch_size=1"],
     "model.full.global_batch_size", "16, 32, 64")])
def test_a_full_scale_batch_below_every_rcp_is_refused_listing_them(overrides, field, sizes,
                                                                     capsys, tmp_path):
    pt = _one(overrides)
    assert pt.plan is None and field in pt.error and sizes in pt.error
    assert cli(["plan", *overrides, "--csv", str(tmp_path / "x.csv")]) == 2
    assert sizes in capsys.readouterr().err
    # asked for: planned at the smallest reference's samples, as MLPerf's checker scores it
    ok = _one(overrides + ["plan.below_smallest_rcp=true"])
    assert ok.error is None and "smallest RCP" in ok.plan.time_to_train.rcp


def test_train_plan_only_refuses_a_batch_below_every_rcp(tmp_path):
    proc = train(["model=dlrm_dcnv2", "model.scale=full", "plan_only=true",
                  "model.full.global_batch_size=2048", "parallel.dp_replicate=8",
                  "parallel.ep=8", "+gpu=h200"], tmp_path / "out", check=False)
    assert proc.returncode != 0
    assert "model.full.global_batch_size" in proc.stderr and "55296, 65536" in proc.stderr


def test_proxy_scales_are_not_refused_for_their_small_batches():
    assert _one(["model=llama31_405b", "parallel.dp_shard=2"]).error is None


def test_gb300_faster_than_gb200_at_fp8_for_the_same_layout():
    """Same dense FP8/BF16 peaks and HBM (datasheets, conf/gpu); GB300's ConnectX-8 NIC
    (800 Gb/s) halves the inter-rack data-parallel time; and it has 279 GB, not 186."""
    lay = Layout(dp_shard=128, tp=4, pp=1, cp=1, micro_batch=1, global_batch=128,
                 precision="fp8", overlap={"data_parallel": 0.0})
    gb200, gb300 = preset("gb200"), preset("gb300")
    assert gb300.peak_flops("fp8") == gb200.peak_flops("fp8")
    assert gb300.peak_flops("nvfp4") == 1.5 * gb200.peak_flops("nvfp4")
    assert gb300.memory_gib > gb200.memory_gib and preset("b300").memory_gib > \
        preset("b200").memory_gib
    a, b = step_terms(LLAMA_8B, lay, gb200), step_terms(LLAMA_8B, lay, gb300)
    assert b["step_s"] < a["step_s"]
    assert b["communication_s"]["data_parallel"] < a["communication_s"]["data_parallel"]


def test_fp8_attention_is_an_input():
    h100 = preset("h100")
    base = dict(dp_shard=8, micro_batch=1, global_batch=8, precision="fp8")
    default = step_terms(LLAMA_8B, Layout(**base), h100)["step_s"]
    on = step_terms(LLAMA_8B, Layout(**base, fp8_attention=True), h100)["step_s"]
    off = step_terms(LLAMA_8B, Layout(**base, fp8_attention=False), h100)["step_s"]
    assert on == pytest.approx(default) and off > on
    bf16 = dict(base, precision="bf16")
    assert step_terms(LLAMA_8B, Layout(**bf16, fp8_attention=True), h100)["step_s"] < \
        step_terms(LLAMA_8B, Layout(**bf16), h100)["step_s"]
    with pytest.raises(ConfigError) as err:
        step_terms(LLAMA_8B, Layout(**bf16, fp8_attention=True),
                   dataclasses.replace(h100, peak_tflops_fp8=None))
    assert err.value.field == "plan.fp8_attention"


def test_fp8_param_gather_halves_the_all_gather():
    h100 = preset("h100")
    base = dict(dp_shard=64, tp=1, micro_batch=1, global_batch=64, precision="fp8",
                overlap={"data_parallel": 0.0})
    a = step_terms(LLAMA_8B, Layout(**base), h100)
    b = step_terms(LLAMA_8B, Layout(**base, fp8_param_gather=True), h100)
    assert b["communication_s"]["data_parallel"] < a["communication_s"]["data_parallel"]
    assert b["step_s"] < a["step_s"]
    with pytest.raises(ConfigError) as err:
        step_terms(LLAMA_8B, Layout(**dict(base, precision="bf16"), fp8_param_gather=True),
                   h100)
    assert err.value.field == "plan.fp8_param_gather"


def test_a_global_nccl_cta_cap_slows_every_communicator():
    h100 = preset("h100")
    assert network.capped(h100, {"all": 4}, "cp").intra_node_gb_per_s == pytest.approx(50.0)
    assert network.capped(h100, {"dp": 8, "all": 4}, "dp").intra_node_gb_per_s == \
        pytest.approx(50.0)
    assert network.capped(h100, {"dp": 2, "all": 16}, "dp").intra_node_gb_per_s == \
        pytest.approx(25.0)
    lay = dict(dp_shard=4, tp=2, micro_batch=1, global_batch=4, precision="fp8")
    free = step_terms(LLAMA_8B, Layout(**lay), h100)["communication_s"]
    capped = step_terms(LLAMA_8B, Layout(**lay, nccl_max_ctas={"all": 4}), h100)[
        "communication_s"]
    assert capped["tp"] > free["tp"] and capped["data_parallel"] > free["data_parallel"]


def test_dlrm_global_cta_cap_slows_its_collectives():
    from omegaconf import OmegaConf

    from conftest import compose
    from pinchpoint.workloads.dlrm_dcnv2.plan import step_terms as dlrm_step
    arch = OmegaConf.to_object(compose(["model=dlrm"]).model).full
    h200 = preset("h200")
    free = dlrm_step(arch, 65536, 8, 8, h200)["communication_s"]
    capped = dlrm_step(arch, 65536, 8, 8, h200, max_ctas={"all": 2})["communication_s"]
    assert capped["ep"] > free["ep"]


def test_nvlink_domain_moves_tp_traffic_on_and_off_nvlink():
    """TP8 on 4-GPU trays: inside one NVL72 domain it rides NVLink; with an 8-GPU-per-node
    domain of 4 (trays alone) it crosses NICs. 64-GPU segments keep a TP8 x DP8 group inside."""
    gb200 = preset("gb200")
    trays = dataclasses.replace(gb200, nvlink_domain=4)
    lay = Layout(dp_shard=8, tp=8, micro_batch=1, global_batch=8, precision="fp8")
    on = step_terms(LLAMA_405B, lay, gb200)["communication_s"]["tp"]
    off = step_terms(LLAMA_405B, lay, trays)["communication_s"]["tp"]
    assert off > 2 * on
    seg = system_from({**dataclasses.asdict(gb200), "nvlink_domain": 64})
    assert network.span(64, 1, seg.nvlink_domain).outside == 1
    assert network.span(72, 1, seg.nvlink_domain).outside == 2
    with pytest.raises(ConfigError) as err:
        system_from({**dataclasses.asdict(gb200), "nvlink_domain": 6})
    assert err.value.field == "gpu.nvlink_domain"
