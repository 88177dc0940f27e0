"""Record the collectives torch runs by itself (FSDP2's all-gathers and reduce-scatters, tensor
parallelism's DTensor redistributions, pipelining's sends and receives, object collectives) into
a ``CollectiveProfile``: calls, bytes and seconds per kind, carved into the ``communication``
phase and drawn on the timeline, for as long as the trace is entered.

Where it hooks, and why there:

* **c10d** (``torch.distributed.*``): every Python entry point -- ``all_gather_single`` and its
  deprecated aliases, ``isend`` inside ``batch_isend_irecv``, ``broadcast_object_list`` -- ends
  in exactly one method call on the ``ProcessGroup`` object. Wrapping those methods is one choke
  point: aliases cannot be counted twice, and function identities that torch compares
  (``P2POp.op is dist.isend``) stay untouched.
* **functional collectives** (``torch.ops._c10d_functional``, what DTensor uses): the C++ ops
  are called from Python through their op namespace; each is replaced there by a timed stand-in
  that forwards everything else (``.default``, schemas) to the real op. Their outputs are waited
  on later by ``wait_tensor``, which is timed the same way.

The cost is paid per collective only (a few Python calls, two clock reads: 6-15 us measured by
benchmarks/comm_trace_overhead.py on a loaded 2-core box) and nothing per tensor op, which is
why this is used rather than the profiler's collective records or a dispatch/function mode
(those pay on every op of the model, collective or not). A synchronous c10d call is timed as
one span (issue and wait); an asynchronous one returns its work handle wrapped so that ``wait``
is timed too.

Seconds are the time the issuing thread is blocked: issuing, plus waiting on the returned work
or tensor. An asynchronous collective that finished under compute costs only its issue, so the
phases still tile the loop exactly. With ``synchronize`` (the default) each carve synchronizes
the device first and last, as every phase mark does: on CUDA the recorded seconds are then the
collective's device time, serialized (overlap with compute is given up for attribution); with
``synchronize=False`` they are host blocking time only, and NCCL work hides in later phases.

With ``telemetry.attribution=events`` (the phase timer holds an ``EventAttribution``) nothing
is synchronized: a synchronous collective is bracketed by CUDA events on the stream it is issued
from; an asynchronous one (a work handle, a functional collective's output) by an event at its
issue and events around the wait, whose span on the waiting stream is a stall of that stream
(telemetry/phases.py states the rule; telemetry/attribution.py resolves it after the step).

Not seen: collectives issued from C++ -- DDP's built-in all-reduce hook (register
``collectives.ddp_comm_hook`` instead, as parallel/ddp.py does), NCCL coalesced groups'
end-of-group wait -- and functional collectives inside a ``torch.compile`` graph (compiled
code calls the ops' overloads, ``.default``, directly). A run says so: ``unattributed()`` lists
what this trace could not attribute (``compiled_graphs``: set by the runner when
``train.compile`` is on). Collectives issued through the profile itself
(``profile.all_reduce``...) are counted there once, not again here.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Optional

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

# ProcessGroup method -> (kind, index of the argument holding what this rank hands in).
# bytes follow the profile's convention: the input this rank hands to the collective (for an
# all-gather its shard, for a reduce-scatter the full buffer); sends and receives count the
# tensor sent or received.
PROCESS_GROUP_METHODS: dict[str, tuple[str, Optional[int]]] = {
    "allreduce": ("all_reduce", 0), "allreduce_coalesced": ("all_reduce", 0),
    "all_gather_single": ("all_gather", 1), "all_gather_single_coalesced": ("all_gather", 1),
    "allgather": ("all_gather", 1), "allgather_coalesced": ("all_gather", 1),
    "allgather_into_tensor_coalesced": ("all_gather", 1), "_allgather_base": ("all_gather", 1),
    "reduce_scatter_single": ("reduce_scatter", 1),
    "reduce_scatter_single_coalesced": ("reduce_scatter", 1),
    "reduce_scatter": ("reduce_scatter", 1),
    "reduce_scatter_tensor_coalesced": ("reduce_scatter", 1),
    "_reduce_scatter_base": ("reduce_scatter", 1),
    "all_to_all_single": ("all_to_all", 1), "alltoall_base": ("all_to_all", 1),
    "alltoall": ("all_to_all", 1),
    "broadcast": ("broadcast", 0), "reduce": ("reduce", 0), "gather": ("gather", 1),
    "scatter": ("scatter", 1),
    "send": ("send_recv", 0), "recv": ("send_recv", 0), "recv_anysource": ("send_recv", 0),
    "barrier": ("barrier", None),
}

# torch.ops._c10d_functional op -> (kind, index of its input argument).
FUNCTIONAL_OPS: dict[str, tuple[str, int]] = {
    "all_reduce": ("all_reduce", 0), "all_reduce_": ("all_reduce", 0),
    "all_reduce_coalesced": ("all_reduce", 0), "all_reduce_coalesced_": ("all_reduce", 0),
    "all_gather_into_tensor": ("all_gather", 0), "all_gather_into_tensor_out": ("all_gather", 0),
    "all_gather_into_tensor_coalesced": ("all_gather", 0),
    "reduce_scatter_tensor": ("reduce_scatter", 0),
    "reduce_scatter_tensor_out": ("reduce_scatter", 0),
    "reduce_scatter_tensor_coalesced": ("reduce_scatter", 0),
    "all_to_all_single": ("all_to_all", 0),
    "broadcast": ("broadcast", 0), "broadcast_": ("broadcast", 0),
    "isend": ("send_recv", 0), "irecv": ("send_recv", 0), "batch_p2p_ops": ("send_recv", 3),
}


def nbytes(value: Any) -> int:
    """Bytes of a tensor, or of every tensor in a (nested) list of them."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (list, tuple)):
        return sum(nbytes(v) for v in value)
    return 0


