"""MoE layouts on gloo/CPU train the same numbers as one process: without token dropping the
first steps' losses of EP2 (experts split over 2 replicated data-parallel ranks), EP2 x FSDP2
(the rest sharded) and PP2 match the single-process run (GPT-OSS; DeepSeek V3 with its
balancing loss and expert-bias updates under EP2 x FSDP2), and EP's all-to-alls show in the
collective profile; an EP2 x FSDP2 checkpoint resumes in one process on the same losses. EP4
(4 ranks) is in test_moe_e2e.py, marked slow."""
from __future__ import annotations

import functools

import pytest

import harness

DATA = ["dataset.train_tokens=40000", "dataset.validation_tokens=4000", "tracking.enabled=false"]
# The balancing loss on (GPT-OSS's reference trains without it): its gradient must be divided
# per micro-batch once, also under pipelining, whose schedule scales gradients itself.
GPT = ["model=gpt_oss_20b", "model.scale=smoke", "model.smoke.aux_loss_coeff=0.01", *DATA]
DS = ["model=deepseek_v3_671b", "model.scale=smoke", *DATA]
STEPS = 4
TOLERANCE = 2e-5     # fp32; the layouts reorder sums (all-to-all, reduce-scatter, split batches)
LAYOUTS = {"ep2": ["parallel=ep2"], "ep2fsdp2": ["parallel=ep2fsdp2"], "pp2": ["parallel=pp2"]}


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("moe_layouts"))
    return root, harness.run_layouts([(GPT, None), (DS, None)], root, STEPS)


def test_two_rank_moe_layouts_match_single_process(single, tmp_path):
    root, (gpt, ds) = single
    # The EP x FSDP2 runs also checkpoint at step 2 (experts saved as the global tensors they
    # are slices of); one process resumes both below.
    saved = {m: functools.partial(harness.save_then_continue, str(tmp_path / m), 2)
             for m in ("gpt", "ds")}
    jobs = [(GPT + o, saved["gpt"] if n == "ep2fsdp2" else None) for n, o in LAYOUTS.items()]
    jobs += [(DS + LAYOUTS["ep2fsdp2"], saved["ds"])]
    results = harness.run_layouts(jobs, root, STEPS)
    names = [f"gpt_oss {n}" for n in LAYOUTS] + ["deepseek ep2fsdp2"]
    expected = [gpt["losses"]] * len(LAYOUTS) + [ds["losses"]]
    for name, want, got in zip(names, expected, results):
        print(name, "max |loss difference|",
              max(abs(a - b) for a, b in zip(want, got["losses"])))
        assert got["losses"] == pytest.approx(want, abs=TOLERANCE), (name, got["losses"], want)
    assert gpt["losses"][-1] < gpt["losses"][0] and ds["losses"][-1] < ds["losses"][0]
    ep2 = results[0]["collectives"]
    # counts + dispatch + combine forward, combine + dispatch backward, per MoE layer and
    # micro-batch; a layout without EP has none
    assert ep2["comm_all_to_all_calls_per_step"] > 0 and ep2["comm_all_to_all_bytes_per_step"] > 0
    assert results[2]["collectives"]["comm_all_to_all_calls_per_step"] == 0     # pp2: no EP
    resumed = harness.run_layouts(
        [(model, functools.partial(harness.load_and_continue, str(tmp_path / m), 2))
         for model, m in ((GPT, "gpt"), (DS, "ds"))], root, STEPS)
    for want, got in zip((gpt, ds), resumed):
        assert got["read_bytes"] > 0
        assert got["losses"] == pytest.approx(want["losses"][2:], abs=TOLERANCE), got
