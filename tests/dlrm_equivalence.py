"""Helpers for the loss-equivalence tests: train K steps of DLRM in any layout, return losses."""
from __future__ import annotations

import os
import tempfile

import torch
import torch.distributed as dist


def losses(cfg, steps: int, rank: int = 0, world: int = 1) -> list[float]:
    """Global mean loss of the first ``steps`` steps (all-reduced across ranks)."""
    from omegaconf import OmegaConf

    from pinchpoint.parallel.collectives import CollectiveProfile
    from pinchpoint.parallel.context import RankContext
    from pinchpoint.storage.tier import StorageTier
    from pinchpoint.telemetry.phases import PhaseTimer
    from pinchpoint.workloads.base import RunInputs
    from pinchpoint.workloads.dlrm_dcnv2.workload import DLRMWorkload

    phases = PhaseTimer()
    ctx = RankContext(rank=rank, world_size=world, backend="gloo" if world > 1 else "none")
    inputs = RunInputs(model=OmegaConf.to_object(cfg.model), dataset=OmegaConf.to_object(
        cfg.dataset), parallel=OmegaConf.to_object(cfg.parallel), seed=cfg.seed, ctx=ctx,
        tier=StorageTier.from_config(cfg.storage), phases=phases,
        collectives=CollectiveProfile(phases))
    w = DLRMWorkload(inputs)
    w.prepare_data()
    w.build()
    w.open_data()
    phases.begin()
    out = []
    for step, batch in zip(range(steps), w.batches(0)):
        loss = w.forward_backward(batch)
        w.optimizer_step()
        if world > 1:
            dist.all_reduce(loss)
            loss /= world
        out.append(float(loss))
        phases.mark("optimizer")
        phases.end_step(step)
    w.close()
    inputs.measurements["profile"] = inputs.collectives.per_step(steps)
    return out, inputs.measurements["profile"]


def _rank(rank: int, world: int, cfg, steps: int, store_path: str, result_path: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank,
                            world_size=world)
    try:
        result = losses(cfg, steps, rank, world)
        torch.save(result, f"{result_path}.{rank}")
    finally:
        dist.destroy_process_group()


def spawn_losses(cfg, steps: int, world: int):
    """Per-rank (losses, collective profile) of a ``world``-rank run."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        store, result = os.path.join(tmp, "store"), os.path.join(tmp, "result")
        mp.spawn(_rank, args=(world, cfg, steps, store, result), nprocs=world, join=True)
        return [torch.load(f"{result}.{r}", weights_only=False) for r in range(world)]
