"""GPT-OSS parameter arithmetic for the planner (no torch): every tensor of model.py counted by
hand, so tests can hold it against the meta-device model."""
from __future__ import annotations

from pinchpoint.plan import moe as moe_plan
from pinchpoint.plan.moe import MoEShape
from pinchpoint.plan.result import PlanResult
from pinchpoint.workloads.registry import spec


def attention_parameters(s) -> int:
    q = s.n_heads * s.head_dim
    kv = s.n_kv_heads * s.head_dim
    return (s.dim * q + q) + 2 * (s.dim * kv + kv) + (q * s.dim + s.dim) + s.n_heads  # + sinks


def expert_parameters(s) -> int:
    """All routed experts of one layer: gate/up (dim x 2h + 2h) and down (h x dim + dim)."""
    h = s.expert_dim
    return s.num_experts * (s.dim * 2 * h + 2 * h + h * s.dim + s.dim)


def shape(s, vocab_size: int | None = None) -> MoEShape:
    router = s.dim * s.num_experts + s.num_experts
    replicated = attention_parameters(s) + router + 2 * s.dim      # + the two norms
    q, kv = s.n_heads * s.head_dim, s.n_kv_heads * s.head_dim
    return MoEShape(name="gpt_oss_20b", vocab_size=vocab_size or s.vocab_size, dim=s.dim,
                    num_experts=s.num_experts, top_k=s.top_k, expert_dim=s.expert_dim,
                    replicated_per_layer=[replicated] * s.n_layers,
                    experts_per_layer=[expert_parameters(s)] * s.n_layers,
                    attention_widths=2 * q + 2 * kv, attention_flops_dim=2 * q,
                    attention_heads=s.n_heads,
                    final_norm=s.dim,
                    # TP (parallelize.py) leaves whole: the router (the MoE block runs on
                    # sequence shards), the two norms and wo's bias (row-parallel).
                    moe_block_per_layer=[router] * s.n_layers,
                    tp_replicated_per_layer=[3 * s.dim] * s.n_layers,
                    # model.py: even layers attend over a sliding window, odd ones causally
                    window_per_layer=[getattr(s, "sliding_window", 0) if i % 2 == 0 else 0
                                      for i in range(s.n_layers)])


def plan_run(run) -> PlanResult:
    """The full-scale pre-flight of a run config, with both the MLPerf vocabulary and the
    published one."""
    a = getattr(run.model, run.model.scale)
    published = shape(a, run.model.published_vocab_size).counts()
    extra = {"vocabulary": {
        "used": a.vocab_size,
        "used_is": "the MLPerf reference's Llama 3.1 tokenizer" if a.vocab_size == 128256
        else "this scale's", "published": run.model.published_vocab_size,
        "published_total_parameters": published["total"],
        "published_active_parameters": published["active"],
        "published_active_without_embedding": published["active_without_embedding"]}}
    return moe_plan.describe(shape(a), run, spec(run.model.name).rules, extra)
