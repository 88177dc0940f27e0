"""The shared MoE layer: routers, grouped experts against a per-expert reference, capacity
dropping, balancing losses and router statistics (torch only, single process)."""
from __future__ import annotations

import math

import pytest
import torch

from pinchpoint.workloads.common.moe import (MoE, MoEArgs, Router, balancing_loss, router_summary,
                                             swiglu, update_expert_bias)

GPT_OSS = dict(dim=16, expert_dim=12, num_experts=8, top_k=2, score_func="softmax",
               router_bias=True, expert_biases=True, activation="gpt_oss")
DEEPSEEK = dict(dim=16, expert_dim=12, num_experts=16, top_k=4, score_func="sigmoid",
                num_groups=4, top_groups=2, route_scale=2.5, expert_bias=True,
                shared_experts=1, balance_loss="sequence")


def make(**kw) -> MoE:
    torch.manual_seed(0)
    layer = MoE(MoEArgs(**kw))
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0, 0.3)
    return layer


def reference(layer: MoE, x: torch.Tensor) -> torch.Tensor:
    """Loop over tokens and their chosen experts, one matmul at a time (the test's slow path)."""
    flat = x.reshape(-1, x.shape[-1])
    weights, experts, _ = layer.router(flat)
    e = layer.experts
    out = torch.zeros_like(flat)
    for t in range(len(flat)):
        for w, i in zip(weights[t], experts[t]):
            h = flat[t] @ e.gate_up_proj[i]
            if e.gate_up_bias is not None:
                h = h + e.gate_up_bias[i]
            y = swiglu(h, e.activation) @ e.down_proj[i]
            if e.down_bias is not None:
                y = y + e.down_bias[i]
            out[t] += w * y
    if layer.shared_experts is not None:
        out = out + layer.shared_experts(flat)
    return out.view_as(x)


@pytest.mark.parametrize("kw", [GPT_OSS, DEEPSEEK], ids=["gpt_oss", "deepseek_v3"])
def test_grouped_experts_equal_per_expert_reference(kw):
    layer = make(**kw)
    x = torch.randn(3, 5, 16, dtype=torch.float64)
    layer.double()
    out = layer(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, reference(layer, x), rtol=1e-10, atol=1e-10)


def test_softmax_router_is_topk_then_softmax():
    router = Router(MoEArgs(**GPT_OSS))
    x = torch.randn(20, 16)
    weights, experts, probs = router(x)
    logits = router.gate(x)
    assert torch.equal(experts, logits.topk(2, dim=-1).indices)
    torch.testing.assert_close(weights.sum(-1), torch.ones(20))
    torch.testing.assert_close(probs.sum(-1), torch.ones(20))
    # The weights are a softmax over the chosen logits only (not the full distribution).
    top = logits.gather(1, experts)
    torch.testing.assert_close(weights, top.softmax(-1))


def test_sigmoid_router_groups_bias_and_scale():
    a = MoEArgs(**DEEPSEEK)
    router = Router(a)
    x = torch.randn(64, 16)
    weights, experts, _ = router(x)
    # Every token's experts come from at most top_groups of the groups.
    groups = experts // (a.num_experts // a.num_groups)
    assert max(len(set(g.tolist())) for g in groups) <= a.top_groups
    torch.testing.assert_close(weights.sum(-1), torch.full((64,), 2.5))   # route_scale
    # The bias steers the choice but not the weight: a huge bias on expert 3 picks it always,
    # and its weight is still its sigmoid score (renormalised).
    router.expert_bias[3] = 100.0
    weights, experts, _ = router(x)
    assert (experts == 3).any(-1).all()
    scores = router.gate(x).sigmoid()
    chosen = scores.gather(1, experts)
    torch.testing.assert_close(weights, 2.5 * chosen / chosen.sum(-1, keepdim=True))


