"""Profiled collectives: every call is counted (calls, bytes, seconds) per kind and its time is
carved out of the enclosing phase into ``communication``, so the step breakdown shows it.

Two ways in: collectives a workload issues itself go through the methods below; collectives torch
issues inside FSDP2, tensor parallelism and pipelining are recorded by
``profile.trace_torch_collectives()`` (see ``comm_trace``), which the runner enters around the
training loop. A collective issued through a method here is counted once, by the method.

``bytes`` is what this rank hands to the collective (the input tensor's size), the convention of
nccl-tests' "size": for all_to_all that includes the slice a rank keeps for itself, for an
all-gather it is this rank's shard, for a reduce-scatter the full buffer, for ``send_recv`` the
tensors sent plus those received. ``seconds`` is the time the calling thread was blocked.

With ``traffic`` set (a multi-rank run: the runner sets it from the node each rank runs on),
every collective's bytes are also split into what this rank sends inside its node and across
nodes, by the group's members and the backend's algorithm (``parallel.traffic``).
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
import torch.distributed as dist

from pinchpoint.parallel.traffic import Traffic
from pinchpoint.telemetry.phases import PhaseTimer

# Always reported (zeros included), so metric names do not depend on the layout; any other kind
# recorded (reduce, gather, scatter) is reported when it occurs.
UNCOUNTED = "uncounted"   # the section of collectives that belong to another phase
KINDS = ("all_to_all", "all_reduce", "all_gather", "reduce_scatter", "broadcast", "send_recv",
         "barrier")


@dataclass
class KindStats:
    calls: int = 0
    bytes: int = 0
    seconds: float = 0.0
    intra_node_bytes: float = 0.0   # sent by this rank to peers on its node
    inter_node_bytes: float = 0.0   # sent by this rank across the node boundary


@dataclass
class CollectiveProfile:
    phases: Optional[PhaseTimer] = None
    section: str = "train"     # "train" or "eval": per-step figures use the training section
    stats: dict = field(default_factory=lambda: defaultdict(KindStats))
    traffic: Optional[Traffic] = None
    _thread: threading.local = field(default_factory=threading.local, repr=False)
    _group_ranks: dict = field(default_factory=dict, repr=False)

    @contextlib.contextmanager
    def record(self, kind: str, nbytes: int, group=None, splits=None, root=None):
        with self.holding():
            if self.phases is None or self.section == UNCOUNTED:
                start = time.perf_counter()
                yield
                seconds = time.perf_counter() - start
            else:
                with self.phases.carve("communication", {"kind": kind, "bytes": nbytes}) as c:
                    yield
                seconds = c.seconds
            self.add(kind, nbytes, seconds, group=group, splits=splits, root=root)

    def __getstate__(self) -> dict:   # thread-local state and groups do not travel
        return {k: v for k, v in self.__dict__.items() if k not in ("_thread", "_group_ranks")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _thread=threading.local(), _group_ranks={})

    def add(self, kind: str, nbytes: int, seconds: float, calls: int = 1, group=None,
            splits=None, peer=None, root=None) -> None:
        """One collective (``calls=0``: more waiting on one already counted). ``group`` is the
        process group (None: the world); ``peer`` and ``root`` are ranks within it."""
        s = self.stats[(self.section, kind)]
        s.calls += calls
        s.bytes += nbytes
        s.seconds += seconds
        if self.traffic is not None and calls:
            ranks = self.ranks_of(group)
            split = self.traffic.split(
                kind, nbytes, ranks, splits,
                peer=None if peer is None else _global(ranks, peer),
                root=None if root is None else _global(ranks, root))
            s.intra_node_bytes += split.intra_node
            s.inter_node_bytes += split.inter_node

    def ranks_of(self, group) -> Optional[list[int]]:
        """The global ranks of a process group, in group order (None for the world)."""
        if group is None:
            return None
        key = id(group)
        if key not in self._group_ranks:
            self._group_ranks[key] = (group, dist.get_process_group_ranks(group))
        return self._group_ranks[key][1]

    @contextlib.contextmanager
    def holding(self):
        """Mark this thread as inside a recorded collective: collectives it issues meanwhile
        (the torch call under ``all_reduce``, a DDP hook's) are not recorded a second time."""
        previous = self.busy()
        self._thread.busy = True
        try:
            yield
        finally:
            self._thread.busy = previous

    @contextlib.contextmanager
    def uncounted(self):
        """Collectives issued inside are not timed or carved (their time belongs to the
        enclosing phase: a checkpoint's DCP plan exchange) and stay out of the per-step
        figures; their bytes are kept under the section ``uncounted`` so that what the node
        links carried still adds up (``sent_bytes``)."""
        previous, self.section = self.section, UNCOUNTED
        try:
            yield
        finally:
            self.section = previous

    def counted_phases(self) -> Optional[PhaseTimer]:
        """The phase timer a collective issued now is carved from; None in the ``uncounted``
        section (its time belongs to the enclosing phase)."""
        return self.phases if self.section != UNCOUNTED else None

    def busy(self) -> bool:
        # The thread's own dict: getattr with a default pays for an AttributeError per miss.
        return self._thread.__dict__.get("busy", False)

    def hold(self, busy: bool) -> None:
        """``holding()`` without a context manager, for the per-collective hot path."""
        self._thread.busy = busy

    def trace_torch_collectives(self, synchronize: bool = True):
        """While entered, record the collectives torch issues itself (FSDP2, DTensor/TP,
        pipelining, object collectives) into this profile; see ``comm_trace``."""
        from pinchpoint.parallel.comm_trace import TorchCollectiveTrace
        return TorchCollectiveTrace(self, synchronize)

    @contextlib.contextmanager
    def evaluating(self):
        previous, self.section = self.section, "eval"
        try:
            yield
        finally:
            self.section = previous

    def per_step(self, steps: int) -> dict[str, float]:
        out = {}
        seen = [k for section, k in self.stats if section == "train" and k not in KINDS]
        for kind in (*KINDS, *sorted(set(seen))):
            s = self.stats.get(("train", kind), KindStats())
            out[f"comm_{kind}_calls_per_step"] = s.calls / max(steps, 1)
            out[f"comm_{kind}_bytes_per_step"] = s.bytes / max(steps, 1)
            out[f"comm_{kind}_seconds_per_step"] = s.seconds / max(steps, 1)
        return out

    def kind_splits(self, section: str = "train") -> dict[str, tuple[float, float]]:
        """{kind: (intra-node, inter-node) bytes this rank sent} in one section; summed over
        the ranks (cluster/fabric_meter.py) they are what the job's links carried."""
        return {kind: (s.intra_node_bytes, s.inter_node_bytes)
                for (sec, kind), s in self.stats.items() if sec == section}

    def sent_bytes(self) -> tuple[float, float]:
        """(intra-node, inter-node) bytes this rank sent in every section so far."""
        return (sum(s.intra_node_bytes for s in self.stats.values()),
                sum(s.inter_node_bytes for s in self.stats.values()))

    # --- the collectives -------------------------------------------------------------------
    def all_to_all_single(self, output: torch.Tensor, input: torch.Tensor,
                          output_split_sizes: Sequence[int], input_split_sizes: Sequence[int],
                          group=None) -> torch.Tensor:
        with self.record("all_to_all", input.numel() * input.element_size(), group,
                         list(input_split_sizes)):
            dist.all_to_all_single(output, input, list(output_split_sizes),
                                   list(input_split_sizes), group=group)
        return output

    def all_reduce(self, tensor: torch.Tensor, op=dist.ReduceOp.SUM, group=None) -> torch.Tensor:
        with self.record("all_reduce", tensor.numel() * tensor.element_size(), group):
            dist.all_reduce(tensor, op=op, group=group)
        return tensor

    def all_gather(self, outputs: list[torch.Tensor], tensor: torch.Tensor, group=None):
        with self.record("all_gather", tensor.numel() * tensor.element_size(), group):
            dist.all_gather(outputs, tensor, group=group)
        return outputs

    def reduce_scatter(self, output: torch.Tensor, inputs: list[torch.Tensor], group=None):
        with self.record("reduce_scatter", sum(t.numel() * t.element_size() for t in inputs),
                         group):
            dist.reduce_scatter(output, inputs, group=group)
        return output

    def broadcast(self, tensor: torch.Tensor, src: int = 0, group=None) -> torch.Tensor:
        with self.record("broadcast", tensor.numel() * tensor.element_size(), group,
                         root=src if group is None else dist.get_group_rank(group, src)):
            dist.broadcast(tensor, src, group=group)
        return tensor


def _global(ranks: Optional[list[int]], local: int) -> int:
    return local if ranks is None else ranks[local]


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