class _TimedWork(dist.Work):
    """A ProcessGroup's work handle whose ``wait`` is timed (a subclass, so torch's
    ``isinstance(work, dist.Work)`` checks still hold); everything else is the real handle's."""

    def __init__(self, work: dist.Work, trace: "TorchCollectiveTrace", kind: str,
                 issued=None):
        super().__init__()
        self._work, self._trace, self._kind, self._issued = work, trace, kind, issued

    def wait(self, timeout=None):
        args = () if timeout is None else (timeout,)
        return self._trace.blocked(self._kind, 0, False, self._work.wait, args, {},
                                   issued=self._issued)

    def get_future(self):
        return self._work.get_future()

    def is_completed(self):
        return self._work.is_completed()

    def is_success(self):
        return self._work.is_success()

    def exception(self):
        return self._work.exception()

    def result(self):
        return self._work.result()

    def source_rank(self):
        return self._work.source_rank()

    def synchronize(self):
        return self._work.synchronize()

    def block_current_stream(self):
        return self._work.block_current_stream()

    def boxed(self):
        return self._work.boxed()


class _TimedOp:
    """Stands in for one ``torch.ops._c10d_functional`` op: calls are timed, attribute lookups
    (``.default``, overloads, schema) reach the real op."""

    def __init__(self, op, call: Callable):
        self._op, self._call = op, call

    def __call__(self, *args, **kwargs):
        return self._call(self._op, args, kwargs)

    def __getattr__(self, name: str):
        return getattr(self._op, name)


