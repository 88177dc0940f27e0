"""Preprocessed FLUX.1 data, the reference's columns (scripts/preprocess_flux_dataset.py):

    __key__ string | t5_encodings, clip_encodings, mean, logvar: binary | timestep int32 (val)

each binary cell an ``np.save`` of a bf16 tensor viewed as uint16 (so bf16 survives numpy):
t5 (tokens, d_t5), clip (d_clip,), mean and logvar (16, H/8, W/8). Shards are Arrow IPC files
(what ``datasets.save_to_disk`` leaves, read memory-mapped) or Parquet (the reference's
intermediate files, read whole on first touch). Reads go through the storage tier.
"""
from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass

import numpy as np
import torch

from pinchpoint.errors import DataError

ARRAY_COLUMNS = ("t5_encodings", "clip_encodings", "mean", "logvar")
EXTENSIONS = {"arrow": ".arrow", "parquet": ".parquet"}


def schema(with_timestep: bool):
    import pyarrow as pa
    fields = [("__key__", pa.string())] + [(c, pa.binary()) for c in ARRAY_COLUMNS]
    if with_timestep:
        fields.append(("timestep", pa.int32()))
    return pa.schema(fields)


def serialize(t: torch.Tensor) -> bytes:
    """bf16 tensor -> np.save bytes of its uint16 view (the reference's serialize_numpy_array)."""
    buf = io.BytesIO()
    np.save(buf, t.detach().to("cpu", torch.bfloat16).contiguous().view(torch.uint16).numpy())
    return buf.getvalue()


def deserialize(data: bytes) -> torch.Tensor:
    return torch.from_numpy(np.load(io.BytesIO(data))).view(torch.bfloat16)


def array_shape(data: bytes) -> tuple:
    """Shape from the .npy header only (no array read)."""
    buf = io.BytesIO(data)
    fmt = np.lib.format
    version = fmt.read_magic(buf)
    read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
    shape, _, _ = read(buf)
    return tuple(shape)


class PreprocessedWriter:
    """Appends samples to numbered shards of ``samples_per_file`` rows each."""

    def __init__(self, folder: str, fmt: str, samples_per_file: int, with_timestep: bool):
        self.folder, self.fmt, self.per_file = folder, fmt, samples_per_file
        self.schema = schema(with_timestep)
        self.rows: list[dict] = []
        self.files = 0
        os.makedirs(folder, exist_ok=True)

    def add(self, key: str, t5, clip, mean, logvar, timestep=None) -> None:
        row = {"__key__": key, "t5_encodings": serialize(t5), "clip_encodings": serialize(clip),
               "mean": serialize(mean), "logvar": serialize(logvar)}
        if "timestep" in self.schema.names:
            row["timestep"] = int(timestep)
        self.rows.append(row)
        if len(self.rows) >= self.per_file:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa
        if not self.rows:
            return
        table = pa.Table.from_pylist(self.rows, schema=self.schema)
        path = os.path.join(self.folder, f"part-{self.files:05d}{EXTENSIONS[self.fmt]}")
        if self.fmt == "arrow":
            with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, self.schema) as w:
                w.write_table(table, max_chunksize=64)
        else:
            import pyarrow.parquet as pq
            pq.write_table(table, path, row_group_size=64, compression="none")
        self.files += 1
        self.rows = []


@dataclass(frozen=True)
class ExpectedShapes:
    t5: tuple       # (tokens, d_t5)
    clip: tuple     # (d_clip,)
    latent: tuple   # (channels, h, w)


