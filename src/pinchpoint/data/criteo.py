"""Criteo 1TB multi-hot in the MLPerf reference's on-disk layout (torchrec_dlrm multi_hot_criteo).

Per day N: ``day_N_dense.npy`` float32 (n, 13), ``day_N_labels.npy`` int32 (n, 1) and
``day_N_sparse_multi_hot.npz`` written uncompressed with members "0".."25", each int32
(n, hotness). Days 0..D-2 are training data; the first half of day D-1 is validation.

As in the reference reader, sparse members are memory-mapped at their data offset inside the
npz, and dense/labels are loaded into RAM unless ``mmap`` is on. Batches go to ranks round-robin:
global batch g (of the per-rank size) belongs to rank g % world_size.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from pinchpoint.storage.tier import IOCharge
from pinchpoint.data.npy_format import (ArrayLocation, DataFormatError, locate_npy,
                                        locate_npz_member, memmap)

NUM_DENSE = 13


def day_files(folder: str, day: int) -> dict[str, str]:
    return {kind: os.path.join(folder, f"day_{day}_{kind}{ext}") for kind, ext in
            (("dense", ".npy"), ("labels", ".npy"), ("sparse_multi_hot", ".npz"))}


def write_day(folder: str, day: int, dense: np.ndarray, labels: np.ndarray,
              sparse: Sequence[np.ndarray]) -> dict[str, str]:
    """Write one day (each file via temp + fsync + rename). Returns the final paths."""
    assert dense.dtype == np.float32 and dense.shape[1] == NUM_DENSE
    assert labels.dtype == np.int32 and labels.shape == (len(dense), 1)
    paths = day_files(folder, day)
    members = {str(i): np.ascontiguousarray(ids, dtype=np.int32) for i, ids in enumerate(sparse)}
    for kind, writer in (("dense", lambda f: np.save(f, dense)),
                         ("labels", lambda f: np.save(f, labels)),
                         ("sparse_multi_hot", lambda f: np.savez(f, **members))):
        tmp = paths[kind] + ".tmp"
        with open(tmp, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, paths[kind])
    return paths


@dataclass
class DayLayout:
    """Validated locations of one day's arrays (headers checked, sizes checked)."""
    dense: ArrayLocation
    labels: ArrayLocation
    sparse: list[ArrayLocation]

    @property
    def rows(self) -> int:
        return self.dense.shape[0]


def inspect_day(folder: str, day: int, multi_hot_sizes: Sequence[int]) -> DayLayout:
    paths = day_files(folder, day)
    dense = locate_npy(paths["dense"], "float32", NUM_DENSE)
    labels = locate_npy(paths["labels"], "int32", 1)
    sparse = [locate_npz_member(paths["sparse_multi_hot"], str(i), "int32", hot)
              for i, hot in enumerate(multi_hot_sizes)]
    for loc in [labels, *sparse]:
        if loc.shape[0] != dense.shape[0]:
            raise DataFormatError(f"{loc.path}: {loc.shape[0]} rows but {paths['dense']} has "
                                  f"{dense.shape[0]}")
    return DayLayout(dense, labels, sparse)


class CriteoDay:
    """One day's arrays, opened the reference's way."""

    def __init__(self, layout: DayLayout, mmap: bool, rows: Optional[slice] = None):
        self.layout = layout
        rows = rows or slice(0, layout.rows)
        self.dense = memmap(layout.dense)[rows]
        self.labels = memmap(layout.labels)[rows]
        if not mmap:  # load to RAM (the whole file region, read sequentially once)
            self.dense, self.labels = np.array(self.dense), np.array(self.labels)
        self.sparse = [memmap(loc)[rows] for loc in layout.sparse]
        self.mmap = mmap

    def __len__(self) -> int:
        return len(self.dense)

    def load_bytes(self) -> int:
        """Bytes read up front when not memory-mapped (dense + labels)."""
        return 0 if self.mmap else self.dense.nbytes + self.labels.nbytes