class TorchCollectiveTrace:
    """Context manager: while entered, torch-internal collectives are recorded into
    ``profile``. One at a time per process (it patches process-wide entry points)."""

    _active: Optional["TorchCollectiveTrace"] = None

    def __init__(self, profile, synchronize: bool = True):
        self.profile = profile
        self.synchronize = synchronize
        self._restore: list[Callable[[], None]] = []
        # id of a functional collective's output -> its kind, until waited on
        self._pending: dict[int, tuple] = {}   # (kind, its issue's event mark or None)
        self._last_functional_kind = "all_reduce"
        self._issued = None   # attribution=events: the event mark of the latest issue
        self.notes: dict[str, str] = {}   # what could not be attributed, and why

    def unattributed(self) -> dict[str, str]:
        """What this run's collectives trace could not attribute: {what: why}."""
        return dict(self.notes)

    def not_attributed(self, what: str, why: str) -> None:
        """Record (for the run's summary and tags) collectives the trace cannot see."""
        self.notes[what] = why

    # --- entering and leaving ---------------------------------------------------------------
    def __enter__(self) -> "TorchCollectiveTrace":
        if TorchCollectiveTrace._active is not None:
            raise RuntimeError("torch collectives are already being traced in this process")
        if not tested_torch():
            return self   # said once; torch's own collectives then stay in the phases around them
        TorchCollectiveTrace._active = self
        try:
            self._patch_process_group()
            self._patch_functional()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        while self._restore:
            self._restore.pop()()
        self._pending.clear()
        if TorchCollectiveTrace._active is self:
            TorchCollectiveTrace._active = None

    def _patch_process_group(self) -> None:
        cls = dist.ProcessGroup
        for name, (kind, arg) in PROCESS_GROUP_METHODS.items():
            raw = cls.__dict__.get(name)   # the unbound descriptor, restored as it was
            if raw is None:
                continue
            setattr(cls, name, self._process_group_method(getattr(cls, name), kind, arg))
            self._restore.append(lambda name=name, raw=raw: setattr(cls, name, raw))

    def _patch_functional(self) -> None:
        namespace = torch.ops._c10d_functional
        for name, (kind, arg) in FUNCTIONAL_OPS.items():
            op = self._functional_op(namespace, name)
            if op is None:
                continue
            setattr(namespace, name, _TimedOp(op, self._issue_functional(kind, arg)))
            self._restore.append(lambda name=name, op=op: setattr(namespace, name, op))
        wait = self._functional_op(namespace, "wait_tensor")
        if wait is not None:
            setattr(namespace, "wait_tensor", _TimedOp(wait, self._wait_functional))
            self._restore.append(lambda: setattr(namespace, "wait_tensor", wait))

    @staticmethod
    def _functional_op(namespace, name: str):
        try:
            return getattr(namespace, name)
        except (AttributeError, RuntimeError):  # op not in this torch build
            return None

    # --- recording ----------------------------------------------------------------------------
    def blocked(self, kind: str, size: int, issue: bool, fn: Callable, args, kwargs,
                where: Optional[dict] = None, issued=None, asynchronous: bool = False):
        """Run ``fn`` and record the time this thread is blocked in it (and, for an issue, one
        call of ``size`` bytes; ``where``: its group, splits, peer or root, for the intra/inter-
        node split). Nested entries (a collective the profile is already timing) run untimed.
        With event attribution: ``asynchronous`` (an issue whose wait comes later) leaves its
        start event in ``self._issued``; a wait passes its issue's as ``issued``.
        No context managers here: this runs for every collective."""
        profile = self.profile
        if profile.busy():
            return fn(*args, **kwargs)
        phases = profile.counted_phases()
        events = phases.events if phases is not None else None
        sync = self.synchronize and phases is not None and events is None
        if sync:
            phases.synchronize()
        first = events.record() if events is not None else None
        profile.hold(True)
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            if sync:
                phases.synchronize()
            end = time.perf_counter()
            profile.hold(False)
            profile.add(kind, size, end - start, int(issue), **(where or {}))
            if phases is not None:
                label = None if phases.timeline is None else \
                    {"kind": kind, "bytes": size} if issue else {"kind": kind, "wait": True}
                phases.add_carved("communication", start, end, label)
                if events is not None:
                    if asynchronous:
                        self._issued = first
                    else:   # a wait whose issue was not seen counts from the wait
                        events.unpaired += not issue and issued is None
                        phases.device_span(kind, first, events.record(), issued)

    def _process_group_method(self, method: Callable, kind: str, arg: Optional[int]):
        trace, name = self, method.__name__

        def timed(group, *args, **kwargs):
            if trace.profile.busy():
                return method(group, *args, **kwargs)
            size = nbytes(args[arg]) if arg is not None and len(args) > arg else 0
            where = _where(name, group, args, kwargs) if trace.profile.traffic else None
            if _synchronous(args, kwargs):
                # torch.distributed waits on this work as soon as it returns: wait here, inside
                # one timed span, instead of wrapping the handle (half the cost per call).
                return trace.blocked(kind, size, True, _issue_and_wait, (method, group, args,
                                                                        kwargs), {}, where)
            trace._issued = None
            work = trace.blocked(kind, size, True, method, (group, *args), kwargs, where,
                                 asynchronous=True)
            return _TimedWork(work, trace, kind, trace._issued) \
                if isinstance(work, dist.Work) else work

        timed.__name__ = getattr(method, "__name__", kind)
        return timed

    def _issue_functional(self, kind: str, arg: int) -> Callable:
        def issue(op, args, kwargs):
            if torch.compiler.is_compiling():
                return op(*args, **kwargs)
            size = nbytes(args[arg]) if len(args) > arg else 0
            where = _functional_where(kind, args) if self.profile.traffic else None
            self._issued = None
            out = self.blocked(kind, size, True, op, args, kwargs, where, asynchronous=True)
            if not self.profile.busy():
                self._last_functional_kind = kind
                if len(self._pending) > 4096:   # outputs freed without a wait: forget them
                    self._pending.clear()
                for tensor in out if isinstance(out, (list, tuple)) else (out,):
                    self._pending[id(tensor)] = (kind, self._issued)
            return out

        return issue

    def _wait_functional(self, op, args, kwargs):
        if torch.compiler.is_compiling() or not args:
            return op(*args, **kwargs)
        # The output itself, or (AsyncCollectiveTensor re-wraps views) a view of it: then the
        # kind is the latest functional collective's.
        kind, issued = self._pending.pop(id(args[0]), (self._last_functional_kind, None))
        return self.blocked(kind, 0, False, op, args, kwargs, issued=issued)


