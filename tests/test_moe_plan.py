"""The MoE planner's layout arithmetic on the published GPT-OSS and DeepSeek V3 shapes (no
torch, no config), expected values counted from the model configs."""
from __future__ import annotations

import pytest

from pinchpoint.plan.moe import (MoELayout, activation_bytes, communication_per_step,
                                 memory_per_device, plan)
from pinchpoint.workloads.deepseek_v3_671b import plan as ds_plan
from pinchpoint.workloads.deepseek_v3_671b.config import DeepSeekScaleConfig
from pinchpoint.workloads.gpt_oss_20b import plan as oss_plan
from pinchpoint.workloads.gpt_oss_20b.config import GptOssScaleConfig
from test_moe_models import build, scale

GPU = {"name": "H200", "architecture": "hopper", "memory_gib": 131.3, "peak_tflops": 989.0,
       "mfu": None, "intra_node_gb_per_s": 450.0, "nvlink_domain": 8,
       "inter_node_gb_per_s": 50.0, "gpus_per_node": 8, "reserved_gib": 6.0}


@pytest.fixture(scope="module")
def shape():
    return oss_plan.shape(scale("gpt_oss_20b", GptOssScaleConfig, "full"))


def test_all_to_all_volume_is_offrank_rows_times_hidden(shape):
    lay = MoELayout(dp_shard=8, ep=8, micro_batch=2, global_batch=16, seq_len=8192)
    comm = communication_per_step(shape, lay, GPU)
    rows = 2 * 8192 * 4 * 7 / 8                    # tokens x top-4, 7 of 8 experts elsewhere
    one_way = rows * 2880 * 2 * 24                 # bf16, 24 MoE layers, 1 micro-batch
    assert comm["all_to_all_dispatch"]["bytes"] == pytest.approx(2 * one_way)   # fwd + bwd
    assert comm["all_to_all_combine"]["bytes"] == comm["all_to_all_dispatch"]["bytes"]
    assert "all_to_all_dispatch" not in communication_per_step(
        shape, MoELayout(dp_shard=8, ep=1, micro_batch=2, global_batch=16, seq_len=8192), GPU)


def test_experts_shard_over_ep_and_memory_falls(shape):
    one = memory_per_device(shape, MoELayout(dp_shard=1, ep=1, seq_len=8192))["worst_stage"]
    eight = memory_per_device(shape, MoELayout(dp_shard=8, ep=8, seq_len=8192))["worst_stage"]
    assert eight["expert_parameters_per_device"] == shape.counts()["routed_experts"] / 8
    assert eight["total_bytes"] < one["total_bytes"]


def test_plan_reports_fit_and_step_terms(shape):
    p = plan(shape, MoELayout(dp_shard=8, ep=8, micro_batch=2, global_batch=16,
                              seq_len=8192, recompute=True), GPU)
    assert p["fits"] and p["memory_needed_gib"] < p["memory_usable_gib"]
    t = p["terms_s"]
    assert t["compute"] > 0 and t["all_to_all"] > 0
    assert p["step_s"] == pytest.approx(sum(t.values()))
    assert p["dominant"] in t and p["world_size"] == 8


def test_plan_gives_time_to_train_with_the_rcp(shape):
    """A full plan: step time, terms and time-to-train from the RCPs its rules name."""
    from pinchpoint.workloads import spec
    lay = MoELayout(dp_shard=8, ep=1, micro_batch=3, global_batch=24, seq_len=8192)
    p = plan(shape, lay, "b300", spec("gpt_oss_20b").rules, "6.0.0", 12288, 1024)
    assert p["fits"]
    ttt = p["time_to_train"]
    assert ttt.rcp == "RCP interpolation 16..64"
    assert ttt.train_s == pytest.approx(ttt.steps * p["step_s"])


