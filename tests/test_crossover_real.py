"""benchmarks/crossover_real.py's machinery on a tiny grid (the flips themselves are measured by
the benchmark, not here): the dense grid is the crossover sweeper's first round over every value,
the replayed adaptive search answers like the grid with at most 40 % of its runs wherever the flip
lies, and a real two-point sweep of smoke-scale DLRM yields labelled points."""
from __future__ import annotations

import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import crossover_real as cr  # noqa: E402

XS = list(range(1, 18))


def test_replayed_search_finds_the_grids_flip_with_at_most_40_percent_of_its_runs():
    for flip in range(1, len(XS)):
        labels = {x: "checkpoint" if x <= XS[flip - 1] else "forward_backward" for x in XS}
        grid = cr.crossovers(XS, [labels[x] for x in XS])
        found, runs = cr.replay(XS, labels, 3, [])
        assert [(c.low, c.high) for c in found] == [(c.low, c.high) for c in grid], flip
        assert runs <= 0.4 * len(XS), (flip, runs)


def test_values_parse():
    assert cr.parse_values("1-4") == [1, 2, 3, 4]
    assert cr.parse_values("64,128") == [64, 128]


def test_dense_grid_of_real_runs_is_labelled_by_dominant_phase(tmp_path):
    smoke = ["model.scale=smoke", "dataset.num_days=2", "dataset.samples_per_day=1024",
             "dataset.batch_size=256", "dataset.eval_batch_size=512", "train.max_steps=2",
             "tracking.system_metrics=false", "storage=local"]
    common = ["+sweep=ckpt_interval_storage", *cr.QUIET, *smoke]
    found, runs, labels = cr.dense(common, "checkpoint.interval", [1, 2], cr.PHASE, [],
                                   "time_to_train_s", "minimize", tmp_path / "out")
    assert runs == 2 and set(labels) == {1, 2}
    assert all(label in ("data_wait", "forward_backward", "optimizer", "eval", "checkpoint")
               for label in labels.values()), labels
