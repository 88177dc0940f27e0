"""Batch delivery with the knobs users sweep: worker processes, prefetch depth, pin_memory.

``num_workers > 0`` uses torch's DataLoader over an IterableDataset (as the reference does);
worker w of W takes every W-th step, and the DataLoader's round-robin over workers restores the
step order. ``num_workers == 0`` reads in a background thread ``prefetch`` batches ahead (or
inline when prefetch is 0), which overlaps storage waits with compute on a small laptop.
"""
from __future__ import annotations

import atexit
import queue
import threading
import weakref
from typing import Callable, Iterator, Optional

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info


class StepBatches(IterableDataset):
    """Yields ``read(step)`` for step in [start, stop); split across DataLoader workers."""

    def __init__(self, read: Callable[[int], object], start: int, stop: int):
        super().__init__()
        self.read, self.start, self.stop = read, start, stop

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        for step in range(self.start + worker, self.stop, workers):
            yield self.read(step)


class _ThreadPrefetcher:
    """Reads ``depth`` batches ahead in a daemon thread that never outlives its owner:
    ``close()`` stops the thread and joins it (and an atexit hook closes any left open).

    Why joining matters: a batch is a tensor made by ``torch.from_numpy``. Torch frees such a
    tensor with the GIL released and takes the GIL back in the storage's deleter to drop the
    numpy array. A daemon thread that takes the GIL once the interpreter is finalizing is ended
    with pthread_exit, and its forced unwind through the (noexcept) tensor destructor calls
    std::terminate: "terminate called without an active exception", SIGABRT, exit code 134.
    A stop flag alone left the thread dropping its last batch up to one put timeout after
    ``close()``, often just as a spawned rank or pytest was exiting."""

    _DONE = object()
    _open: "weakref.WeakSet[_ThreadPrefetcher]" = weakref.WeakSet()

    def __init__(self, source: Iterator, depth: int):
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._fill, args=(source,), daemon=True,
                                       name="pinchpoint-prefetch")
        _ThreadPrefetcher._open.add(self)
        self.thread.start()

    def _fill(self, source: Iterator) -> None:
        try:
            for item in source:
                if not self._put(item):
                    return
        except BaseException as err:  # re-raised in the training thread
            self.error = err
        self._put(self._DONE)

    def _put(self, item) -> bool:
        """Wait for room in the queue, or for ``close()`` (then False)."""
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self):
        return self

    def __next__(self):
        item = self.queue.get()
        if item is self._DONE:
            if self.error is not None:
                raise self.error
            raise StopIteration
        return item

    def close(self) -> None:
        """Stop and join the thread, then drop the batches still queued, here in the owner's
        thread. Draining first wakes a thread waiting for room, so the join lasts at most the
        one read in progress."""
        self.stop.set()
        self._drain()
        if self.thread is not threading.current_thread():
            self.thread.join()
        self._drain()
        _ThreadPrefetcher._open.discard(self)

    def _drain(self) -> None:
        while True:
            try:
                self.queue.get_nowait()
            except queue.Empty:
                return


@atexit.register
def _close_open_prefetchers() -> None:
    """A stream nobody closed (an exception skipped it) is joined before the interpreter starts
    finalizing: atexit handlers run before daemon threads can be killed mid-free."""
    for prefetcher in list(_ThreadPrefetcher._open):
        prefetcher.close()


class BatchStream:
    """Iterator over training batches; ``close()`` stops workers/threads early."""

    def __init__(self, read: Callable[[int], object], start: int, stop: int, num_workers: int,
                 prefetch: int, pin_memory: bool):
        self._closer: Callable[[], None] = lambda: None
        dataset = StepBatches(read, start, stop)
        if num_workers > 0:
            loader = DataLoader(dataset, batch_size=None, num_workers=num_workers,
                                prefetch_factor=prefetch, pin_memory=pin_memory,
                                persistent_workers=False)
            self._it = iter(loader)
            self._closer = getattr(self._it, "_shutdown_workers", lambda: None)
        elif prefetch > 0:
            pre = _ThreadPrefetcher(iter(dataset), prefetch)
            self._it, self._closer = pre, pre.close
        else:
            self._it = iter(dataset)
        self.pin_memory = pin_memory and num_workers == 0 and torch.cuda.is_available()

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._it)

    def close(self) -> None:
        self._closer()