def test_layer_split_is_the_runtimes():
    """DeepSeek's 61 layers at pp=16 split as parallel/pipeline.py split_layers splits them
    (the first 61 % 16 stages take one more), not by ceiling division."""
    pytest.importorskip("torch")
    from pinchpoint.parallel.pipeline import split_layers
    from pinchpoint.plan.moe import stage_layers
    ds = ds_plan.shape(scale("deepseek_v3_671b", DeepSeekScaleConfig, "full"))
    for pp in (1, 2, 4, 8, 16):
        lay = MoELayout(pp=pp, ep=1, seq_len=4096)
        assert [stage_layers(ds, lay, r) for r in range(pp)] == \
            [split_layers(61, pp, r) for r in range(pp)]
    assert [len(split_layers(61, 16, r)) for r in range(16)] == [4] * 13 + [3] * 3


def test_all_to_all_grows_when_ep_leaves_the_nvlink_domain(shape):
    """ep = 8 inside an 8-GPU NVLink domain vs ep = 8 spread one per domain (tp = 8 puts the
    ep ranks 8 apart): the same bytes, the NIC instead of NVLink."""
    from pinchpoint.plan.moe import step_terms
    inside = MoELayout(dp_shard=8, ep=8, micro_batch=2, global_batch=16, seq_len=8192)
    across = MoELayout(dp_shard=8, ep=8, micro_batch=2, global_batch=16, seq_len=8192,
                       spans={"ep": __import__("pinchpoint.plan.network", fromlist=["Span"])
                              .Span(8, 1, 8)})
    a, b = step_terms(shape, inside, "h100"), step_terms(shape, across, "h100")
    assert b["all_to_all_s"] > 3 * a["all_to_all_s"] > 0
    assert b["terms_s"]["all_to_all"] > a["terms_s"]["all_to_all"]
    assert b["terms_s"]["compute"] == pytest.approx(a["terms_s"]["compute"])


def test_moe_compute_counts_top_k_experts_not_all(shape):
    """Routed experts cost top_k / num_experts of their parameters per token: the step's
    FLOPs follow active, not total, parameters."""
    from pinchpoint.plan.moe import layer_flops, model_flops_per_step
    lay = MoELayout(micro_batch=1, global_batch=1, seq_len=8192)
    gemm = sum(layer_flops(shape, lay, i)["gemm"] for i in range(shape.n_layers))
    c = shape.counts()
    layers_active = c["active_without_embedding"] - c["output"] - c["final_norm"]
    assert gemm == pytest.approx(6 * layers_active * 8192)
    assert model_flops_per_step(shape, lay) < 6 * c["total"] * 8192


def test_plan_settings_precision_speeds_compute(shape):
    from pinchpoint.plan.moe import step_terms
    bf16 = MoELayout(dp_shard=8, ep=8, micro_batch=2, global_batch=16, seq_len=8192)
    fp8 = MoELayout(**{**bf16.__dict__, "precision": "fp8"})
    assert step_terms(shape, fp8, "h100")["terms_s"]["compute"] < \
        step_terms(shape, bf16, "h100")["terms_s"]["compute"]


# --- tensor parallelism as the runner lays it out (workloads/common/moe_tp.py) ------------------
def oss_layer_split(s):
    """GPT-OSS per layer, counted from the config: what TP splits by heads (q/k/v with biases,
    wo's weight, the sinks), what it leaves whole outside the MoE block (two norms, wo's bias),
    the router (whole: the MoE block runs on sequence shards) and the routed experts."""
    q, kv = s.n_heads * s.head_dim, s.n_kv_heads * s.head_dim
    split = (s.dim * q + q) + 2 * (s.dim * kv + kv) + q * s.dim + s.n_heads
    whole = 2 * s.dim + s.dim
    router = s.dim * s.num_experts + s.num_experts
    h = s.expert_dim
    experts = s.num_experts * (s.dim * 2 * h + 2 * h + h * s.dim + s.dim)
    return split, whole, router, experts


@pytest.fixture(scope="module")
def oss():
    return scale("gpt_oss_20b", GptOssScaleConfig, "full")


@pytest.fixture(scope="module")
def ds():
    return scale("deepseek_v3_671b", DeepSeekScaleConfig, "full")


