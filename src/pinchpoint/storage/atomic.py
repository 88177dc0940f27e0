"""Crash-safe file writes: temp file in the same directory, fsync, rename, fsync the directory.

A reader never sees a half-written file under the final name, whatever kills the writer.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from typing import IO, Iterator


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class HashingWriter:
    """File-like wrapper that hashes (sha256) and counts bytes as they are written."""

    def __init__(self, f: IO[bytes]):
        self.f, self.sha256, self.nbytes = f, hashlib.sha256(), 0

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self.sha256.update(view)
        self.nbytes += len(view)
        return self.f.write(view)

    def flush(self) -> None:
        self.f.flush()


@contextlib.contextmanager
def atomic_write(path: str) -> Iterator[HashingWriter]:
    """``with atomic_write(p) as w: w.write(...)``; w.sha256/w.nbytes describe what was written."""
    directory = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            writer = HashingWriter(f)
            yield writer
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(directory)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_text_atomic(path: str, text: str) -> None:
    with atomic_write(path) as w:
        w.write(text.encode())


def sha256_file(path: str, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
