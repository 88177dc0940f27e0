"""Batch delivery with the knobs users sweep: worker processes, prefetch depth, pin_memory.

``num_workers > 0`` uses torch's DataLoader over an IterableDataset (as the reference does);
worker w of W takes every W-th step, and the DataLoader's round-robin over workers restores the
step order. ``num_workers == 0`` reads in a background thread ``prefetch`` batches ahead (or
inline when prefetch is 0), which overlaps storage waits with compute on a small laptop.
"""
from __future__ import annotations

import queue
import threading
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
    _DONE = object()

    def __init__(self, source: Iterator, depth: int):
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._fill, args=(source,), daemon=True,
                                       name="pinchpoint-prefetch")
        self.thread.start()

    def _fill(self, source: Iterator) -> None:
        try:
            for item in source:
                while not self.stop.is_set():
                    try:
                        self.queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self.stop.is_set():
                    return
        except BaseException as err:  # re-raised in the training thread
            self.error = err
        self.queue.put(self._DONE)

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
        self.stop.set()


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