def test_tp_splits_attention_and_ends_but_not_the_moe_block(oss, shape):
    split, whole, router, experts = oss_layer_split(oss)
    ends = 2 * oss.vocab_size * oss.dim                 # embedding + head, both split by tp
    for tp, dp in ((1, 8), (2, 4)):
        lay = MoELayout(dp_shard=dp, ep=dp, tp=tp, micro_batch=2, seq_len=8192)
        w = memory_per_device(shape, lay)["worst_stage"]
        dense = oss.n_layers * (split / tp + whole + router) + ends / tp + oss.dim
        routed = oss.n_layers * experts / dp
        assert w["parameters_per_device"] == pytest.approx(dense / dp + routed)
        # the head gathers whole logits on every TP rank (bf16 + fp32 log-softmax and gradient)
        assert w["logits_bytes"] == pytest.approx(2 * 8192 * oss.vocab_size * (2 + 8))


def test_deepseek_tp_keeps_mla_down_projections_and_moe_block_whole(ds):
    shape = ds_plan.shape(ds)
    qk, H = ds.qk_nope_head_dim + ds.qk_rope_head_dim, ds.n_heads
    split = ds.q_lora_rank * H * qk + ds.kv_lora_rank * H * (ds.qk_nope_head_dim + ds.v_head_dim) \
        + H * ds.v_head_dim * ds.dim                   # wq_b, wkv_b (column), wo (row)
    whole = ds.dim * ds.q_lora_rank + ds.q_lora_rank + \
        ds.dim * (ds.kv_lora_rank + ds.qk_rope_head_dim) + ds.kv_lora_rank + 2 * ds.dim
    moe_block = ds.dim * ds.num_experts + 3 * ds.dim * ds.shared_experts * ds.expert_dim
    experts = ds.num_experts * 3 * ds.dim * ds.expert_dim
    lay = MoELayout(dp_shard=32, ep=32, tp=2, pp=4, seq_len=4096, global_batch=15360)
    stage = memory_per_device(shape, lay)["stages"][1]     # the runtime's split: 16..30, MoE
    per_layer = (split / 2 + whole + moe_block) / 32 + experts / 32
    assert stage["layers"] == 15
    assert stage["parameters_per_device"] == pytest.approx(15 * per_layer)


def test_tp_sums_moe_gradients_once_a_step(oss, shape):
    _, _, router, experts = oss_layer_split(oss)
    lay = MoELayout(dp_shard=4, ep=4, tp=2, micro_batch=2, global_batch=16, seq_len=8192)
    comm = communication_per_step(shape, lay, GPU)
    moe_per_device = oss.n_layers * (router / 4 + experts / 4)   # router FSDP, experts EP
    ring = 2 * (2 - 1) / 2                                       # all-reduce over tp = 2
    assert comm["tp_moe_gradient_all_reduce"]["bytes"] == pytest.approx(
        moe_per_device * 4 * ring)                                # fp32 gradients
    assert "tp_moe_gradient_all_reduce" not in communication_per_step(
        shape, MoELayout(dp_shard=8, ep=8, micro_batch=2, global_batch=16, seq_len=8192), GPU)


def test_tp_activation_collectives_are_attention_only_on_moe_layers(oss, shape):
    lay = MoELayout(dp_shard=4, ep=4, tp=2, micro_batch=2, global_batch=16, seq_len=8192)
    comm = communication_per_step(shape, lay, GPU)
    micro_batches, tokens = 2, 2 * 8192
    row = tokens * oss.dim * 2 * (2 - 1) / 2           # bf16 residual stream, half leaves
    logits = tokens * oss.vocab_size * 2 / 2
    # per layer: attention's gather in + reduce-scatter out, mirrored in backward; the
    # embedding scatters (forward) and gathers (backward); the head gathers input and logits
    layers = 2 * oss.n_layers
    assert comm["tp_reduce_scatter"]["bytes"] == pytest.approx(
        micro_batches * (layers + 1 + 1) * row)
    assert comm["tp_all_gather"]["bytes"] == pytest.approx(
        micro_batches * ((layers + 1 + 1) * row + logits))
    redo = communication_per_step(shape, MoELayout(**{**lay.__dict__, "recompute": True}), GPU)
    assert redo["tp_reduce_scatter"]["bytes"] - comm["tp_reduce_scatter"]["bytes"] == \
        pytest.approx(micro_batches * oss.n_layers * row)         # forward run again


