"""How bytes reach the wire, by hand: ranks sharing one NIC, gloo's flat algorithms, groups
placed across nodes, and the planners that use them (FSDP2/HSDP and TP ends in plan/llm.py,
placed groups in plan/moe.py, FLUX.1's data-parallel collectives). Defaults unchanged: NCCL,
a NIC per GPU (the published results' planning is held by test_plan_calibration.py)."""
from __future__ import annotations

import dataclasses

import pytest

from pinchpoint.errors import ConfigError
from pinchpoint.plan import llm, moe, network
from pinchpoint.plan.hardware import preset

H100 = preset("h100")
# An emulated node: 2 ranks behind one link, gloo; 800 MB/s loopback, 100 MB/s link, 0.2 ms hops
EMULATED = dataclasses.replace(H100, intra_node_gb_per_s=0.8, inter_node_gb_per_s=0.1,
                               nvlink_domain=2, gpus_per_node=2, gpus_per_nic=2,
                               collectives="gloo", intra_node_hop_s=2e-4,
                               inter_node_hop_s=2e-4)
INSIDE, ACROSS = network.Span(2, 2, 1), network.Span(2, 1, 2)
WORLD = network.span(4, 1, 2)                   # 4 ranks on 2 nodes: Span(4, 2, 2)
S = 8e6


def test_defaults_are_nccl_on_a_nic_per_gpu():
    assert (H100.gpus_per_nic, H100.collectives) == (1, "nccl")
    assert network.all_gather_s(S, WORLD, H100) == network.reduce_scatter_s(S, WORLD, H100)
    assert network.latency_s(WORLD, H100) == network.latency_s(WORLD)


def test_a_shared_nic_carries_every_rank_behind_it():
    shared = dataclasses.replace(H100, gpus_per_nic=8)
    s = network.span(64, 1, 8)
    alone = 7 / 8 * (S / 8) / 50e9                  # each GPU's 1/8 shard over its own NIC
    inside = 7 / 8 * S / 450e9
    assert network.reduce_scatter_s(S, s, shared) - network.latency_s(s) == pytest.approx(
        inside + 8 * alone)
    far = 8 / 16 * S / 50e9
    assert network.all_to_all_s(S, network.span(16, 1, 8), shared) == pytest.approx(
        max(7 / 16 * S / 450e9, 8 * far) + network.latency_s(network.span(16, 1, 8)))


def test_gloo_ring_over_two_nodes_is_paced_by_its_one_crossing_edge():
    # all-reduce over 0,1 | 2,3: each rank sends 2(n-1)/n S to its successor; one edge per
    # node crosses (1 -> 2, 3 -> 0) and has the link to itself; 6 steps of the link's hop
    sent = 1.5 * S
    assert network.all_reduce_s(S, WORLD, EMULATED) == pytest.approx(sent / 0.1e9 + 6 * 2e-4)
    # all-gather: (n-1)/n S in n-1 steps; reduce-scatter: gloo all-reduces the whole buffer
    assert network.all_gather_s(S, WORLD, EMULATED) == pytest.approx(0.75 * S / 0.1e9 + 3 * 2e-4)
    assert network.reduce_scatter_s(S, WORLD, EMULATED) == network.all_reduce_s(S, WORLD,
                                                                                 EMULATED)


def test_gloo_pairs_across_share_the_link_and_pairs_inside_use_loopback():
    # 2-rank groups {0,2} {1,3}: both ranks of a node send across at once
    assert network.all_reduce_s(S, ACROSS, EMULATED) == pytest.approx(2 * S / 0.1e9 + 2 * 2e-4)
    assert network.all_reduce_s(S, INSIDE, EMULATED) == pytest.approx(S / 0.8e9 + 2 * 2e-4)
    # direct all-to-all: half of each rank's buffer to its peer on the other node, both at once
    assert network.all_to_all_s(S, ACROSS, EMULATED) == pytest.approx(2 * S / 2 / 0.1e9 + 2e-4)


def test_group_span_of_placed_groups():
    assert network.group_span([0, 2], 2) == ACROSS
    assert network.group_span([0, 1], 2) == INSIDE
    assert network.group_span([0, 1, 2, 3], 2) == WORLD


def test_unknown_algorithms_are_refused_by_field():
    with pytest.raises(ConfigError) as err:
        network.all_reduce_s(S, WORLD, dataclasses.replace(H100, collectives="mpi"))
    assert err.value.field == "gpu.collectives"


def test_gloo_has_no_ctas_to_cap():
    assert network.capped(EMULATED, {"dp": 8}, "dp") is EMULATED


TINY = llm.DecoderShape(n_layers=2, dim=64, n_heads=4, n_kv_heads=2, ffn_dim=128, vocab_size=32)


def _fsdp2(**kw):
    base = dict(micro_batch=4, global_batch=16, seq_len=32, precision="fp32", stack="fsdp2")
    return llm.step_terms(TINY, llm.Layout(**{**base, **kw}), EMULATED)["communication_s"]


