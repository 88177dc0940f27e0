"""The interleaved overhead benchmark's own arithmetic (benchmarks/dlrm_overhead_interleaved.py):
blocks are paired and timed as documented, irregular blocks are flagged, and background
threads' CPU is counted. Stand-in steps with known durations, no training."""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from dlrm_overhead_interleaved import BackgroundCPU, Turns, bootstrap_ci  # noqa: E402


def test_turns_pair_each_tested_block_with_a_bare_block_and_flag_irregular_ones():
    bare_steps = []
    turns = Turns(lambda i: (bare_steps.append(i), time.sleep(0.002)), block=5)
    for step in range(1, 17):               # step 1 is the warm-up; then three blocks of 5
        time.sleep(0.004)
        turns.after_step(irregular=step == 8)
    rows = np.array(turns.rows)
    assert len(rows) == 3
    assert bare_steps == list(range(20))     # a warm-up block, then one per tested block
    assert rows[:, 2].tolist() == [0, 1, 0]  # blocks: steps 2-6, 7-11, 12-16
    # Each tested block holds exactly its 5 steps (4 ms) and each bare block its 5 (2 ms).
    assert np.all((rows[:, 1] > 0.019) & (rows[:, 1] < 0.2))
    assert np.all((rows[:, 0] > 0.009) & (rows[:, 0] < 0.2))
    assert rows[:, 1].sum() > rows[:, 0].sum()


def test_background_cpu_counts_other_threads_from_start_and_not_the_main_one():
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            sum(range(1000))

    bg = BackgroundCPU()
    worker = threading.Thread(target=spin, name="spinner", daemon=True)
    worker.start()
    time.sleep(0.05)
    bg.start()                               # what ran before start() is not counted
    began = time.thread_time()
    while time.thread_time() - began < 0.1:  # the main thread's own CPU is not counted
        pass
    time.sleep(0.2)
    bg.sample()
    stop.set()
    worker.join()
    assert 0.02 < bg.seconds() <= bg.last - bg.started + 0.01
    assert bg.names().startswith("spinner ")


def test_bootstrap_interval_brackets_the_ratio_of_sums():
    rng = np.random.default_rng(1)
    bare = rng.normal(1.0, 0.05, 200)
    tested = bare / 0.97 * rng.normal(1.0, 0.01, 200)
    lo, hi = bootstrap_ci(bare, tested)
    assert lo < bare.sum() / tested.sum() < hi
    assert lo < 0.97 < hi and hi - lo < 0.01
