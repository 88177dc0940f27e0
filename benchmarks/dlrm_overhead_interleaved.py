"""Instrumentation overhead, blocks of steps interleaved in one process so that drift cancels:
    python benchmarks/dlrm_overhead_interleaved.py [--steps 1001] [--block 10] [--threads N]

One pinchpoint run (Session: phase timer, MLPerf log, timeline, MLflow with system metrics,
the run's own sampler) trains the DLRM proxy; after every K of its steps, a callback after its
on-step hooks trains K steps of the bare PyTorch loop (``BareLoop.step`` of
dlrm_overhead_and_loader.py: memmap slices, forward, backward, Adagrad) on the run's own model
and optimizer, reading the same files through a reader of its own. The two loops share every
parameter tensor and meet the machine a fraction of a second apart, so what differs between
their blocks is the loop around the step. A pinchpoint block is timed from the end of the
previous bare block to the end of its K-th step: it holds all of the run's per-step work
(batch stream, I/O accounting, phase marks, loss accumulation, progress, on-step hooks).
Blocks with an evaluation or an epoch's end are left out with their pair.

Why one process: interleaving two processes (each frozen with SIGSTOP during the other's
block) left a bias of up to +-5 % per process pair in an A/A control (the bare loop against
itself; six pairings 0.950-1.042x): the same code runs a few % faster or slower per process
(most likely by where its memory lands; not pinned down), the kind of spread that moves the
run-level benchmark by ~2 % between invocations. In one process both loops use the same
tensors.

The run's background threads (MLflow's system-metrics monitor, the run's sampler) run during
both loops' blocks, so the block ratio cannot see them: their CPU time is measured apart (each
Python thread's CPU clock over the interleaved span) and charged in full to the run (a
millisecond a background thread runs stalls the intra-op threads by at most a millisecond).
``--control`` replaces the run by a second bare loop driven through the same turn-taking: the
benchmark's own bias, expected 1.000x.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


class Turns:
    """After every ``block`` steps of the loop under test, ``block`` steps of the bare loop;
    rows of (bare block seconds, tested block seconds, tested block irregular)."""

    def __init__(self, bare_step, block: int):
        self.bare_step, self.block = bare_step, block
        self.steps = self.bare_steps = 0
        self.mark, self.irregular, self.rows = None, False, []
        self.background = BackgroundCPU()

    def after_step(self, irregular: bool = False) -> None:
        if self.mark is not None:            # the first call follows the warm-up step
            self.irregular |= irregular
            self.steps += 1
            if self.steps % self.block:
                return
        tested = time.perf_counter() - (self.mark or 0.0)
        started = time.perf_counter()
        for _ in range(self.block):
            self.bare_step(self.bare_steps)
            self.bare_steps += 1
        bare = time.perf_counter() - started
        if self.mark is None:
            self.background.start()           # the first bare block was its warm-up
        else:
            self.rows.append((bare, tested, self.irregular))
            self.background.sample()
        self.irregular = False
        self.mark = time.perf_counter()


class BackgroundCPU:
    """CPU seconds of every Python thread but the main one, from start() to the last sample()
    (each thread's own CPU clock; a thread that ends between samples loses its last part)."""

    def __init__(self):
        self.seen: dict[int, tuple[str, float, float]] = {}   # ident -> (name, first, last)
        self.started = self.last = 0.0

    def start(self) -> None:
        self.started = time.perf_counter()
        self.sample()
        self.seen = {k: (name, last, last) for k, (name, _, last) in self.seen.items()}

    def sample(self) -> None:
        self.last = time.perf_counter()
        for t in threading.enumerate():
            if t is threading.main_thread() or t.ident is None:
                continue
            try:
                cpu = time.clock_gettime(time.pthread_getcpuclockid(t.ident))
            except OSError:                  # ended since enumerate()
                continue
            name, first, _ = self.seen.get(t.ident, (t.name, 0.0, 0.0))
            self.seen[t.ident] = (name, first, cpu)

    def seconds(self) -> float:
        return sum(last - first for _, first, last in self.seen.values())

    def names(self) -> str:
        by_name: dict[str, float] = {}
        for name, first, last in self.seen.values():
            by_name[name] = by_name.get(name, 0.0) + last - first
        return ", ".join(f"{name} {s * 1e3:.0f} ms" for name, s in sorted(by_name.items())
                         if s > 0) or "none"


def run_cfg(out: str, steps: int, batch: int):
    """The run: inline loading (prefetch=0, like the bare loop), system metrics on, as many
    epochs as the steps need (each ends with an eval, left out), a target out of reach so that
    it trains all its steps."""
    from dlrm_overhead_and_loader import compose_cfg
    return compose_cfg(Path(out), steps, batch, prefetch=0,
                       extra=("train.max_epochs=1000", "dataset.target_auroc=1.0"))


def with_turns(cfg, out: str, block: int) -> Turns:
    """The pinchpoint run, with a turn of the bare loop after its own on-step hooks."""
    from dlrm_overhead_and_loader import BareLoop, instrumented
    from pinchpoint.runner import loop
    real_train, turns = loop.train, None

    def train(workload, phases, mlperf, sizes, quality, limits, state, hooks):
        nonlocal turns   # the run's own model, optimizer and dataset folder
        bare = BareLoop(cfg, workload.folder, workload.model, workload.optimizer).open()
        turns = Turns(bare.step, block)
        run_hooks, total = hooks.on_step, limits.total_steps(sizes)

        def on_step(s) -> None:
            run_hooks(s)
            ends = s.step % sizes.steps_per_epoch == 0 or s.step == total
            turns.after_step(irregular=ends or bool(s.evals and s.evals[-1][0] == s.step))
        return real_train(workload, phases, mlperf, sizes, quality, limits, state,
                          dataclasses.replace(hooks, on_step=on_step))

    loop.train = train        # Session calls loop.train; nothing else of the run is changed
    try:
        instrumented(cfg, Path(out))
    finally:
        loop.train = real_train
    return turns


def control(cfg, folder: str, steps: int, block: int) -> Turns:
    """A/A: a bare loop under test, turned exactly like the run, against the bare loop."""
    from dlrm_overhead_and_loader import BareLoop
    tested = BareLoop(cfg, folder).open()
    turns = Turns(BareLoop(cfg, folder, tested.model, tested.opt).open().step, block)
    for step in range(steps):
        tested.step(step)
        turns.after_step(irregular=(step + 1) % tested.steps_per_epoch == 0)
    return turns


def bootstrap_ci(bare: np.ndarray, tested: np.ndarray):
    """95 % interval of sum(bare)/sum(tested), resampling block pairs."""
    from dlrm_overhead_and_loader import bootstrap_ci as resampled
    return resampled(lambda b, t: b.sum(axis=1) / t.sum(axis=1), bare, tested)


def report(turns: Turns, name: str, block: int, batch: int) -> None:
    rows = np.array(turns.rows)
    kept = rows[rows[:, 2] == 0]
    bare, tested = kept[:, 0], kept[:, 1]
    ratio, (lo, hi) = bare.sum() / tested.sum(), bootstrap_ci(bare, tested)
    per_pair = bare / tested
    bg = turns.background
    span = bg.last - bg.started
    share = bg.seconds() / span
    print(f"{len(kept)} block pairs ({len(rows) - len(kept)} with an eval or epoch end left "
          f"out), load average {os.getloadavg()[0]:.1f}")
    for label, x in (("bare PyTorch loop", bare), (name, tested)):
        print(f"  {label:<30}{block * batch * len(x) / x.sum():>10,.0f} samples/s  (block "
              f"median {statistics.median(x) * 1e3:.0f} ms)")
    print(f"  in the loop: {ratio:.4f}x bare throughput (95 % CI {lo:.4f}-{hi:.4f}; per-pair "
          f"median {statistics.median(per_pair):.4f}x, range {per_pair.min():.3f}-"
          f"{per_pair.max():.3f})")
    print(f"  background threads: {bg.seconds() * 1e3:.0f} ms CPU in {span:.0f} s "
          f"({share:.2%}: {bg.names()})")
    print(f"  => {name}: {ratio * (1 - share):.4f}x bare (CI {lo * (1 - share):.4f}-"
          f"{hi * (1 - share):.4f}), background charged in full")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1001, help="the run's steps (1: warm-up)")
    parser.add_argument("--block", type=int, default=10, help="steps per turn")
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads (default: torch's, one per core)")
    parser.add_argument("--control", action="store_true",
                        help="A/A: the bare loop against itself, the benchmark's own bias")
    args = parser.parse_args()
    import logging

    import torch
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    name = "bare loop (A/A control)" if args.control else "pinchpoint + system metrics"
    print(f"== instrumentation overhead, interleaved in {args.block}-step blocks in one process: "
          f"{name} vs the bare PyTorch loop; batch {args.batch}, {args.steps} steps, "
          f"{torch.get_num_threads()} intra-op thread(s), {os.cpu_count()} cores ==")
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "outputs")
        cfg = run_cfg(out, args.steps, args.batch)
        from dlrm_overhead_and_loader import dataset_folder
        folder = dataset_folder(cfg)             # generated once, before anything is timed
        turns = (control(cfg, folder, args.steps, args.block) if args.control
                 else with_turns(cfg, out, args.block))
    report(turns, name, args.block, args.batch)
    print("goal: >= 0.98x bare with system metrics on")


if __name__ == "__main__":
    main()
