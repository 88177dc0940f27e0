"""Megatron indexed datasets (``PREFIX.bin`` + ``PREFIX.idx``) and GPT-style training samples.

``.idx`` layout (Megatron-LM core/datasets/indexed_dataset.py, MMIDIDX):
    magic b"MMIDIDX\\x00\\x00" | version <Q (1) | dtype code <B | sequence count <Q |
    document count <Q | sizes int32[seq] | pointers int64[seq] (byte offsets into .bin) |
    document index int64[doc] (sequence index where each document starts, plus a final entry)
``.bin`` is the tokens of every sequence back to back. Tokens are uint16 when the vocabulary
fits (< 65500, Megatron's rule) and int32 otherwise.

Samples are built as Megatron's GPTDataset does: a document index (documents x epochs,
shuffled), a sample index ((document-index position, offset) where each sample of seq_len + 1
tokens starts; consecutive samples share one token) and a shuffle index over samples. The three
arrays are cached as .npy on the storage tier so the second run skips building them.
Validation uses the first N samples of the validation file without shuffling.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import time
from typing import Iterable, Optional, Sequence

import numpy as np

from pinchpoint.data.npy_format import DataFormatError
from pinchpoint.storage.atomic import atomic_write

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
# Megatron's DType table (code -> numpy dtype).
DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64,
          7: np.float32, 8: np.uint16}
CODES = {np.dtype(v): k for k, v in DTYPES.items()}


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size < 65500 else np.int32)


# --- writing -------------------------------------------------------------------------------------
def write_indexed(prefix: str, documents: Iterable[np.ndarray], dtype) -> dict:
    """Write documents (one sequence each, as Megatron's preprocess_data does for text) to
    PREFIX.bin/.idx, each file atomically. Returns counts and byte sizes."""
    dtype = np.dtype(dtype)
    sizes: list[int] = []
    with atomic_write(prefix + ".bin") as w:
        for doc in documents:
            arr = np.ascontiguousarray(doc, dtype=dtype)
            w.write(arr.tobytes())
            sizes.append(len(arr))
    lengths = np.asarray(sizes, dtype=np.int32)
    pointers = np.zeros(len(sizes), dtype=np.int64)
    pointers[1:] = np.cumsum(lengths[:-1], dtype=np.int64) * dtype.itemsize
    doc_index = np.arange(len(sizes) + 1, dtype=np.int64)
    with atomic_write(prefix + ".idx") as w:
        w.write(MAGIC)
        w.write(struct.pack("<Q", VERSION))
        w.write(struct.pack("<B", CODES[dtype]))
        w.write(struct.pack("<Q", len(sizes)))
        w.write(struct.pack("<Q", len(doc_index)))
        w.write(lengths.tobytes())
        w.write(pointers.tobytes())
        w.write(doc_index.tobytes())
    return {"sequences": len(sizes), "tokens": int(lengths.sum()),
            "bin_bytes": os.path.getsize(prefix + ".bin"),
            "idx_bytes": os.path.getsize(prefix + ".idx")}


# --- reading -------------------------------------------------------------------------------------
class IndexedDataset:
    """Memory-mapped PREFIX.bin/.idx; ``[i]`` is sequence i's tokens (a view into the map)."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        idx_path, bin_path = prefix + ".idx", prefix + ".bin"
        for path in (idx_path, bin_path):
            if not os.path.exists(path):
                raise DataFormatError(f"{path}: missing (a Megatron dataset is PREFIX.bin + "
                                      "PREFIX.idx)")
        with open(idx_path, "rb") as f:
            magic = f.read(9)
            if magic != MAGIC:
                raise DataFormatError(f"{idx_path}: magic {magic!r}, expected {MAGIC!r}")
            (version,) = struct.unpack("<Q", f.read(8))
            if version != VERSION:
                raise DataFormatError(f"{idx_path}: version {version}, expected {VERSION}")
            (code,) = struct.unpack("<B", f.read(1))
            if code not in DTYPES:
                raise DataFormatError(f"{idx_path}: unknown dtype code {code}")
            self.dtype = np.dtype(DTYPES[code])
            (self.sequence_count,) = struct.unpack("<Q", f.read(8))
            (self.document_count,) = struct.unpack("<Q", f.read(8))
            offset = f.tell()
        expected = offset + self.sequence_count * 12 + self.document_count * 8
        if os.path.getsize(idx_path) < expected:
            raise DataFormatError(f"{idx_path}: {os.path.getsize(idx_path)} bytes, header says "
                                  f"at least {expected}")
        idx = np.memmap(idx_path, mode="r", dtype=np.uint8)
        n = self.sequence_count
        self.sizes = np.frombuffer(idx, np.int32, n, offset)
        self.pointers = np.frombuffer(idx, np.int64, n, offset + 4 * n)
        self.document_indices = np.frombuffer(idx, np.int64, self.document_count, offset + 12 * n)
        bin_bytes = os.path.getsize(bin_path)
        need = int(self.pointers[-1]) + int(self.sizes[-1]) * self.dtype.itemsize if n else 0
        if bin_bytes < need:
            raise DataFormatError(f"{bin_path}: {bin_bytes} bytes, index needs {need}")
        self.bin = np.memmap(bin_path, mode="r", dtype=np.uint8) if bin_bytes else np.zeros(0)

    def __len__(self) -> int:
        return self.sequence_count

    def get(self, i: int, offset: int = 0, length: Optional[int] = None) -> np.ndarray:
        size = int(self.sizes[i]) - offset
        length = size if length is None else min(length, size)
        start = int(self.pointers[i]) + offset * self.dtype.itemsize
        return np.frombuffer(self.bin, self.dtype, length, start)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.get(i)

    def files(self) -> list[str]:
        return [self.prefix + ".bin", self.prefix + ".idx"]


# --- GPT samples ---------------------------------------------------------------------------------
def build_document_index(num_docs: int, num_epochs: int, rng: np.random.RandomState) -> np.ndarray:
    index = np.tile(np.arange(num_docs, dtype=np.int32), num_epochs)
    rng.shuffle(index)
    return index


def build_sample_index(sizes: np.ndarray, document_index: np.ndarray, seq_len: int,
                       num_samples: int) -> np.ndarray:
    """(num_samples + 1, 2) int64 [position in document_index, token offset]: sample i spans
    tokens from row i to row i + 1 inclusive (seq_len + 1 tokens). Vectorised equivalent of
    Megatron's build_sample_idx: sample i starts at token i * seq_len of the concatenated
    stream (tests check it against a port of the reference loop)."""
    lengths = sizes[document_index].astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    positions = np.arange(num_samples + 1, dtype=np.int64) * seq_len
    if positions[-1] >= starts[-1]:
        raise ValueError(f"{num_samples} samples of {seq_len}+1 tokens need more than the "
                         f"{starts[-1]} tokens in the document index")
    doc = np.searchsorted(starts, positions, side="right") - 1
    return np.stack([doc, positions - starts[doc]], axis=1)


def samples_in(tokens: int, seq_len: int) -> int:
    """Samples of seq_len + 1 tokens (sharing one token with the next) in ``tokens``."""
    return max(0, (tokens - 1) // seq_len)


class GPTDataset:
    """Training (shuffled) or validation (unshuffled) samples of seq_len + 1 tokens."""

    def __init__(self, data: IndexedDataset, seq_len: int, num_samples: int, seed: int,
                 shuffle: bool, cache_dir: Optional[str] = None):
        self.data, self.seq_len, self.shuffle = data, seq_len, shuffle
        tokens_per_epoch = int(data.sizes.sum(dtype=np.int64))
        per_epoch = samples_in(tokens_per_epoch, seq_len)
        if per_epoch == 0:
            raise ValueError(f"{data.prefix}: {tokens_per_epoch} tokens hold no sample of "
                             f"{seq_len}+1 tokens")
        num_samples = num_samples or per_epoch
        self.num_epochs = -(-num_samples * seq_len // max(tokens_per_epoch - 1, 1))
        self.num_samples = num_samples
        self.build_seconds, self.cached = 0.0, False
        self.document_index, self.sample_index, self.shuffle_index = self._indices(seed, cache_dir)

    def _key(self, seed: int) -> str:
        desc = {"prefix": os.path.abspath(self.data.prefix), "seq_len": self.seq_len,
                "num_samples": self.num_samples, "seed": seed, "shuffle": self.shuffle,
                "sequences": self.data.sequence_count,
                "tokens": int(self.data.sizes.sum(dtype=np.int64))}
        return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:16]

    def _indices(self, seed: int, cache_dir: Optional[str]):
        names = ("document_index", "sample_index", "shuffle_index")
        key = self._key(seed)
        paths = [os.path.join(cache_dir, f"{key}-GPTDataset-{n}.npy") for n in names] \
            if cache_dir else []
        if paths and all(os.path.exists(p) for p in paths):
            self.cached = True
            return tuple(np.load(p, mmap_mode="r") for p in paths)
        started = time.perf_counter()
        rng = np.random.RandomState(seed)
        if self.shuffle:
            doc = build_document_index(len(self.data), self.num_epochs, rng)
        else:
            doc = np.tile(np.arange(len(self.data), dtype=np.int32), self.num_epochs)
        sample = build_sample_index(self.data.sizes, doc, self.seq_len, self.num_samples)
        shuffle = np.arange(self.num_samples, dtype=np.int64)
        if self.shuffle:
            rng.shuffle(shuffle)
        self.build_seconds = time.perf_counter() - started
        for path, arr in zip(paths, (doc, sample, shuffle)):
            with atomic_write(path) as w:  # concurrent ranks may race: last rename wins, same bytes
                np.save(w, arr)
        return doc, sample, shuffle

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, i: int) -> np.ndarray:
        """seq_len + 1 tokens (int64) of sample i (after the shuffle)."""
        j = int(self.shuffle_index[i])
        (d0, off0), (d1, off1) = self.sample_index[j], self.sample_index[j + 1]
        doc = self.document_index
        if d0 == d1:
            pieces = [self.data.get(int(doc[d0]), int(off0), int(off1 - off0 + 1))]
        else:
            pieces = [self.data.get(int(doc[d0]), int(off0))]
            pieces += [self.data.get(int(doc[d])) for d in range(d0 + 1, d1)]
            pieces.append(self.data.get(int(doc[d1]), 0, int(off1 + 1)))
        return np.concatenate(pieces).astype(np.int64)

    def batch(self, indices: Sequence[int]) -> np.ndarray:
        return np.stack([self[int(i)] for i in indices])
