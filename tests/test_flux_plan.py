"""FLUX.1's step model and time-to-train (workloads/flux1/plan.py step_terms): arithmetic on
the full scale's shape, no torch."""
from __future__ import annotations

import pytest
from conftest import compose

from pinchpoint.plan.result import PlanResult
from pinchpoint.plan.hardware import preset
from pinchpoint.workloads.flux1 import plan as P


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    from omegaconf import OmegaConf
    cfg = compose(["model=flux1", "model.scale=full", "plan_only=true", "parallel.dp_shard=32",
                   "+gpu=b200"], tmp_path_factory.mktemp("flux"))
    return OmegaConf.to_object(cfg)


def test_plan_has_step_time_and_time_to_train(full):
    p = P.plan_run(full)
    assert isinstance(p, PlanResult) and p.world_size == 32 and p.global_batch == 512
    assert p.step_s == pytest.approx(sum(p.terms_s.values()))
    assert p.time_to_train.rcp == "RCP found"
    assert p.time_to_train.steps == pytest.approx(p.time_to_train.samples_to_converge / 512)
    assert "data_read" not in p.terms_s and p.details["read_term"].startswith("none")
    from pinchpoint.plan import calibration
    assert p.details["mmdit_efficiency"] == calibration.MMDIT_EFFICIENCY   # shown, not hidden


def test_mmdit_flops_count_each_token_through_its_own_side(full):
    """Forward FLOPs per sample are well under 2 x parameters x (image + text tokens): a
    double block's image side sees only image tokens and its text side only text tokens, and
    the adaLN modulation (about a quarter of the parameters) runs once per sample. Per token:
    one 12 h^2 side per double block, 12 h^2 per single block (h = 3072, mlp 4h)."""
    a = full.model.full
    txt, img = P.sequence_lengths(a)
    h = a.hidden_size
    n = P.mmdit_parameters(P._shape(a))
    forward = P.mmdit_forward_flops_per_sample(a)
    per_token = (a.depth + a.depth_single_blocks) * 12 * h * h
    attention = (a.depth + a.depth_single_blocks) * 4 * (txt + img) ** 2 * h
    assert forward == pytest.approx(2 * per_token * (txt + img) + attention, rel=0.03)
    assert 0.5 * 2 * n * (txt + img) < forward < 0.65 * 2 * n * (txt + img)


def test_raw_pipeline_adds_the_frozen_encoders(full):
    a = full.model.full
    system = preset("b200")
    pre = P.step_terms(a, 1, 8, system, "preprocessed")
    raw = P.step_terms(a, 1, 8, system, "raw")
    assert "encoders" not in pre["terms_s"] and raw["terms_s"]["encoders"] > 0
    assert raw["step_s"] > pre["step_s"]
    enc = raw["encoder_forward_flops_per_sample"]
    t5 = a.t5
    # T5-XXL's blocks dominate: ~2 x 4.7 B parameters x 256 tokens
    assert enc["t5"] > 2 * 4e9 * t5.max_tokens and enc["t5"] > enc["clip"]


def test_read_term_only_with_a_known_bandwidth(full):
    a = full.model.full
    system = preset("b200")
    slow = P.step_terms(a, 1, 8, system, "raw", read_bytes_per_s=1e6)
    assert slow["read_s"] == pytest.approx(a.batch_size * P.CC12M_RAW_BYTES_PER_SAMPLE / 1e6)
    assert slow["terms_s"]["data_read"] > 0
    fast = P.step_terms(a, 1, 8, system, "preprocessed", read_bytes_per_s=1e12)
    assert fast["terms_s"]["data_read"] == 0.0      # prefetched under compute


def test_attention_precision_follows_plan_fp8_attention(full):
    """NeMo's FLUX.1 runs MXFP8 matmuls with BF16 attention (its recipe sets no fp8_dpa):
    plan.fp8_attention=false plans that; null follows the matmuls, as for the LLMs."""
    a = full.model.full
    system = preset("b200")
    bf16 = P.step_terms(a, 1, 8, system, "preprocessed", "mxfp8", fp8_attention=False)
    fp8 = P.step_terms(a, 1, 8, system, "preprocessed", "mxfp8", fp8_attention=True)
    follows = P.step_terms(a, 1, 8, system, "preprocessed", "mxfp8")
    assert bf16["terms_s"]["compute"] > fp8["terms_s"]["compute"]
    assert follows["terms_s"]["compute"] == fp8["terms_s"]["compute"]


def test_mmdit_efficiency_scales_the_mmdit_not_a_given_mfu(full, monkeypatch):
    """calibration.MMDIT_EFFICIENCY divides the MMDiT's compute (and the evaluation forward);
    a user's gpu.mfu is the MMDiT's own fraction and is not scaled again."""
    from dataclasses import replace
    from pinchpoint.plan import calibration
    from pinchpoint.plan.compute import achieved_fraction
    a = full.model.full
    system = preset("b200")
    monkeypatch.setattr(calibration, "MMDIT_EFFICIENCY", 1.0)
    base = P.step_terms(a, 1, 8, system, "preprocessed", "mxfp8")
    monkeypatch.setattr(calibration, "MMDIT_EFFICIENCY", 0.5)
    half = P.step_terms(a, 1, 8, system, "preprocessed", "mxfp8")
    assert half["terms_s"]["compute"] == pytest.approx(2 * base["terms_s"]["compute"])
    assert half["forward_s_per_sample"] == pytest.approx(2 * base["forward_s_per_sample"])
    assert half["terms_s"]["memory"] == base["terms_s"]["memory"]
    given = replace(system, mfu=0.3)
    assert P.step_terms(a, 1, 8, given, "preprocessed", "mxfp8")["terms_s"]["compute"] == \
        pytest.approx(base["terms_s"]["compute"] * achieved_fraction(system, "mxfp8") / 0.3)
