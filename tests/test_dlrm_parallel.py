"""Multi-rank DLRM: loss equivalence with one process, and the all-to-all arithmetic."""
import pytest

from conftest import compose
from dlrm_equivalence import losses, spawn_losses

STEPS = 6
DATA = ["dataset.num_days=2", "dataset.samples_per_day=8192", "dataset.batch_size=1024"]
# fp32 sums in a different order (per-rank means, all-to-all reassembly, bucketed all-reduce):
# differences stay at float rounding level, far below the loss's step-to-step change.
TOLERANCE = 2e-5


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("equivalence")
    cfg = compose(DATA, root)
    return root, losses(cfg, STEPS)[0]


@pytest.mark.parametrize("parallel,world", [("ddp2", 2), ("ep2", 2), ("ep4", 4)])
def test_loss_matches_single_process(reference, parallel, world):
    root, single = reference
    cfg = compose([*DATA, f"parallel={parallel}"], root)
    per_rank = spawn_losses(cfg, STEPS, world)
    multi = per_rank[0][0]
    assert len(multi) == STEPS
    assert multi == pytest.approx(single, abs=TOLERANCE, rel=0), (parallel, single, multi)
    assert single[0] != pytest.approx(single[-1], abs=1e-3)  # it actually trained


def test_all_to_all_bytes_match_the_sharding(reference):
    from omegaconf import OmegaConf

    from pinchpoint.workloads.dlrm_dcnv2.parallelize import all_to_all_bytes_per_step

    root, _ = reference
    cfg = compose([*DATA, "parallel=ep4"], root)
    arch = OmegaConf.to_object(cfg.model).proxy
    per_rank = spawn_losses(cfg, 2, 4)
    for rank, (_, profile) in enumerate(per_rank):
        expected = all_to_all_bytes_per_step(arch, 4, 1024 // 4, rank)
        assert profile["comm_all_to_all_calls_per_step"] == 3  # ids, pooled, gradients
        assert profile["comm_all_to_all_bytes_per_step"] == expected
        assert profile["comm_all_reduce_bytes_per_step"] > 0   # DDP on the dense part
