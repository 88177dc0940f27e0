"""GPT-OSS and DeepSeek V3 models: forward shapes and causality at the proxy/smoke scales, and
the full-scale parameter counts (built on the meta device, nothing allocated) equal the
planner's hand count and the published totals."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from pinchpoint.workloads.deepseek_v3_671b import plan as ds_plan
from pinchpoint.workloads.deepseek_v3_671b.config import DeepSeekScaleConfig
from pinchpoint.workloads.deepseek_v3_671b.model import DeepSeekArgs, DeepSeekV3
from pinchpoint.workloads.gpt_oss_20b import plan as oss_plan
from pinchpoint.workloads.gpt_oss_20b.config import GptOssModelConfig, GptOssScaleConfig
from pinchpoint.workloads.gpt_oss_20b.model import GptOss, GptOssArgs, attention_mask

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"


def scale(model: str, schema, which: str):
    values = OmegaConf.load(CONF / f"{model}.yaml")[which]
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), values))


def build(model: str, which: str, device: str = "cpu"):
    if model == "gpt_oss_20b":
        s = scale(model, GptOssScaleConfig, which)
        args, cls = GptOssArgs.from_scale(s), GptOss
    else:
        s = scale(model, DeepSeekScaleConfig, which)
        args, cls = DeepSeekArgs.from_scale(s), DeepSeekV3
    with torch.device(device):
        return s, cls(args)


@pytest.mark.parametrize("model", ["gpt_oss_20b", "deepseek_v3_671b"])
@pytest.mark.parametrize("which", ["proxy", "smoke"])
def test_forward_shape_and_causality(model, which):
    torch.manual_seed(0)
    s, m = build(model, which)
    tokens = torch.randint(0, s.vocab_size, (2, s.seq_len))
    logits = m(tokens)
    assert logits.shape == (2, s.seq_len, s.vocab_size)
    assert torch.isfinite(logits).all()
    # A later token never changes an earlier position's logits.
    changed = tokens.clone()
    changed[:, -1] = (changed[:, -1] + 1) % s.vocab_size
    torch.testing.assert_close(m(changed)[:, :-1], logits[:, :-1], rtol=1e-5, atol=1e-5)


def test_sliding_window_alternates_and_limits_reach():
    s, m = build("gpt_oss_20b", "proxy")
    windows = [layer.attention.window for layer in m.layers.values()]
    assert windows == [s.sliding_window, None] * (s.n_layers // 2)
    mask = attention_mask(6, 2, "cpu")
    assert mask.sum(1).tolist() == [1, 2, 2, 2, 2, 2]     # itself and one token back
    assert attention_mask(6, None, "cpu").sum(1).tolist() == [1, 2, 3, 4, 5, 6]


def test_sinks_take_attention_mass():
    torch.manual_seed(0)
    s, m = build("gpt_oss_20b", "smoke")
    attn = m.layers["1"].attention
    x = torch.randn(1, 8, s.dim)
    before = attn(x, m.rope)
    with torch.no_grad():
        attn.sinks.fill_(30.0)        # a dominant sink: heads attend to (almost) nothing
    after = attn(x, m.rope)
    bias_only = attn.wo.bias.expand_as(after)
    assert (after - bias_only).abs().max() < 1e-6 < (before - bias_only).abs().max()


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_gpt_oss_full_parameters_match_planner_and_published():
    s, m = build("gpt_oss_20b", "full", device="meta")
    shape = oss_plan.shape(s)
    assert count(m) == shape.counts()["total"]
    experts = sum(count(layer.moe.experts) for layer in m.layers.values())
    assert experts == shape.counts()["routed_experts"]
    # With OpenAI's own 201,088-token vocabulary the model card's 20.91 B total and 3.61 B
    # active (the card leaves the input embedding out of "active").
    published = oss_plan.shape(s, GptOssModelConfig().published_vocab_size).counts()
    assert 20.90e9 < published["total"] < 20.92e9
    assert 3.60e9 < published["active_without_embedding"] < 3.62e9


def test_deepseek_v3_full_parameters_match_planner_and_published():
    s, m = build("deepseek_v3_671b", "full", device="meta")
    shape = ds_plan.shape(s)
    assert count(m) == shape.counts()["total"]
    experts = sum(count(layer.moe.experts) for layer in m.layers.values()
                  if layer.moe is not None)
    assert experts == shape.counts()["routed_experts"]
    c = shape.counts()
    assert 670e9 < c["total"] < 672e9          # 671 B (without the MTP module)
    assert 37e9 < c["active"] < 38e9           # 37 B activated per token


@pytest.mark.parametrize("model", ["gpt_oss_20b", "deepseek_v3_671b"])
def test_recompute_counts_each_token_once(model):
    """Activation checkpointing runs each block's forward again in backward: the step's tokens
    per expert (router statistics, DeepSeek's bias rule) must not count them twice."""
    from pinchpoint.workloads.common.moe import reset_step_counts, step_counts
    s, m = build(model, "smoke")
    tokens = torch.randint(0, s.vocab_size, (2, s.seq_len))
    counts = {}
    for recompute in (False, True):
        m.recompute = recompute
        reset_step_counts(m)
        m(tokens).float().logsumexp(-1).mean().backward()
        counts[recompute] = step_counts(m).clone()
    assert counts[False].sum() == 2 * s.seq_len * s.top_k * len(counts[False])   # every pair
    assert torch.equal(counts[True], counts[False])


# --- RoPE scaling: YaRN as the released checkpoints and transformers compute it -------------------
def _hf_rotary(model: str, positions: int):
    """transformers' (inv_freq, attention factor) and (cos, sin) for the published config."""
    import transformers
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    if model == "gpt_oss_20b":
        config = transformers.GptOssConfig(head_dim=64, rope_parameters={
            "rope_type": "yarn", "rope_theta": 150000.0, "factor": 32.0, "beta_fast": 32.0,
            "beta_slow": 1.0, "truncate": False, "original_max_position_embeddings": 4096})
        rotary = transformers.models.gpt_oss.modeling_gpt_oss.GptOssRotaryEmbedding(config)
    else:
        config = transformers.DeepseekV3Config(qk_rope_head_dim=64, rope_parameters={
            "rope_type": "yarn", "rope_theta": 10000.0, "factor": 40.0, "beta_fast": 32,
            "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0,
            "original_max_position_embeddings": 4096}, max_position_embeddings=163840)
        rotary = transformers.models.deepseek_v3.modeling_deepseek_v3.DeepseekV3RotaryEmbedding(
            config)
    inv_freq, factor = ROPE_INIT_FUNCTIONS["yarn"](config)
    cos, sin = rotary(torch.zeros(1, dtype=torch.float32), torch.arange(positions)[None])
    return config, inv_freq, factor, cos[0, :, :32], sin[0, :, :32]


@pytest.mark.parametrize("model,theta", [("gpt_oss_20b", 150000.0), ("deepseek_v3_671b", 10000.0)])
def test_yarn_matches_transformers_on_the_published_settings(model, theta):
    """The full scale's yarn settings give transformers' frequencies, attention factor and
    cos/sin (and DeepSeek's softmax scale) to float tolerance, at every position up to 32768."""
    from pinchpoint.workloads.common import rotary
    pytest.importorskip("transformers")
    s, _ = build(model, "full", device="meta")
    yarn = rotary.Yarn(**vars(s.yarn))
    config, inv_freq, factor, cos, sin = _hf_rotary(model, 32768)
    ours = rotary.inverse_frequencies(64, theta, yarn)
    torch.testing.assert_close(ours, inv_freq, rtol=1e-6, atol=0)
    assert rotary.attention_factor(yarn) == pytest.approx(factor, rel=1e-12)
    angles = rotary.rotary_table(64, theta, 32768, yarn)[:, :32]
    torch.testing.assert_close(angles.cos() * rotary.attention_factor(yarn), cos, rtol=0, atol=1e-6)
    torch.testing.assert_close(angles.sin() * rotary.attention_factor(yarn), sin, rtol=0, atol=1e-6)
    if model == "deepseek_v3_671b":
        from transformers.modeling_rope_utils import yarn_apply_mscale
        head = 128 + 64
        assert rotary.softmax_scale_factor(yarn) / head ** 0.5 == pytest.approx(
            yarn_apply_mscale(config.rope_parameters, head ** -0.5), rel=1e-12)


def test_yarn_changes_gpt_oss_at_every_position_not_only_past_4096():
    """The released GPT-OSS RoPE (yarn) against plain: q and k scaled by 1.347 from position 0,
    the slowest frequency turned 32x slower, and the model's logits different at every one of
    the first 32 positions."""
    import dataclasses

    from pinchpoint.workloads.common import rotary
    s, _ = build("gpt_oss_20b", "full", device="meta")
    yarn = rotary.Yarn(**vars(s.yarn))
    assert rotary.attention_factor(yarn) == pytest.approx(0.1 * math.log(32) + 1)
    freqs = rotary.inverse_frequencies(64, 150000.0, yarn) / rotary.inverse_frequencies(64,
                                                                                        150000.0)
    assert freqs[0] == 1 and freqs[-1] == pytest.approx(1 / 32)
    torch.manual_seed(0)
    _, plain = build("gpt_oss_20b", "smoke")
    scaled = GptOss(dataclasses.replace(plain.args, yarn=yarn))
    scaled.load_state_dict(plain.state_dict())
    tokens = torch.randint(0, 256, (2, 32))
    with torch.no_grad():
        change = (scaled(tokens) - plain(tokens)).abs().amax(dim=(0, 2))
    assert (change > 1e-6).all(), change


def test_rope_scaling_defaults_follow_the_mlperf_references():
    """GPT-OSS: plain RoPE (the Primus reference); DeepSeek V3: YaRN (the Megatron-Bridge one),
    with its softmax correction in the attention."""
    for which in ("proxy", "smoke", "full"):
        oss, _ = build("gpt_oss_20b", which, device="meta")
        ds, model = build("deepseek_v3_671b", which, device="meta")
        assert (oss.rope_scaling, ds.rope_scaling) == ("none", "yarn")
    attention = model.layers["0"].attention
    head = ds.qk_nope_head_dim + ds.qk_rope_head_dim
    assert attention.softmax_scale == pytest.approx((0.1 * math.log(40) + 1) ** 2 / head ** 0.5)
    assert attention.rope_scale == 1.0
