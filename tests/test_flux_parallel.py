"""FLUX.1 layouts train the same numbers as one process: DDP (dp_replicate=2), FSDP2
(dp_shard=2) and HSDP (2 x 2, 4 ranks) against a single process with the same global batch;
the per-sample noise, timesteps and posterior samples are drawn from the sample's global
position, so only the reduction order differs."""
from __future__ import annotations

import pytest

import harness

# Smoke scale: 16 px images, a 1 + 1 block MMDiT; global batch 8 in every layout.
TINY = ["model=flux1", "model.scale=smoke", "tracking.enabled=false",
        "model.smoke.cfg_dropout=0.1"]
STEPS = 3
TOLERANCE = 2e-5
ONE = TINY + ["model.smoke.batch_size=8"]
TWO = {"ddp2": ["parallel=ddp2"], "fsdp2": ["parallel=fsdp2"]}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("flux_layouts"))
    return root, harness.run_layout(ONE, root, STEPS)["losses"]


def test_ddp_and_fsdp2_match_single_process(reference):
    root, expected = reference
    jobs = [(TINY + ["model.smoke.batch_size=4"] + o, None) for o in TWO.values()]
    for name, result in zip(TWO, harness.run_layouts(jobs, root, STEPS)):
        assert result["losses"] == pytest.approx(expected, abs=TOLERANCE), (name, result)
    assert expected[-1] != expected[0]


@pytest.mark.slow
def test_hsdp_2x2_matches_single_process(reference):
    root, expected = reference
    got = harness.run_layout(TINY + ["model.smoke.batch_size=2", "parallel=hsdp2x2"], root,
                             STEPS)["losses"]
    print("hsdp2x2 losses", got, "single", expected)
    assert got == pytest.approx(expected, abs=TOLERANCE)
