"""Expert parallelism on 2 gloo ranks: an EP2 MoE layer's outputs and gradients equal the
single-process layer's, and its all-to-alls are profiled (calls, bytes, off-rank bytes)."""
from __future__ import annotations

import copy
import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from test_moe_layer import DEEPSEEK, GPT_OSS, make
from pinchpoint.parallel.context import shutdown

WORLD = 2


def _rank(rank: int, store_path: str, configs: list, results) -> None:
    torch.set_num_threads(1)
    store = dist.FileStore(store_path, WORLD)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=WORLD)
    try:
        results.put((rank, [_check(rank, kw) for kw in configs]))
    except Exception as e:  # report, do not hang the other rank's join
        results.put((rank, repr(e)))
        raise
    finally:
        shutdown()   # collects cycles first: no group outlives its gloo threads


def _check(rank: int, kw: dict) -> str:
    from pinchpoint.parallel.collectives import CollectiveProfile
    from pinchpoint.parallel.expert import apply_expert_parallel, scale_expert_gradients

    reference = make(**kw).double()
    layer = copy.deepcopy(reference)
    profile = CollectiveProfile()
    ep = apply_expert_parallel([layer], dist.group.WORLD, profile)
    torch.manual_seed(1)
    x = torch.randn(4, 6, kw["dim"], dtype=torch.float64)        # the global batch
    probe = torch.randn_like(x)
    full = reference(x)
    (full * probe).mean().backward()                            # single-process loss
    mine = slice(rank * 2, rank * 2 + 2)                         # data parallel: 2 sequences
    out = layer(x[mine].clone().requires_grad_())   # as inside a model: dispatch has a backward
    torch.testing.assert_close(out, full[mine], rtol=1e-12, atol=1e-12)
    # Each rank's loss is the mean over its shard; DP averages the replicated gradients.
    (out * probe[mine]).mean().backward()
    scale_expert_gradients([layer], data_parallel=WORLD)
    local = slice(ep.rank * ep.local, (ep.rank + 1) * ep.local)
    for name, p in layer.named_parameters():
        want = dict(reference.named_parameters())[name].grad
        if ".experts." in f".{name}":
            torch.testing.assert_close(p.grad, want[local], rtol=1e-10, atol=1e-12)
        else:
            g = p.grad.clone()
            dist.all_reduce(g)
            torch.testing.assert_close(g / WORLD, want, rtol=1e-10, atol=1e-12)
    stats = profile.stats[("train", "all_to_all")]
    # forward: counts + dispatch + combine; backward: combine + dispatch mirrors
    assert stats.calls == 5, stats
    assert ep.exchanges == 4 and ep.offrank_bytes > 0
    assert stats.bytes > ep.offrank_bytes                       # the profile includes own rows
    return "ok"


def _spawn(configs: list) -> None:
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        store = os.path.join(tmp, "store")
        procs = [ctx.Process(target=_rank, args=(r, store, configs, results)) for r in range(WORLD)]
        for p in procs:
            p.start()
        got = dict(results.get(timeout=120) for _ in procs)
        for p in procs:
            p.join(timeout=60)
    assert got == {r: ["ok"] * len(configs) for r in range(WORLD)}, got


def test_ep2_equals_single_process():
    """Both router families (GPT-OSS softmax + biases; DeepSeek V3 sigmoid, groups, shared
    expert) in one spawn, to pay the process start once."""
    _spawn([GPT_OSS, DEEPSEEK])


def test_ep_must_divide_experts():
    from pinchpoint.errors import ConfigError
    from pinchpoint.parallel.expert import ExpertParallel

    class Group:  # ExpertParallel only asks the group's size and rank
        pass

    import unittest.mock as um
    with um.patch.object(dist, "get_world_size", return_value=3), \
            um.patch.object(dist, "get_rank", return_value=0):
        with pytest.raises(ConfigError, match="parallel.ep"):
            ExpertParallel(Group(), None, 8)
