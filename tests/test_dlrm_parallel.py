"""Multi-rank DLRM: loss equivalence with one process, and the all-to-all arithmetic."""
import pytest

import harness
from dlrm_equivalence import dlrm_losses

STEPS = 6
DATA = ["dataset.num_days=2", "dataset.samples_per_day=8192", "dataset.batch_size=1024",
        "tracking.enabled=false"]
# fp32 sums in a different order (per-rank means, all-to-all reassembly, bucketed all-reduce):
# differences stay at float rounding level, far below the loss's step-to-step change.
TOLERANCE = 2e-5


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("equivalence"))
    return root, harness.run_layout(DATA, root, STEPS, dlrm_losses)["losses"]


# ep4 is ep2's code over more ranks (4 processes on CI's 2 cores: 20 s): --full runs it.
@pytest.mark.parametrize("parallel", ["ddp2", "ep2", pytest.param("ep4", marks=pytest.mark.full)])
def test_loss_matches_single_process(reference, parallel):
    root, single = reference
    multi = harness.run_layout([*DATA, f"parallel={parallel}"], root, STEPS,
                               dlrm_losses)["losses"]
    assert len(multi) == STEPS
    assert multi == pytest.approx(single, abs=TOLERANCE, rel=0), (parallel, single, multi)
    assert single[0] != pytest.approx(single[-1], abs=1e-3)  # it actually trained


def test_all_to_all_bytes_match_the_sharding(reference):
    from conftest import compose
    from omegaconf import OmegaConf

    from pinchpoint.workloads.dlrm_dcnv2.parallelize import all_to_all_bytes_per_step

    root, _ = reference
    arch = OmegaConf.to_object(compose([*DATA, "parallel=ep4"], root).model).proxy
    profiles = harness.run_layout([*DATA, "parallel=ep4"], root, 2, dlrm_losses)["profiles"]
    for rank, profile in enumerate(profiles):
        expected = all_to_all_bytes_per_step(arch, 4, 1024 // 4, rank)
        assert profile["comm_all_to_all_calls_per_step"] == 3  # ids, pooled, gradients
        assert profile["comm_all_to_all_bytes_per_step"] == expected
        assert profile["comm_all_reduce_bytes_per_step"] > 0   # DDP on the dense part