def compiled_graphs_note(compile: bool, tp: int, ep: int) -> Optional[str]:
    """Why a run's collectives are partly unattributed when its blocks are compiled (None when
    none are): the functional collectives inside a compiled graph are called by their overloads,
    which the trace does not patch; their time stays in the phase around them. Blocks are
    compiled before FSDP2 wraps them, so its all-gathers and reduce-scatters run outside the
    graphs (the trace counts the same calls and bytes compiled or not: tests/test_compile.py);
    only collectives a block issues itself (TP's, the experts' all-to-all) would be inside."""
    if not compile or (tp <= 1 and ep <= 1):
        return None
    return ("collectives inside torch.compile graphs (tensor or expert parallelism) are not "
            "traced: their time stays in forward_backward")


def _where(method: str, group, args, kwargs) -> dict:
    """A ProcessGroup call's group and, where the algorithm needs them, its splits (rows per
    peer), peer (send; a receive names none: the sender's split counts those bytes) or root
    (broadcast), all group-local."""
    where: dict = {"group": group}
    if method == "alltoall_base" and len(args) > 3 and args[3]:
        where["splits"] = list(args[3])
    elif method == "send" and len(args) > 1:
        where["peer"] = args[1]
    elif method in ("broadcast", "reduce", "gather", "scatter"):
        opts = kwargs.get("opts", args[-1] if args else None)
        if hasattr(opts, "rootRank"):
            where["root"] = opts.rootRank
    return where


def _functional_where(kind: str, args) -> dict:
    """A functional collective's group, found by the name it passes (its last string
    argument), and an all-to-all's input splits."""
    from torch.distributed.distributed_c10d import _resolve_process_group
    names = [a for a in args if isinstance(a, str)]
    where: dict = {"group": _resolve_process_group(names[-1]) if names else None}
    if kind == "all_to_all" and len(args) > 2 and args[2]:
        where["splits"] = list(args[2])
    return where


TESTED_TORCH = ("2.13",)   # the releases whose private c10d entry points this file patches
_warned: list = []


def tested_torch(version: Optional[str] = None) -> bool:
    """Whether this torch is one the patches were tested on; warns once when it is not."""
    version = version or torch.__version__
    if version.startswith(TESTED_TORCH):
        return True
    if not _warned:
        _warned.append(version)
        log.warning("torch %s: the collectives torch issues itself (FSDP2, tensor parallel, "
                    "pipelining) are not traced (parallel/comm_trace.py patches private c10d "
                    "entry points tested on torch %s); their time stays in the phases around "
                    "them, and collectives issued through pinchpoint's profile are still counted",
                    version, ", ".join(TESTED_TORCH))
    return False


def _synchronous(args, kwargs) -> bool:
    """Whether the c10d options passed to a ProcessGroup method ask for a synchronous op."""
    opts = kwargs.get("opts", args[-1] if args else None)
    return getattr(opts, "asyncOp", True) is False


def _issue_and_wait(method, group, args, kwargs):
    work = method(group, *args, **kwargs)
    if work is not None:
        work.wait()
    return work
