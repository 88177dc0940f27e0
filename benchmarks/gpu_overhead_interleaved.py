"""What measuring costs on a GPU, measured as the CPU figure is (issue 23 item 2): blocks of the
bare loop and of the pinchpoint run interleaved in one process, per attribution mode:
    python benchmarks/gpu_overhead_interleaved.py [--device cuda] [--modes events sync]
        [--steps 201] [--block 10] [--scale proxy] [--overrides k=v ...]

One pinchpoint run per mode (``telemetry.attribution=events|sync|off``: Session, phase timer,
collective trace, MLPerf log, timeline) trains the Llama 3.1 proxy; after every K of its steps,
K steps of the bare loop run on the run's own workload -- its model, optimizer and data
(``read_step``, ``forward_backward``, ``optimizer_step``: the same code without the loop, the
marks, the trace or the hooks around it). Turn-taking, block pairs, the bootstrap interval and
the background-thread charge are dlrm_overhead_interleaved.py's (imported, not copied). On CUDA
each block ends with a device synchronize on both sides (so a block is its device work, and
the events mode's one-step-late resolution pays inside the run's block).

Target: events >= 0.98x bare. FSDP2 needs dp >= 2 (pinchpoint applies fully_shard only then):
on one GPU the run is the single-rank layout (world size 1, no collectives); under torchrun on
N GPUs pass ``--overrides parallel=fsdp2 parallel.dp_shard=N`` (rank 0 reports). The GPU figure
is pending a GPU; on the CPU (``--device cpu``) events is refused (no CUDA streams) and sync
and off run, which shows the machinery works.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests"))

from dlrm_overhead_interleaved import Turns, report  # noqa: E402  (shared machinery)


EVAL_EVERY = 8 * 100_000   # a multiple of every scale's global batch


def llama_cfg(out: str, mode: str, device: str, steps: int, scale: str, extra: list):
    from conftest import compose
    return compose(["model=llama31_8b", f"model.scale={scale}", f"train.device={device}",
                    f"telemetry.attribution={mode}", f"train.max_steps={steps}",
                    "train.max_epochs=1000", "train.progress_every_s=1000",
                    "tracking.enabled=false", "telemetry.profile_steps=[]",
                    # one evaluation per run's end at most: blocks with one are left out
                    f"model.{scale}.eval_every_samples={EVAL_EVERY}", *extra], out)


def context(device: str):
    """Rank 0 of this process's group (torchrun's, or a world of one made here)."""
    import torch
    import torch.distributed as dist

    from pinchpoint.parallel.context import RankContext, pick_device
    dev = pick_device(device, int(os.environ.get("LOCAL_RANK", 0)))
    if "RANK" in os.environ:
        from pinchpoint.parallel.context import init_process_group
        return init_process_group("auto", device, 0, "torchrun"), dist
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return RankContext(device=dev), dist


def interleaved(cfg, ctx, out: str, block: int) -> Turns:
    """The run, with a turn of the bare loop (on the run's own workload) after its hooks."""
    import torch

    from pinchpoint.runner import loop
    from pinchpoint.runner.info import JobInfo
    from pinchpoint.runner.session import Session
    real_train, turns = loop.train, None
    sync = (lambda: torch.cuda.synchronize()) if ctx.device.type == "cuda" else (lambda: None)

    def train(workload, phases, mlperf, sizes, quality, limits, state, hooks):
        nonlocal turns

        def bare_step(n: int) -> None:
            tokens = workload.read_step(n % sizes.steps_per_epoch).to(ctx.device)
            workload.forward_backward(tokens)
            workload.optimizer_step()
            if (n + 1) % block == 0:
                sync()
        turns = Turns(bare_step, block)
        run_hooks, total = hooks.on_step, limits.total_steps(sizes)

        def on_step(s) -> None:
            run_hooks(s)
            if s.step % block == 0:
                sync()
            ends = s.step % sizes.steps_per_epoch == 0 or s.step == total
            turns.after_step(irregular=ends or bool(s.evals and s.evals[-1][0] == s.step))
        return real_train(workload, phases, mlperf, sizes, quality, limits, state,
                          dataclasses.replace(hooks, on_step=on_step))

    loop.train = train
    try:
        job = JobInfo(output_dir=str(Path(out) / f"runs/bench-{time.time_ns()}"))
        os.makedirs(job.output_dir)
        Session(cfg, ctx, job).run()
    finally:
        loop.train = real_train
    return turns


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    parser.add_argument("--modes", nargs="+", default=["events", "sync", "off"])
    parser.add_argument("--steps", type=int, default=201, help="the run's steps (1: warm-up)")
    parser.add_argument("--block", type=int, default=10)
    parser.add_argument("--scale", default="proxy", help="model.scale (smoke on CPU)")
    parser.add_argument("--overrides", nargs="*", default=[],
                        help="more config overrides, e.g. a GPU-sized model.* or parallel=")
    args = parser.parse_args(argv)
    import logging

    import numpy as np
    logging.basicConfig(level=logging.WARNING)
    from pinchpoint.errors import ConfigError
    ctx = context(args.device)
    ctx = ctx[0] if isinstance(ctx, tuple) else ctx
    print(f"== measuring cost, interleaved {args.block}-step blocks in one process: Llama 3.1 "
          f"proxy (scale {args.scale}) on {ctx.device}, world size {ctx.world_size}, "
          f"{args.steps} steps; attribution modes {', '.join(args.modes)} vs the bare loop ==")
    results = {}
    for mode in args.modes:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = llama_cfg(tmp, mode, ctx.device.type, args.steps, args.scale, args.overrides)
            try:
                turns = interleaved(cfg, ctx, tmp, args.block)
            except ConfigError as err:
                print(f"-- {mode}: not run: {err}")
                results[mode] = {"status": "refused", "why": str(err)}
                continue
        if ctx.is_main:
            print(f"-- telemetry.attribution={mode}")
            report(turns, f"pinchpoint ({mode})", args.block, 1)
            rows = np.array(turns.rows)
            kept = rows[rows[:, 2] == 0]
            results[mode] = {"ratio_vs_bare": float(kept[:, 0].sum() / kept[:, 1].sum()),
                             "block_pairs": int(len(kept))}
    print("target: events >= 0.98x bare" + ("" if ctx.device.type == "cuda" else
                                             " (the GPU figure is pending a GPU)"))
    return results


if __name__ == "__main__":
    main()
