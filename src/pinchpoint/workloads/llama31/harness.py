"""Drive the Llama workload outside the runner, on ranks spawned here: what the loss-equivalence
tests and the layout benchmark share. Each rank joins a gloo group through a FileStore, builds
the workload exactly as a run would (same config, same seed), and trains a few steps."""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, Optional

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

log = logging.getLogger(__name__)


def compose(overrides: list[str], output_root: str):
    from hydra import compose as hydra_compose, initialize_config_dir

    from pinchpoint.config import setup
    setup()
    conf = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "conf")
    with initialize_config_dir(config_dir=os.path.abspath(conf), version_base="1.3"):
        return hydra_compose(config_name="train",
                             overrides=[*overrides, f"output_root={output_root}"])


def make_workload(cfg, rank: int = 0, world: int = 1):
    from omegaconf import OmegaConf

    from pinchpoint.parallel.context import RankContext
    from pinchpoint.storage.tier import StorageTier
    from pinchpoint.telemetry.phases import PhaseTimer
    from pinchpoint.workloads import workload_class
    from pinchpoint.workloads.base import RunInputs
    ctx = RankContext(rank, world, 0, torch.device("cpu"), "gloo" if world > 1 else "none",
                      "spawn" if world > 1 else "in_process")
    phases = PhaseTimer()
    phases.begin()
    inputs = RunInputs(model=OmegaConf.to_object(cfg.model),
                       dataset=OmegaConf.to_object(cfg.dataset),
                       parallel=OmegaConf.to_object(cfg.parallel), seed=cfg.seed, ctx=ctx,
                       tier=StorageTier.from_config(cfg.storage), phases=phases)
    return workload_class(cfg.model.name)(inputs)


def train_steps(w, steps: int, start: int = 0, warmup: int = 3) -> dict[str, Any]:
    """``steps`` optimizer steps from ``start``; losses, and tokens/s over the steps after the
    first ``warmup`` (the first steps of a process run several times slower: allocator growth,
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
    a = w.arch
    tokens = (steps - warmup) * a.global_batch_size * a.seq_len
    return {"losses": losses, "seconds": seconds, "tokens_per_s": tokens / seconds}


def run_layout(overrides: list[str], output_root: str, steps: int,
               body: Optional[Callable] = None) -> dict[str, Any]:
    """Train ``steps`` steps of the config on its world size; rank 0's result."""
    return run_layouts([(overrides, body)], output_root, steps)[0]


def run_layouts(jobs: list[tuple[list[str], Optional[Callable]]], output_root: str,
                steps: int) -> list[dict[str, Any]]:
    """Several (overrides, body) jobs of one world size, one after another on one set of spawned
    ranks (spawning and importing torch costs more than a tiny layout's steps)."""
    worlds = {compose(o, output_root).parallel.world_size for o, _ in jobs}
    if len(worlds) != 1:
        raise ValueError(f"jobs mix world sizes {sorted(worlds)}")
    world = worlds.pop()
    if world == 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1)))
        return [(body or _default_body)(compose(o, output_root), 0, 1, steps)
                for o, body in jobs]
    for attempt in range(2):
        store = os.path.join(output_root, f"store-{os.getpid()}-{time.monotonic_ns()}")
        os.makedirs(output_root, exist_ok=True)
        queue = mp.get_context("spawn").SimpleQueue()
        try:
            mp.start_processes(_rank, args=(world, store, jobs, output_root, steps, queue),
                               nprocs=world, start_method="spawn", join=True)
            return queue.get()
        except mp.ProcessExitedException as err:
            # Known gap: 4 gloo ranks on 2 cores (tp2pp2) sometimes die in C++ with
            # "terminate called without an active exception" (SIGABRT), not root-caused yet.
            # One retry, loudly; any other failure, or a second abort, is raised.
            if attempt or "SIGABRT" not in str(err):
                raise
            log.warning("a rank aborted (%s); retrying the layout once", err)
    raise AssertionError("unreachable")


def _default_body(cfg, rank: int, world: int, steps: int) -> dict[str, Any]:
    w = make_workload(cfg, rank, world)
    w.prepare_data()
    w.build()
    w.open_data()
    return train_steps(w, steps)