@dataclass
class Batch:
    dense: np.ndarray           # float32 (b, 13)
    sparse: list[np.ndarray]    # int32 (b, hotness) per table
    labels: np.ndarray          # int32 (b, 1)
    io: Optional[IOCharge] = None  # what reading it cost (accounted by the training process)

    @property
    def nbytes(self) -> int:
        return self.dense.nbytes + self.labels.nbytes + sum(s.nbytes for s in self.sparse)


def fold_ids(ids: np.ndarray, rows: int) -> np.ndarray:
    """Fold real Criteo ids (indices into the full tables) onto a table of ``rows`` rows, the
    reference's ``id % num_embeddings``: only when some id is at or above ``rows`` (the max is
    one cheap pass), in place and in the file's int32 (no int64 intermediate, no second copy).
    ``ids`` must be the caller's own array (a batch copied out of the file, never a memmap).
    Ids are non-negative, so C's truncating ``fmod`` equals ``%`` and skips its sign fix-up."""
    if ids.size and int(ids.max()) >= rows:
        np.fmod(ids, np.int32(rows), out=ids)
    return ids


class IdFolder:
    """``fold_ids`` per table for a stream of batches: once a table has needed folding it is
    folded without the max pass (folding ids already below ``rows`` changes nothing)."""

    def __init__(self, rows: Sequence[int]):
        self.rows = [int(r) for r in rows]
        self.folding = [False] * len(self.rows)

    def __call__(self, sparse: list[np.ndarray]) -> list[np.ndarray]:
        for t, (ids, rows) in enumerate(zip(sparse, self.rows)):
            if self.folding[t]:
                np.fmod(ids, np.int32(rows), out=ids)
            elif ids.size and int(ids.max()) >= rows:
                self.folding[t] = True
                np.fmod(ids, np.int32(rows), out=ids)
        return sparse


class CriteoSplit:
    """A sequence of days read as one contiguous sample space (train days, or validation)."""

    def __init__(self, days: list[CriteoDay], tier=None):
        self.days, self.tier = days, tier
        self.starts = np.cumsum([0] + [len(d) for d in days])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def read(self, start: int, size: int) -> Batch:
        """Samples [start, start+size), copied out of the files (this is where I/O happens)."""
        began = time.perf_counter()
        parts: list[Batch] = []
        requests = 0
        end = start + size
        while start < end:
            d = int(np.searchsorted(self.starts, start, side="right") - 1)
            lo, hi = start - self.starts[d], min(end, self.starts[d + 1]) - self.starts[d]
            day = self.days[d]
            parts.append(Batch(np.array(day.dense[lo:hi]), [np.array(s[lo:hi]) for s in day.sparse],
                               np.array(day.labels[lo:hi])))
            requests += len(day.sparse) + (2 if day.mmap else 0)
            start += hi - lo
        batch = parts[0] if len(parts) == 1 else Batch(
            np.concatenate([p.dense for p in parts]),
            [np.concatenate(cols) for cols in zip(*(p.sparse for p in parts))],
            np.concatenate([p.labels for p in parts]))
        if self.tier is not None:  # in RAM already unless mmap: only the mapped arrays hit storage
            on_disk = batch.nbytes if self.days[0].mmap else batch.nbytes - batch.dense.nbytes \
                - batch.labels.nbytes
            batch.io = self.tier.throttle(on_disk, requests, began, write=False)
        return batch


def open_splits(folder: str, num_days: int, multi_hot_sizes: Sequence[int], mmap: bool,
                tier=None, layouts: Optional[list[DayLayout]] = None
                ) -> tuple[CriteoSplit, CriteoSplit]:
    """(train, validation) as the reference splits them. Up-front loads are charged to ``tier``."""
    if layouts is None:  # callers that already checked the headers pass what they found
        layouts = [inspect_day(folder, d, multi_hot_sizes) for d in range(num_days)]
    began = time.perf_counter()
    train_days = [CriteoDay(layout, mmap) for layout in layouts[:-1]]
    last = layouts[-1]
    val_day = CriteoDay(last, mmap, rows=slice(0, last.rows // 2))
    if tier is not None:
        loaded = sum(d.load_bytes() for d in [*train_days, val_day])
        tier.charge_read(loaded, 0 if mmap else 2 * num_days, began)
    return CriteoSplit(train_days, tier), CriteoSplit([val_day], tier)