def test_capacity_drops_lowest_weight_pairs():
    kw = dict(GPT_OSS, capacity_factor=0.5)
    layer = make(**kw)
    x = torch.randn(4, 8, 16)
    layer(x)
    stats = layer.router_stats
    tokens = 32
    cap = math.ceil(0.5 * tokens * 2 / 8)
    kept = stats["tokens_per_expert"].clamp(max=cap).sum()
    assert int(stats["dropped_pairs"]) == int(stats["pairs"]) - int(kept) > 0
    # Without a capacity nothing drops, and a generous factor changes nothing.
    no_drop = make(**GPT_OSS)
    generous = make(**dict(GPT_OSS, capacity_factor=100.0))
    torch.testing.assert_close(no_drop(x), generous(x))
    assert int(no_drop.router_stats["dropped_pairs"]) == 0


def test_balancing_loss_is_one_when_uniform_and_grows_with_imbalance():
    a = MoEArgs(**dict(GPT_OSS, top_k=1, num_experts=4))
    uniform_probs = torch.full((8, 4), 0.25)
    spread = torch.arange(8).remainder(4).unsqueeze(1)
    assert float(balancing_loss(uniform_probs, spread, a, 1, 8)) == pytest.approx(1.0)
    peaked = torch.tensor([[0.97, 0.01, 0.01, 0.01]]).repeat(8, 1)
    collapsed = torch.zeros(8, 1, dtype=torch.long)
    assert float(balancing_loss(peaked, collapsed, a, 1, 8)) == pytest.approx(4 * 0.97)
    seq = MoEArgs(**dict(GPT_OSS, top_k=1, num_experts=4, balance_loss="sequence"))
    # Per sequence: two sequences each balanced -> 1; the batch form agrees here.
    assert float(balancing_loss(uniform_probs, spread, seq, 2, 4)) == pytest.approx(1.0)


def test_router_summary_and_expert_bias_update():
    layer = make(**DEEPSEEK)
    layer(torch.randn(2, 16, 16))
    s = router_summary(layer)
    counts = layer.router_stats["tokens_per_expert"].float()
    assert counts.sum() == 2 * 16 * 4
    assert s["moe_tokens_per_expert_mean"] == pytest.approx(float(counts.mean()))
    assert s["moe_load_imbalance"] == pytest.approx(float(counts.max() / counts.mean()))
    assert 0 < s["moe_router_entropy"] <= math.log(16) + 1e-6
    assert s["moe_dropped_fraction"] == 0.0
    before = layer.router.expert_bias.clone()
    update_expert_bias(layer, 0.001, [counts])
    step = layer.router.expert_bias - before
    assert torch.equal(step, 0.001 * torch.sign(counts.mean() - counts))


def test_gradients_reach_router_experts_and_shared_expert():
    layer = make(**DEEPSEEK)
    out = layer(torch.randn(2, 8, 16))
    (out.square().mean() + 0.01 * layer.aux_loss).backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_aux_loss_gradient_is_injected_without_changing_the_output():
    a, b = make(**DEEPSEEK), make(**DEEPSEEK)
    x = torch.randn(2, 8, 16)
    a.aux_loss_scale = 0.25
    out_a = a(x)
    out_b = b(x)
    torch.testing.assert_close(out_a, out_b)
    out_a.sum().backward()
    (out_b.sum() + 0.25 * b.aux_loss).backward()
    torch.testing.assert_close(a.router.gate.weight.grad, b.router.gate.weight.grad)
    assert a.step_tokens_per_expert.sum() == 2 * 8 * 4


def test_grouped_mm_path_matches_padded_path():
    """The GPU path (torch._grouped_mm, bf16) computes what the CPU path (padded bmm) does; its
    forward also runs on CPU, so it is checked here to bf16 rounding."""
    from pinchpoint.workloads.common.moe import sort_pairs
    layer = make(**dict(GPT_OSS, expert_dim=16))      # the kernels want widths divisible by 8
    flat = torch.randn(24, 16)
    weights, experts, _ = layer.router(flat)
    token, _, expert, _ = sort_pairs(weights, experts, 8, None)
    counts = torch.bincount(expert, minlength=8)
    with torch.no_grad():
        grouped = layer.experts._grouped(flat[token].bfloat16(), counts).float()
        padded = layer.experts._padded(flat[token], counts)
    torch.testing.assert_close(grouped, padded, rtol=0.02, atol=0.02 * float(padded.abs().max()))
