"""DeepSeek V3 parameter arithmetic for the planner (no torch): every tensor of model.py
counted by hand, so tests can hold it against the meta-device model."""
from __future__ import annotations


from pinchpoint.plan import moe as moe_plan
from pinchpoint.plan.moe import MoEShape
from pinchpoint.plan.result import PlanResult
from pinchpoint.workloads.registry import spec


def attention_parameters(s) -> int:
    qk = s.qk_nope_head_dim + s.qk_rope_head_dim
    return (s.dim * s.q_lora_rank + s.q_lora_rank                  # wq_a, q_norm
            + s.q_lora_rank * s.n_heads * qk                        # wq_b
            + s.dim * (s.kv_lora_rank + s.qk_rope_head_dim) + s.kv_lora_rank   # wkv_a, kv_norm
            + s.kv_lora_rank * s.n_heads * (s.qk_nope_head_dim + s.v_head_dim)  # wkv_b
            + s.n_heads * s.v_head_dim * s.dim)                     # wo


def shape(s) -> MoEShape:
    attention = attention_parameters(s) + 2 * s.dim                  # + the two norms
    dense = 3 * s.dim * s.dense_ffn_dim
    shared = 3 * s.dim * s.shared_experts * s.expert_dim
    router = s.dim * s.num_experts          # no bias parameter (the selection bias is a buffer)
    experts = s.num_experts * 3 * s.dim * s.expert_dim
    is_dense = [i < s.n_dense_layers for i in range(s.n_layers)]
    qk = s.qk_nope_head_dim + s.qk_rope_head_dim
    widths = s.q_lora_rank + s.kv_lora_rank + s.n_heads * (2 * qk + 2 * s.v_head_dim)
    # TP (parallelize.py) leaves whole the MLA down projections and their norms, the block's
    # two norms and the MoE block (router + shared experts, on sequence shards).
    down = s.dim * (s.q_lora_rank + s.kv_lora_rank + s.qk_rope_head_dim) + \
        s.q_lora_rank + s.kv_lora_rank
    moe_block = shared + router
    return MoEShape(name="deepseek_v3_671b", vocab_size=s.vocab_size, dim=s.dim,
                    num_experts=s.num_experts, top_k=s.top_k, expert_dim=s.expert_dim,
                    replicated_per_layer=[attention + (dense if d else moe_block)
                                          for d in is_dense],
                    experts_per_layer=[0 if d else experts for d in is_dense],
                    attention_widths=widths,
                    attention_flops_dim=s.n_heads * (qk + s.v_head_dim),
                    attention_heads=s.n_heads,
                    dense_ffn_dims=[s.dense_ffn_dim if d else s.shared_experts * s.expert_dim
                                    for d in is_dense],
                    final_norm=s.dim,
                    moe_block_per_layer=[0 if d else moe_block for d in is_dense],
                    tp_replicated_per_layer=[down + 2 * s.dim] * s.n_layers,
                    attention_replicated_widths=s.q_lora_rank + s.kv_lora_rank,
                    attention_grad_all_reduce_widths=s.q_lora_rank + s.kv_lora_rank
                    + s.qk_rope_head_dim,
                    sequence_balance=True)


def plan_run(run) -> PlanResult:
    """The full-scale pre-flight of a run config; time-to-train from the RCPs its MLPerfRules
    name (mlperf-logging's ``deepseekv3_671b``)."""
    return moe_plan.describe(shape(getattr(run.model, run.model.scale)), run,
                             spec(run.model.name).rules)
