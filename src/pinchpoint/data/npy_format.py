"""Header-level checks of .npy files and stored .npz members, so a truncated or wrong-dtype file
is named before training instead of failing (or silently misreading) mid-run."""
from __future__ import annotations

import os
import struct
import zipfile
from dataclasses import dataclass

import numpy as np


class DataFormatError(ValueError):
    """A data file that does not match the expected format; the message names the file."""


@dataclass
class ArrayLocation:
    path: str
    offset: int            # byte offset of the array data in ``path``
    dtype: np.dtype
    shape: tuple
    fortran_order: bool

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize


def _read_header(f, path: str) -> tuple[tuple, bool, np.dtype]:
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(f)
        return np.lib.format.read_array_header_2_0(f)
    except ValueError as err:
        raise DataFormatError(f"{path}: not a valid .npy array header ({err})") from err


def _check(loc: ArrayLocation, available: int, dtype: str, columns: int | None) -> ArrayLocation:
    if loc.dtype != np.dtype(dtype):
        raise DataFormatError(f"{loc.path}: dtype is {loc.dtype}, expected {dtype}")
    if len(loc.shape) != 2 or (columns is not None and loc.shape[1] != columns):
        want = f"(N, {columns})" if columns is not None else "(N, k)"
        raise DataFormatError(f"{loc.path}: shape is {loc.shape}, expected {want}")
    if available < loc.nbytes:
        raise DataFormatError(f"{loc.path}: truncated: header says {loc.shape} {loc.dtype} "
                              f"({loc.nbytes} bytes) but only {available} bytes follow it")
    return loc


def locate_npy(path: str, dtype: str, columns: int | None = None) -> ArrayLocation:
    if not os.path.exists(path):
        raise DataFormatError(f"{path}: missing")
    with open(path, "rb") as f:
        shape, fortran, dt = _read_header(f, path)
        offset = f.tell()
    loc = ArrayLocation(path, offset, np.dtype(dt), tuple(shape), fortran)
    return _check(loc, os.path.getsize(path) - offset, dtype, columns)


def locate_npz_member(path: str, member: str, dtype: str, columns: int | None) -> ArrayLocation:
    """Where a *stored* (uncompressed) member's array data sits inside the .npz (for np.memmap)."""
    if not os.path.exists(path):
        raise DataFormatError(f"{path}: missing")
    try:
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo(f"{member}.npy")
    except zipfile.BadZipFile as err:
        raise DataFormatError(f"{path}: not a readable zip/npz ({err}); truncated?") from err
    except KeyError as err:
        raise DataFormatError(f"{path}: member '{member}' (stored as {member}.npy) missing") from err
    if info.compress_type != zipfile.ZIP_STORED:
        raise DataFormatError(f"{path}: member {member}.npy is compressed; the reader memory-maps "
                              "members, so the npz must be written uncompressed (np.savez)")
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        start = info.header_offset + 30 + name_len + extra_len
        f.seek(start)
        shape, fortran, dt = _read_header(f, f"{path}:{member}")
        offset = f.tell()
    loc = ArrayLocation(path, offset, np.dtype(dt), tuple(shape), fortran)
    loc.path = path
    available = info.file_size - (offset - start)
    try:
        return _check(loc, available, dtype, columns)
    except DataFormatError as err:
        raise DataFormatError(f"{err} (member {member})") from None


def memmap(loc: ArrayLocation) -> np.memmap:
    return np.memmap(loc.path, dtype=loc.dtype, mode="r", offset=loc.offset, shape=loc.shape,
                     order="F" if loc.fortran_order else "C")
