"""The planner's arithmetic by hand: two-level collectives, layer splits and the interleaved
bubble, RCP steps against mlperf-logging's own checker, model FLOPs, presets."""
from __future__ import annotations

import json
import math

import pytest

from pinchpoint.errors import ConfigError
from pinchpoint.plan import calibration, network, pipeline, rcp
from pinchpoint.plan.hardware import preset, preset_names
from pinchpoint.plan.llm import DecoderShape, Layout, model_flops_per_sequence, step_terms

LLAMA_8B = DecoderShape(32, 4096, 32, 8, 14336, 128256)
LLAMA_405B = DecoderShape(126, 16384, 128, 8, 53248, 32000)


def test_group_spans_on_nvlink_domains():
    assert network.span(64, 1, 8) == network.Span(64, 8, 8)       # DP over 8 HGX nodes
    assert network.span(64, 8, 8) == network.Span(64, 1, 64)      # TP8 inside: DP on NICs
    assert network.span(4, 8, 72) == network.Span(4, 4, 1)        # NVL72 holds 9 of stride 8
    assert network.span(78, 4, 72) == network.Span(78, 13, 6)     # largest divisor that fits


def test_two_level_reduce_scatter_and_all_reduce_by_hand():
    h100 = preset("h100")
    nbytes = 12e9                                                 # 6e9 bf16 gradients
    s = network.span(64, 1, 8)
    inside = 7 / 8 * nbytes / 450e9                               # NVLink, per direction
    across = 7 / 8 * (nbytes / 8) / 50e9                          # 1/8 shard per NIC
    latency = 6 * network.NVLINK_HOP_S + 6 * network.NIC_HOP_S     # trees: 2 log2 8 < 7
    assert network.reduce_scatter_s(nbytes, s, h100) == pytest.approx(inside + across + latency)
    assert network.all_reduce_s(nbytes, s, h100) == pytest.approx(2 * (inside + across + latency))
    # the same group on an NVL72 rack never leaves NVLink
    gb200 = preset("gb200")
    assert network.reduce_scatter_s(nbytes, network.span(64, 1, 72), gb200) == pytest.approx(
        63 / 64 * nbytes / 900e9 + 12 * network.NVLINK_HOP_S)


def test_all_to_all_splits_peers_between_nvlink_and_nic():
    h100 = preset("h100")
    s = network.span(16, 1, 8)
    near = 7 / 16 * 1e9 / 450e9
    far = 8 / 16 * 1e9 / 50e9
    assert network.all_to_all_s(1e9, s, h100) == pytest.approx(max(near, far) +
                                                               network.latency_s(s))


def test_pp8_on_126_layers_splits_unevenly_and_interleaves():
    assert pipeline.layers_per_chunk(126, 8) == [16] * 6 + [15] * 2
    chunks = pipeline.layers_per_chunk(126, 8, 8, embedding_as_layer=True, loss_as_layer=True)
    assert len(chunks) == 64 and sum(chunks) == 126
    assert chunks[0] == 1 and chunks[-1] == 1 and set(chunks[1:-1]) == {2}
    per_rank = pipeline.layers_per_rank(chunks, 8)
    assert per_rank[0] == 15 and per_rank[7] == 15 and per_rank[1:7] == [16] * 6
    with pytest.raises(ConfigError) as err:
        pipeline.layers_per_chunk(126, 8, 8, given=[2] * 64)
    assert err.value.field == "plan.layers_per_chunk"
    # (pp - 1) / vp micro-batch times
    assert pipeline.bubble_time(1.0, 8, 8) == pytest.approx(7 / 8)
    assert pipeline.bubble_time(1.0, 8, 1) == pytest.approx(7)
    with pytest.raises(ConfigError):
        pipeline.check_interleaving(12, 8, 8)


def test_interleaving_shrinks_the_bubble_of_the_405b_step():
    gb200 = preset("gb200")
    base = dict(dp_shard=8, tp=4, pp=8, cp=2, micro_batch=1, global_batch=896,
                precision="fp8", embedding_as_layer=True, loss_as_layer=True)
    flat = step_terms(LLAMA_405B, Layout(**base), gb200)
    inter = step_terms(LLAMA_405B, Layout(**base, virtual_stages=8), gb200)
    assert inter["terms_s"]["bubble"] == pytest.approx(flat["terms_s"]["bubble"] / 8, rel=0.05)
    assert inter["step_s"] < flat["step_s"]


