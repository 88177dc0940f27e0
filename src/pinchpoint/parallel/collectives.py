"""Profiled collectives: every call is counted (calls, bytes, seconds) per kind and its time is
carved out of the enclosing phase into ``communication``, so the step breakdown shows it.

``bytes`` is what this rank hands to the collective (the input tensor's size), the convention of
nccl-tests' "size"; for all_to_all that includes the slice a rank keeps for itself.
"""
from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
import torch.distributed as dist

from pinchpoint.telemetry.phases import PhaseTimer

KINDS = ("all_to_all", "all_reduce", "all_gather", "reduce_scatter", "broadcast")


@dataclass
class KindStats:
    calls: int = 0
    bytes: int = 0
    seconds: float = 0.0


@dataclass
class CollectiveProfile:
    phases: Optional[PhaseTimer] = None
    section: str = "train"     # "train" or "eval": per-step figures use the training section
    stats: dict = field(default_factory=lambda: defaultdict(KindStats))

    @contextlib.contextmanager
    def record(self, kind: str, nbytes: int):
        carve = self.phases.carve("communication", {"kind": kind, "bytes": nbytes}) \
            if self.phases is not None else contextlib.nullcontext()
        import time
        start = time.perf_counter()
        with carve:
            yield
        s = self.stats[(self.section, kind)]
        s.calls += 1
        s.bytes += nbytes
        s.seconds += time.perf_counter() - start

    @contextlib.contextmanager
    def evaluating(self):
        previous, self.section = self.section, "eval"
        try:
            yield
        finally:
            self.section = previous

    def per_step(self, steps: int) -> dict[str, float]:
        out = {}
        for kind in KINDS:
            s = self.stats.get(("train", kind), KindStats())
            out[f"comm_{kind}_calls_per_step"] = s.calls / max(steps, 1)
            out[f"comm_{kind}_bytes_per_step"] = s.bytes / max(steps, 1)
            out[f"comm_{kind}_seconds_per_step"] = s.seconds / max(steps, 1)
        return out

    # --- the collectives -------------------------------------------------------------------
    def all_to_all_single(self, output: torch.Tensor, input: torch.Tensor,
                          output_split_sizes: Sequence[int], input_split_sizes: Sequence[int],
                          group=None) -> torch.Tensor:
        with self.record("all_to_all", input.numel() * input.element_size()):
            dist.all_to_all_single(output, input, list(output_split_sizes),
                                   list(input_split_sizes), group=group)
        return output

    def all_reduce(self, tensor: torch.Tensor, op=dist.ReduceOp.SUM, group=None) -> torch.Tensor:
        with self.record("all_reduce", tensor.numel() * tensor.element_size()):
            dist.all_reduce(tensor, op=op, group=group)
        return tensor

    def all_gather(self, outputs: list[torch.Tensor], tensor: torch.Tensor, group=None):
        with self.record("all_gather", tensor.numel() * tensor.element_size()):
            dist.all_gather(outputs, tensor, group=group)
        return outputs

    def reduce_scatter(self, output: torch.Tensor, inputs: list[torch.Tensor], group=None):
        with self.record("reduce_scatter", sum(t.numel() * t.element_size() for t in inputs)):
            dist.reduce_scatter(output, inputs, group=group)
        return output

    def broadcast(self, tensor: torch.Tensor, src: int = 0, group=None) -> torch.Tensor:
        with self.record("broadcast", tensor.numel() * tensor.element_size()):
            dist.broadcast(tensor, src, group=group)
        return tensor


def ddp_comm_hook(profile: CollectiveProfile):
    """A DDP communication hook that all-reduces each gradient bucket through the profile.

    Synchronous on purpose: the time lands in the ``communication`` phase instead of hiding in
    backward (on CPU/gloo there is little overlap to lose; on GPU use DDP's default hook when
    overlap matters more than attribution)."""

    def hook(world_size, bucket):  # no annotations: DDP checks them, and ours are strings
        buffer = bucket.buffer()
        profile.all_reduce(buffer)
        buffer.div_(world_size)
        future: torch.futures.Future = torch.futures.Future()
        future.set_result(buffer)
        return future

    return hook