def test_deepseek_mla_all_reduces_latent_gradients_over_tp(ds):
    shape = ds_plan.shape(ds)
    lay = MoELayout(dp_shard=32, ep=32, tp=2, pp=4, seq_len=4096, global_batch=15360)
    comm = communication_per_step(shape, lay, GPU)
    widths = ds.q_lora_rank + ds.kv_lora_rank + ds.qk_rope_head_dim
    per_layer = 2 * (2 - 1) / 2 * 4096 * widths * 2      # ring all-reduce, bf16
    assert comm["tp_all_reduce"]["bytes"] == pytest.approx(lay.accumulation * 16 * per_layer)


def test_moe_activations_are_per_sequence_shard(oss, shape):
    """A MoE layer saves at tp = 2: residual, attention sum and MoE input as shards, the
    gathered attention input whole, attention widths by heads, routed rows on seq / 2 tokens."""
    q, kv, k, h = oss.n_heads * oss.head_dim, oss.n_kv_heads * oss.head_dim, oss.top_k, \
        oss.expert_dim
    routed = oss.num_experts * 4 / 2 + k * (2 * oss.dim + 3 * h)   # fp32 logits in bf16 units
    one = MoELayout(micro_batch=2, seq_len=8192)
    two = MoELayout(micro_batch=2, seq_len=8192, tp=2)
    assert activation_bytes(shape, one, 0) == pytest.approx(
        2 * 8192 * (4 * oss.dim + 2 * q + 2 * kv + routed) * 2)
    assert activation_bytes(shape, two, 0) == pytest.approx(
        2 * 8192 * (oss.dim * 2.5 + (2 * q + 2 * kv) / 2 + routed / 2) * 2)


def test_tp1_layout_has_no_tp_terms(shape):
    c = shape.counts()
    p = plan(shape, MoELayout(dp_shard=8, ep=8, micro_batch=2, global_batch=16, seq_len=8192),
             GPU)
    assert not [k for k in p["communication_per_step"] if k.startswith("tp_")]
    assert p["gpu"] == "H200"
    assert p["memory_per_device"]["worst_stage"]["parameters_per_device"] == \
        pytest.approx(c["total"] / 8)
    assert p["terms_s"]["tp"] == 0


# What each model's parallelize.py leaves whole on every TP rank outside the MoE block.
TP_WHOLE = {"gpt_oss_20b": ("attention_norm.", "ffn_norm.", "attention.wo.bias"),
            "deepseek_v3_671b": ("attention_norm.", "ffn_norm.", "attention.wq_a.",
                                 "attention.q_norm.", "attention.wkv_a.", "attention.kv_norm.")}


@pytest.mark.parametrize("model", ["gpt_oss_20b", "deepseek_v3_671b"])
def test_tp_parameter_groups_match_the_model(model):
    """The planner's per-layer groups (built on the meta device, nothing allocated): the MoE
    block's router + shared experts, and the tensors TP leaves whole outside it."""
    s, m = build(model, "full", device="meta")
    shape = (oss_plan if model == "gpt_oss_20b" else ds_plan).shape(s)
    for i, layer in enumerate(m.layers.values()):
        named = dict(layer.named_parameters())
        moe = sum(p.numel() for n, p in named.items()
                  if n.startswith("moe.") and not n.startswith("moe.experts."))
        whole = sum(p.numel() for n, p in named.items() if n.startswith(TP_WHOLE[model]))
        assert (moe, whole) == (shape.moe_block(i), shape.tp_replicated_per_layer[i])