def test_compute_term_is_flops_over_the_calibrated_rate():
    h100 = preset("h100")
    lay = Layout(micro_batch=1, global_batch=1, seq_len=8192, precision="fp8")
    t = step_terms(LLAMA_8B, lay, h100)["terms_s"]
    rate = 1979e12 * calibration.ACHIEVED_FRACTION[("hopper", "fp8")]
    linear = 6 * 8192 * (LLAMA_8B.n_layers * (4096 * 4096 * 2 + 4096 * 1024 * 2 + 3 * 4096 *
                                              14336) + 128256 * 4096)
    attention = 6 * 32 * 8192 * 8192 * 4096
    assert t["compute"] == pytest.approx((linear + attention) / rate)
    assert t["data_parallel"] == 0 and t["bubble"] == 0


def test_model_flops_match_nemos_logged_figure():
    # NeMo's MODEL_TFLOP_PER_SAMPLE=421.59 for Llama 3.1 8B at 8192 tokens (v5.1 configs)
    assert model_flops_per_sequence(LLAMA_8B, 8192) / 1e12 == pytest.approx(421.59, rel=0.002)


def test_rcp_mean_read_from_the_shipped_file():
    path = rcp.rcp_dir("6.0.0") / "rcps_llama31_405b.json"
    record = json.loads(path.read_text())["llama31_405b_ref_1152"]
    runs = sorted(record["Epochs to converge"])[1:-1]
    c = rcp.convergence("llama31_405b", 1152, "6.0.0")
    assert c.samples == pytest.approx(sum(runs) / len(runs)) and c.how == "RCP found"
    assert c.steps == pytest.approx(c.samples / 1152)
    dlrm_runs = sorted(json.loads((rcp.rcp_dir("5.0.0") / "rcps_dlrm_dcnv2.json").read_text())
                       ["dlrm_dcnv2_ref_55296"]["Epochs to converge"])[1:-1]
    from pinchpoint.workloads import spec
    dlrm = rcp.convergence("dlrm_dcnv2", 55296, "5.0.0",   # epochs x Criteo days 0-22
                           samples_per_unit=spec("dlrm_dcnv2").rules.samples_per_rcp_unit)
    assert dlrm.samples == pytest.approx(sum(dlrm_runs) / len(dlrm_runs) * 4_195_197_692)
    with pytest.raises(ConfigError) as err:
        rcp.convergence("llama31_405b", 100000, "6.0.0")
    assert err.value.field == "global_batch_size"


