"""Drive a workload outside the session, on ranks started the way the runner starts them
(``runner.ranks.Spawn``: torch's elastic launch, the process group joined and left by the same
code as a run) and built from the runner's own inputs (``runner.inputs``): what the
loss-equivalence tests and the layout benchmarks share."""
from __future__ import annotations

import functools
import os
import time
from typing import Any, Callable, Optional

from conftest import compose
from pinchpoint.runner.info import JobInfo
from pinchpoint.runner.inputs import build_inputs, build_workload
from pinchpoint.runner.ranks import InProcess, Spawn
from pinchpoint.telemetry.phases import PhaseTimer

Body = Callable[..., dict]  # body(cfg, ctx, steps) -> result


def make_workload(cfg, ctx):
    phases = PhaseTimer()
    phases.begin()
    return build_workload(cfg, build_inputs(cfg, ctx, phases))


def ready(cfg, ctx):
    """A workload with its data prepared and opened and its model built."""
    w = make_workload(cfg, ctx)
    w.prepare_data()
    w.build()
    w.open_data()
    return w


def train_steps(w, steps: int, start: int = 0, warmup: int = 3) -> dict[str, Any]:
    """``steps`` optimizer steps from ``start``; losses, and samples/s over the steps after the
    first ``warmup`` (a process's first steps run several times slower: allocator growth,
    kernel selection)."""
    warmup = max(0, min(warmup, steps - 1))
    losses, began = [], None
    batches = iter(w.batches(start))
    for i in range(steps):
        if i == warmup:
            began = time.perf_counter()
        loss = w.forward_backward(next(batches))
        w.optimizer_step()
        losses.append(float(loss))
    w.close()
    seconds = time.perf_counter() - began if began else float("nan")
    samples = (steps - warmup) * w.sizes().global_batch_size
    return {"losses": losses, "seconds": seconds, "samples_per_s": samples / seconds,
            "collectives": w.inputs.collectives.per_step(steps)}


def default_body(cfg, ctx, steps: int) -> dict[str, Any]:
    return train_steps(ready(cfg, ctx), steps)


def run_layout(overrides: list[str], output_root: str, steps: int,
               body: Optional[Body] = None) -> dict[str, Any]:
    """Train ``steps`` steps of the config on its world size; rank 0's result."""
    return run_layouts([(overrides, body)], output_root, steps)[0]


def run_layouts(jobs: list[tuple[list[str], Optional[Body]]], output_root: str,
                steps: int) -> list[dict[str, Any]]:
    """Several (overrides, body) jobs of one world size, one after another on one set of ranks
    (spawning and importing torch costs more than a tiny layout's steps)."""
    configs = [(compose(o, output_root), body) for o, body in jobs]
    worlds = set()
    for cfg, _ in configs:
        from pinchpoint.runner.validation import validate
        validate(cfg)   # the runner's checks, and world_size derived from the degrees
        worlds.add(cfg.parallel.world_size)
    if len(worlds) != 1:
        raise ValueError(f"jobs mix world sizes {sorted(worlds)}")
    first = configs[0][0]
    source = InProcess() if worlds.pop() == 1 else Spawn()
    job = JobInfo(output_dir=output_root)
    os.makedirs(output_root, exist_ok=True)
    return source.run(first, job, functools.partial(_run_jobs, configs, steps))


def _run_jobs(configs, steps: int, cfg, ctx, job) -> list[dict[str, Any]]:
    return [(body or default_body)(c, ctx, steps) for c, body in configs]


# --- checkpoint round trips through the runner's format (resume into another layout) ----------
def _manager(path: str):
    from pinchpoint.storage.checkpoint import CheckpointManager
    from pinchpoint.storage.tier import StorageTier
    manager = CheckpointManager(StorageTier("test", path), "unused", keep=2)
    manager.dir = path
    return manager


def save_then_continue(path: str, at: int, cfg, ctx, steps: int) -> dict:
    """Train ``at`` steps, save a checkpoint (DCP, every rank), train on to ``steps``."""
    w = ready(cfg, ctx)
    first = train_steps(w, at)
    written = _manager(path).save({"workload": w.state_dict()}, {}, at, ctx.is_main)
    rest = train_steps(w, steps - at, start=at)
    return {"losses": first["losses"] + rest["losses"],
            "write_bytes": written.nbytes if written else 0}


def load_and_continue(path: str, at: int, cfg, ctx, steps: int) -> dict:
    """Build in this layout, load the checkpoint saved at step ``at``, train to ``steps``."""
    w = make_workload(cfg, ctx)
    w.prepare_data()
    w.build()
    template = {"workload": w.state_dict()}
    read = _manager(path).load(template, at)
    w.load_state_dict(template["workload"])
    w.open_data()
    rest = train_steps(w, steps - at, start=at)
    return {"losses": rest["losses"], "read_bytes": read.nbytes}
