"""GPT-OSS and DeepSeek V3 models: forward shapes and causality at the proxy/smoke scales, and
the full-scale parameter counts (built on the meta device, nothing allocated) equal the
planner's hand count and the published totals."""
from __future__ import annotations

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