def test_fsdp2_hsdp_by_hand_with_the_shard_inside_or_across():
    c = llm.parameter_counts(TINY)
    block, root = c["per_layer"] * 4, (c["embedding"] + c["output"] + c["final_norm"]) * 4

    def hsdp(shard, replicas):
        return sum(g * network.all_gather_s(b, shard, EMULATED) +
                   network.reduce_scatter_s(b, shard, EMULATED) +
                   network.all_reduce_s(b / 2, replicas, EMULATED)
                   for b, g in ((block, 2), (block, 2), (root, 1)))
    inside = _fsdp2(dp_replicate=2, dp_shard=2)["data_parallel"]
    assert inside == pytest.approx(hsdp(INSIDE, ACROSS))
    across = _fsdp2(dp_replicate=2, dp_shard=2,
                    spans={"dp_shard": ACROSS, "dp_replicate": INSIDE})["data_parallel"]
    assert across == pytest.approx(hsdp(ACROSS, INSIDE))
    assert across > 2 * inside         # the gathers and scatters cross instead of one reduce


def test_fsdp2_tp_adds_the_ends_and_follows_its_placement():
    tokens = 8 * 32                                  # one micro-batch of 8 x 32 per TP group
    row, logits = tokens * 64 * 4, tokens * 32 * 4   # fp32 residual stream, whole logits

    def tp(group):
        ag = network.all_gather_s(row, group, EMULATED)
        rs = network.reduce_scatter_s(row, group, EMULATED)
        # 2 layers x 4 gathers + 4 scatters; the embedding's and head's pair; the logits
        return 2 * (4 * ag + 4 * rs) + 2 * (ag + rs) + \
            network.all_gather_s(logits, group, EMULATED)
    assert _fsdp2(dp_shard=2, tp=2, micro_batch=8)["tp"] == pytest.approx(tp(INSIDE))
    assert _fsdp2(dp_shard=2, tp=2, micro_batch=8, spans={"tp": ACROSS})["tp"] == \
        pytest.approx(tp(ACROSS))


def test_megatron_stack_is_the_default_and_refuses_an_unknown_one():
    assert llm.Layout().stack == "megatron"
    with pytest.raises(ConfigError) as err:
        _fsdp2(stack="deepspeed")
    assert err.value.field == "plan.stack"


def test_moe_groups_placed_across_cross_the_link():
    from types import SimpleNamespace

    from pinchpoint.workloads.gpt_oss_20b.plan import shape
    a = SimpleNamespace(dim=64, n_heads=4, n_kv_heads=2, head_dim=16, num_experts=4, top_k=2,
                        expert_dim=64, n_layers=2, vocab_size=32)
    lay = dict(dp_replicate=2, dp_shard=2, ep=2, micro_batch=4, global_batch=16, seq_len=32,
               precision="fp32")
    inside = moe.communication_per_step(shape(a), moe.MoELayout(**lay), EMULATED)
    across = moe.communication_per_step(
        shape(a), moe.MoELayout(**lay, spans={"ep": ACROSS, "expert_replicate": INSIDE}),
        EMULATED)
    handed = 4 * 32 * 2 * 64 * 4                  # tokens x top_k x dim x fp32, one layer
    calls = 2 * 2                                  # forward + backward, 2 layers, 1 micro-batch
    assert inside["all_to_all_dispatch"]["seconds"] == pytest.approx(
        calls * network.all_to_all_s(handed, INSIDE, EMULATED))
    assert across["all_to_all_dispatch"]["seconds"] == pytest.approx(
        calls * network.all_to_all_s(handed, ACROSS, EMULATED))
    assert across["all_to_all_dispatch"]["bytes"] == inside["all_to_all_dispatch"]["bytes"]
    # the experts' gradients: across the link when EP stays inside, on the node otherwise
    assert across["ddp_all_reduce"]["seconds"] < inside["ddp_all_reduce"]["seconds"]


def test_flux_data_parallel_collectives_by_hand():
    from types import SimpleNamespace

    from pinchpoint.workloads.flux1 import plan as flux
    scale = SimpleNamespace(hidden_size=32, num_heads=2, depth=1, depth_single_blocks=1,
                            mlp_ratio=4.0, qkv_bias=True, vae=SimpleNamespace(latent_channels=4),
                            clip=SimpleNamespace(hidden_size=32), t5=SimpleNamespace(d_model=32))
    double, single = flux.block_parameters(flux._shape(scale))
    total = flux.mmdit_parameters(flux._shape(scale))
    ddp = flux.communication_per_step(scale, 4, 1, EMULATED)
    units = (double, single, total - double - single)
    assert ddp["all_gather"] == ddp["reduce_scatter"] == 0.0
    assert ddp["all_reduce"] == pytest.approx(
        sum(network.all_reduce_s(u * 4, WORLD, EMULATED) for u in units))
    hsdp = flux.communication_per_step(scale, 2, 2, EMULATED)
    assert hsdp["all_gather"] == pytest.approx(
        sum(g * network.all_gather_s(u * 4, INSIDE, EMULATED)
            for u, g in zip(units, (2, 2, 1))))
    assert hsdp["all_reduce"] == pytest.approx(
        sum(network.all_reduce_s(u * 2, ACROSS, EMULATED) for u in units))