@pytest.mark.parametrize("ruleset", ["5.0.0", "5.1.0", "6.0.0"])
def test_rcp_interpolation_matches_mlperf_loggings_checker(ruleset):
    from mlperf_logging.rcp_checker.rcp_checker import RCP_Checker
    for path in sorted(rcp.rcp_dir(ruleset).glob("rcps_*.json")):
        bench = path.stem.removeprefix("rcps_")
        checker = RCP_Checker("training", ruleset, bench, verbose=False)
        sizes = sorted(r["BS"] for r in checker.pruned_rcp_data.values())
        probes = sorted(set(sizes) | {(a + b) // 2 for a, b in zip(sizes, sizes[1:])} |
                        {max(1, sizes[0] // 2)})
        for bs in probes:
            record = checker._find_rcp(bs, "pruned_rcps")
            if record is None:
                low = checker._find_top_min_rcp(bs, "pruned_rcps")
                high = checker._find_bottom_max_rcp(bs, "pruned_rcps")
                record = checker._create_interp_rcp(bs, low, high)[1] if low and high else \
                    checker._find_min_rcp("pruned_rcps")
            ours = rcp.convergence(bench, bs, ruleset, below_smallest=True).samples
            assert ours == pytest.approx(float(record["RCP Mean"])), (bench, bs)


def test_every_preset_loads_with_its_peaks():
    names = set(preset_names())
    assert {"h100", "h200", "b200", "b300", "gb200", "gb300", "mi300x", "mi325x",
            "mi355x"} <= names
    for name in names:
        g = preset(name)
        assert g.peak_flops("bf16") > 0 and g.memory_bytes_per_s > 0 and g.nvlink_domain >= 4
        if g.peak_tflops_fp8:
            assert g.peak_flops("fp8") == pytest.approx(2 * g.peak_flops("bf16"), rel=0.01)
    assert preset("gb200").nvlink_domain == 72 and preset("b200").nvlink_domain == 8
    with pytest.raises(ConfigError) as err:
        preset("h100").peak_flops("nvfp4")
    assert err.value.field == "plan.precision" and "bf16, fp8" in err.value.allowed
    assert math.isclose(preset("gb300").peak_flops("nvfp4"), 1.5 * preset("gb200").peak_flops(
        "nvfp4"))


def test_sustained_rate_scales_the_calibrated_fraction_not_a_given_mfu():
    """GB300 has GB200's datasheet FP8 peak but sustains more of it (its sustained_rate);
    memory-bound time and a user's gpu.mfu are untouched."""
    from dataclasses import replace
    from pinchpoint.plan.compute import achieved_fraction, matmul_s, memory_s
    from pinchpoint.plan.hardware import system_from
    gb200, gb300 = preset("gb200"), preset("gb300")
    assert gb300.peak_flops("fp8") == gb200.peak_flops("fp8")
    assert achieved_fraction(gb300, "fp8") == pytest.approx(
        achieved_fraction(gb200, "fp8") * gb300.sustained_rate)
    assert matmul_s(1e15, gb300, "fp8") < matmul_s(1e15, gb200, "fp8")
    assert memory_s(1e9, gb300) == memory_s(1e9, gb200)
    assert achieved_fraction(replace(gb300, mfu=0.3), "fp8") == 0.3
    for bad in (0, None, "fast"):
        with pytest.raises(ConfigError) as err:
            system_from({"name": "x", "peak_tflops": 1.0, "memory_gib": 80,
                         "sustained_rate": bad})
        assert err.value.field == "gpu.sustained_rate"


def test_overlap_is_an_input():
    """plan.overlap_* override the calibrated fractions: DP traffic of a 2-node 8B step is
    exposed at overlap 0 and hidden (up to one micro-batch of compute) at overlap 1."""
    b200 = preset("b200")
    base = dict(dp_shard=16, micro_batch=2, global_batch=32, precision="nvfp4")
    exposed = step_terms(LLAMA_8B, Layout(**base, overlap={"data_parallel": 0.0}), b200)
    hidden = step_terms(LLAMA_8B, Layout(**base, overlap={"data_parallel": 1.0}), b200)
    comm = exposed["communication_s"]["data_parallel"]
    assert exposed["terms_s"]["data_parallel"] == pytest.approx(comm) and comm > 0.05
    assert hidden["terms_s"]["data_parallel"] == 0.0
    assert exposed["step_s"] - hidden["step_s"] == pytest.approx(comm)


def test_nccl_cta_caps_slow_only_the_nvlink_part_of_their_communicator():
    """Two CTAs per NVLink saturate it (NVIDIA/nccl#1703): NeMo's 8-CTA dp and tp communicators
    drive 8/36 of an 18-link H100's 450 GB/s; the NIC side is not capped."""
    h100 = preset("h100")
    assert network.capped(h100, {}, "dp") is h100
    assert network.capped(h100, {"dp": 8}, "tp") is h100
    assert network.capped(h100, {"dp": 8}, "dp").intra_node_gb_per_s == pytest.approx(100.0)
    assert network.capped(h100, {"tp": 64}, "tp").intra_node_gb_per_s == 450
    # TP2 inside one node: all of it on NVLink, 4.5x longer at 8 CTAs (hop latency aside).
    lay = dict(dp_shard=64, tp=2, micro_batch=1, global_batch=64, precision="fp8")
    free = step_terms(LLAMA_8B, Layout(**lay), h100)["communication_s"]["tp"]
    capped = step_terms(LLAMA_8B, Layout(**lay, nccl_max_ctas={"tp": 8}), h100)
    assert capped["communication_s"]["tp"] == pytest.approx(4.5 * free, rel=0.04)
    # DP of TP8 ranks: one per node, all on the NICs: the cap changes nothing.
    wide = dict(dp_shard=8, tp=8, micro_batch=1, global_batch=8, precision="fp8")
    assert step_terms(LLAMA_8B, Layout(**wide, nccl_max_ctas={"dp": 8}), h100)[
        "communication_s"]["data_parallel"] == pytest.approx(
        step_terms(LLAMA_8B, Layout(**wide), h100)["communication_s"]["data_parallel"])


def test_nccl_cta_caps_refused_by_field():
    h100 = preset("h100")
    for bad in ({"ep": 8}, {"dp": 0}):
        with pytest.raises(ConfigError) as err:
            network.capped(h100, bad, "dp")
        assert err.value.field == "plan.nccl_max_ctas" and "dp, tp, cp, pp" in err.value.allowed
    import dataclasses
    with pytest.raises(ConfigError) as err:
        network.capped(dataclasses.replace(h100, nvlink_links=None), {"dp": 8}, "dp")
    assert err.value.field == "gpu.nvlink_links"
