"""Every layout that runs on gloo/CPU trains the same numbers as one process: the first steps'
losses of FSDP2, TP (+ sequence parallel), PP (1F1B and GPipe) and TP x PP match the
single-process run, and a DCP checkpoint saved in one layout resumes in another."""
from __future__ import annotations

import functools

import pytest

import harness

# The smoke scale: 2 layers, 4 heads / 2 KV heads (GQA), seq 32, global batch 8 of
# micro-batches of 2.
TINY_LLAMA = ["model=llama31_8b", "model.scale=smoke", "dataset.train_tokens=40000",
              "dataset.validation_tokens=4000", "tracking.enabled=false"]
STEPS = 4
# fp32 throughout; the layouts only reorder sums (reduce-scatter, split matmuls).
TOLERANCE = 2e-5
TWO_RANK = {"fsdp2": ["parallel=fsdp2"], "tp2": ["parallel=tp2"],
            "pp2_1f1b": ["parallel=pp2"], "pp2_gpipe": ["parallel=pp2",
                                                        "model.pipeline_schedule=gpipe"]}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("llama_layouts"))
    return root, harness.run_layout(TINY_LLAMA, root, STEPS)["losses"]


def test_two_rank_layouts_match_single_process_and_reshard(reference, tmp_path):
    """One spawn of 2 ranks runs every 2-rank layout, then saves a DCP checkpoint under FSDP2
    and resumes it under TP; the parent resumes the same checkpoint in one process."""
    root, expected = reference
    path = str(tmp_path / "checkpoints")
    jobs = [(TINY_LLAMA + o, None) for o in TWO_RANK.values()]
    jobs += [(TINY_LLAMA + ["parallel=fsdp2"],
              functools.partial(harness.save_then_continue, path, 2)),
             (TINY_LLAMA + ["parallel=tp2"], functools.partial(harness.load_and_continue,
                                                                path, 2))]
    results = harness.run_layouts(jobs, root, STEPS)
    for name, result in zip(TWO_RANK, results):
        assert result["losses"] == pytest.approx(expected, abs=TOLERANCE), (name, result)
    saved, into_tp2 = results[-2:]
    assert saved["losses"] == pytest.approx(expected, abs=TOLERANCE)
    assert into_tp2["losses"] == pytest.approx(expected[2:], abs=TOLERANCE)
    assert into_tp2["read_bytes"] > 0 and saved["write_bytes"] > 0
    into_one = harness.run_layout(TINY_LLAMA, root, STEPS,
                                  functools.partial(harness.load_and_continue, path, 2))
    assert into_one["losses"] == pytest.approx(expected[2:], abs=TOLERANCE)
    assert expected[-1] < expected[0]   # it is actually training


def test_tp2_x_pp2_matches_single_process(reference):
    root, expected = reference
    got = harness.run_layout(TINY_LLAMA + ["parallel=tp2pp2"], root, STEPS)["losses"]
    assert got == pytest.approx(expected, abs=TOLERANCE)