class PreprocessedShards:
    """Random access to the rows of a folder of preprocessed shards."""

    def __init__(self, folder: str, fmt: str, expect: ExpectedShapes, mmap: bool = True,
                 tier=None, need_timestep: bool = False):
        if not os.path.isdir(folder):
            raise DataError(folder, "preprocessed dataset folder does not exist")
        ext = EXTENSIONS[fmt]
        self.paths = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(ext))
        if not self.paths:
            raise DataError(folder, f"no {ext} shards (preprocessed columns "
                                    f"{', '.join(ARRAY_COLUMNS)} expected)")
        self.fmt, self.mmap, self.tier = fmt, mmap, tier
        self.tables = [self._open(p) for p in self.paths]
        for path, table in zip(self.paths, self.tables):
            check_table(path, table, expect, need_timestep)
        self.offsets = np.cumsum([0] + [t.num_rows for t in self.tables])
        self.timesteps = (np.concatenate([t.column("timestep").to_numpy() for t in self.tables])
                          if need_timestep else None)

    def _open(self, path: str):
        import pyarrow as pa
        began = time.perf_counter()
        if self.fmt == "arrow":
            source = pa.memory_map(path) if self.mmap else pa.BufferReader(_read_all(path))
            table = pa.ipc.open_file(source).read_all()   # zero-copy over the map
            charged = 0 if self.mmap else os.path.getsize(path)
        else:
            import pyarrow.parquet as pq
            table = pq.read_table(path, memory_map=self.mmap)
            charged = os.path.getsize(path)
        if self.tier is not None and charged:
            self.tier.charge_read(charged, 1, began)
        return table

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def bytes_on_disk(self) -> int:
        return sum(os.path.getsize(p) for p in self.paths)

    def read_rows(self, indices) -> tuple[dict, int, float]:
        """{column: [bytes, ...]} for ``indices``; bytes touched; seconds. With a memory map the
        page faults are the storage reads, so they are timed (and charged) here."""
        began = time.perf_counter()
        out = {c: [] for c in ARRAY_COLUMNS}
        nbytes = 0
        for i in indices:
            f = int(np.searchsorted(self.offsets, i, side="right") - 1)
            row = int(i - self.offsets[f])
            for c in ARRAY_COLUMNS:
                cell = self.tables[f].column(c)[row].as_py()
                out[c].append(cell)
                nbytes += len(cell)
        self.last_delay_s = 0.0
        if self.tier is not None and self.fmt == "arrow" and self.mmap:  # else charged at open
            charge = self.tier.throttle(nbytes, len(indices), began, write=False)
            self.last_delay_s = charge.emulated_delay_seconds
        return out, nbytes, time.perf_counter() - began


def _read_all(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def check_table(path: str, table, expect: ExpectedShapes, need_timestep: bool) -> None:
    """Columns present and the first row's array shapes as the model scale expects."""
    names = set(table.column_names)
    wanted = set(ARRAY_COLUMNS) | ({"timestep"} if need_timestep else set())
    missing = sorted(wanted - names)
    if missing:
        raise DataError(path, f"missing column(s) {', '.join(missing)}; a preprocessed shard "
                              f"has {', '.join(sorted(wanted))}")
    if table.num_rows == 0:
        raise DataError(path, "shard has no rows")
    checks = (("t5_encodings", expect.t5, "(t5 tokens, model.<scale>.t5.d_model)"),
              ("clip_encodings", expect.clip, "(model.<scale>.clip.hidden_size,)"),
              ("mean", expect.latent, "(VAE latent channels, image_size/8, image_size/8)"),
              ("logvar", expect.latent, "(VAE latent channels, image_size/8, image_size/8)"))
    for column, shape, meaning in checks:
        got = array_shape(table.column(column)[0].as_py())
        if got != tuple(shape):
            raise DataError(path, f"column {column} holds arrays of shape {got}; this model "
                                  f"scale needs {tuple(shape)} {meaning} (wrong embedding width "
                                  "or image size)")
    if need_timestep:
        steps = table.column("timestep").to_numpy()
        bad = steps[(steps < 0) | (steps > 7)]
        if bad.size:
            raise DataError(path, f"timestep index {int(bad[0])} is outside 0..7 (each "
                                  "validation sample is evaluated at t = index / 8)")


class PreprocessedBatches:
    """Collates rows into the tensors the training step needs, timing deserialisation."""

    def __init__(self, shards: PreprocessedShards):
        self.shards = shards

    def batch(self, indices) -> dict:
        cells, nbytes, read_s = self.shards.read_rows(indices)
        began = time.perf_counter()
        out = {c: torch.stack([deserialize(b) for b in cells[c]]) for c in ARRAY_COLUMNS}
        ts = self.shards.timesteps
        out["timestep"] = (torch.from_numpy(ts[np.asarray(indices)].astype(np.int64))
                           if ts is not None else torch.full((len(indices),), -1))
        out.update(read_bytes=nbytes, read_s=read_s, read_requests=len(indices),
                   read_delay_s=self.shards.last_delay_s, decode_s=time.perf_counter() - began)
        return out
