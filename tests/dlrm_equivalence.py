"""The DLRM body for the loss-equivalence tests: train K steps in any layout on the harness's
ranks; the global mean loss per step and every rank's collective profile."""
from __future__ import annotations

import torch.distributed as dist

from harness import ready


def dlrm_losses(cfg, ctx, steps: int) -> dict:
    w = ready(cfg, ctx)
    out = []
    for _, batch in zip(range(steps), w.batches(0)):
        loss = w.forward_backward(batch)
        w.optimizer_step()
        if ctx.distributed:   # the workload reports its rank's loss: average it here
            dist.all_reduce(loss)
            loss /= ctx.world_size
        out.append(float(loss))
    w.close()
    profile = w.inputs.collectives.per_step(steps)
    profiles = [profile]
    if ctx.distributed:
        profiles = [None] * ctx.world_size
        dist.all_gather_object(profiles, profile)
    return {"losses": out, "profiles": profiles}
