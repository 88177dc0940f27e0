"""Test hook ``fault=raise_at_step:N``: raise on the last rank at step N, so a failure must
travel to rank 0 and the launcher to be seen (kill -9 tests kill the process from outside)."""
from __future__ import annotations

from typing import Optional

from pinchpoint.parallel.context import RankContext


class Fault:
    def __init__(self, spec: Optional[str], ctx: RankContext):
        kind, _, at = (spec or "").partition(":")
        self.spec = spec
        self.step = int(at) if kind == "raise_at_step" and \
            ctx.rank == ctx.world_size - 1 else None
        self.rank = ctx.rank

    def check(self, step: int) -> None:
        if self.step is not None and step == self.step:
            raise RuntimeError(f"injected fault on rank {self.rank} at step {step} "
                               f"(fault={self.spec})")