def _rank(rank: int, world: int, store: str, jobs, output_root, steps, queue):
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group("gloo", store=dist.FileStore(store, world), rank=rank,
                            world_size=world)
    try:
        results = [(body or _default_body)(compose(o, output_root), rank, world, steps)
                   for o, body in jobs]
        if rank == 0:
            queue.put(results)
        dist.barrier()   # no rank tears gloo down while a peer's last messages are in flight
    finally:
        dist.destroy_process_group()


# --- distributed checkpoint round trips (tests: resume into another layout) -----------------------
def save_then_continue(path: str, at: int, cfg, rank: int, world: int, steps: int) -> dict:
    """Train ``at`` steps, save model + optimizer through DCP, train to ``steps``."""
    from pinchpoint.storage import distributed_checkpoint as dcp_io
    w = make_workload(cfg, rank, world)
    w.prepare_data()
    w.build()
    w.open_data()
    first = train_steps(w, at)
    written = dcp_io.save(w.distributed_state_dict(), path, rank == 0)
    rest = train_steps(w, steps - at, start=at)
    return {"losses": first["losses"] + rest["losses"], "write_bytes": written.nbytes,
            "write_seconds": written.seconds}


def load_and_continue(path: str, at: int, cfg, rank: int, world: int, steps: int) -> dict:
    """Build in this layout, load the DCP checkpoint saved at step ``at``, train to ``steps``."""
    from pinchpoint.storage import distributed_checkpoint as dcp_io
    w = make_workload(cfg, rank, world)
    w.prepare_data()
    w.build()
    template = w.distributed_state_dict()
    read = dcp_io.load(template, path)
    w.load_distributed_state_dict(template)
    w.load_state_dict({"step": at})
    w.open_data()
    rest = train_steps(w, steps - at, start=at)
    return {"losses": rest["losses"], "read_bytes": read.nbytes, "read_seconds": read.seconds}


# --- memory model check ---------------------------------------------------------------------------
def measure_peak_memory(overrides: list[str], output_root: str, steps: int = 3) -> dict:
    """Run in a fresh process (peak RSS is per process): RSS growth from just before the model
    is built to the peak over ``steps`` training steps, against the planner's fp32 estimate."""
    import json
    import subprocess
    import sys
    code = ("import json, sys; from pinchpoint.workloads.llama31.harness import _peak_body; "
            "print('RESULT', json.dumps(_peak_body(json.loads(sys.argv[1]), sys.argv[2], "
            "int(sys.argv[3]))))")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(overrides), output_root,
                           str(steps)], capture_output=True, text=True, check=True)
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def _peak_body(overrides: list[str], output_root: str, steps: int) -> dict:
    import resource

    import psutil
    from omegaconf import OmegaConf

    from pinchpoint.plan import llama as plan
    cfg = compose(overrides, output_root)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    w = make_workload(cfg)
    w.prepare_data()
    w.open_data()
    batch = torch.from_numpy(w.train.batch(range(w.arch.global_batch_size)))  # before baseline
    _warm_up(batch)   # thread pools, kernels, autograd engine: runtime cost, not the model's
    base = psutil.Process().memory_info().rss
    # Reset the kernel's peak-RSS mark so the peak of data generation above is not counted.
    reset = _reset_peak_rss()
    w.build()
    for _ in range(steps):
        w.forward_backward(batch)
        w.optimizer_step()
    peak = _peak_rss() if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    lay = plan.layout_from(cfg)
    lay.precision = "fp32"
    model = plan.memory_per_device(OmegaConf.to_object(cfg.model[cfg.model.scale]), lay)
    worst = model["worst_stage"]
    return {"measured_bytes": peak - base, "modelled_bytes": worst["total_bytes"],
            "modelled": {k: v for k, v in worst.items() if k.endswith("_bytes")},
            "error": worst["total_bytes"] / (peak - base) - 1}


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5\n")  # resets VmHWM (Linux >= 4.0)
        return True
    except OSError:
        return False


def _peak_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM missing from /proc/self/status")


def _warm_up(batch: torch.Tensor) -> None:
    import torch.nn.functional as F

    from pinchpoint.workloads.llama31.model import Llama, LlamaArgs
    tiny = Llama(LlamaArgs(dim=16, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=32,
                           vocab_size=int(batch.max()) + 1, max_seq_len=batch.shape[1]))
    opt = torch.optim.AdamW(tiny.parameters())
    for _ in range(2):
        x = batch[:1, :8]
        F.cross_entropy(tiny(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten()).backward()
        opt.step()
