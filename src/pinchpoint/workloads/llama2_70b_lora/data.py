"""GovReport in the reference's on-disk format: parquet files ``train*.parquet`` and
``validation*.parquet`` (the reference globs exactly these) with three list-of-integer columns,
one row per packed sequence: ``input_ids``, ``attention_mask`` and ``labels``. Training labels
equal the input ids; validation labels are -100 over each example's report and its final EOS, so
the eval loss scores the summaries only (the reference's tokenize/pack step).

The same reader serves real files (``dataset.path`` / ``PINCHPOINT_GOVREPORT_PATH``) and the
synthetic ones; every check runs on open, before training: a missing column, a non-integer
column, rows of unequal length or longer than the configured sequence length, token ids outside
the vocabulary are ``DataError``s naming the file.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pinchpoint.errors import ConfigError, DataError

COLUMNS = ("input_ids", "attention_mask", "labels")
IGNORE = -100  # Hugging Face's ignore_index: a label that is not scored
# What `datasets` writes for the reference's tokenized, packed GovReport.
SCHEMA = pa.schema([("input_ids", pa.list_(pa.int32())), ("attention_mask", pa.list_(pa.int8())),
                    ("labels", pa.list_(pa.int64()))])


@dataclass
class PackedSplit:
    input_ids: np.ndarray       # (sequences, length) int64
    attention_mask: np.ndarray  # (sequences, length) int8
    labels: np.ndarray          # (sequences, length) int64, -100 = not scored
    files: list[str]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def length(self) -> int:
        return self.input_ids.shape[1]


def split_files(folder: str, split: str) -> list[str]:
    files = sorted(glob.glob(os.path.join(folder, f"{split}*.parquet")))
    if not files:
        raise DataError(folder, f"no {split}*.parquet files (the reference's GovReport layout: "
                                "train-*.parquet and validation-*.parquet)")
    return files


def _check_schema(path: str, schema: pa.Schema) -> None:
    for name in COLUMNS:
        if name not in schema.names:
            raise DataError(path, f"missing column {name!r}; GovReport parquet has "
                                  f"{', '.join(COLUMNS)} (lists of integers), found "
                                  f"{', '.join(schema.names) or 'none'}")
        kind = schema.field(name).type
        if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)) or \
                not pa.types.is_integer(kind.value_type):
            raise DataError(path, f"column {name!r} is {kind}; expected a list of integers")


def packed_length(path: str) -> int:
    """Tokens per row of one file, from its first row (schema checked first)."""
    f = pq.ParquetFile(path)
    _check_schema(path, f.schema_arrow)
    if f.metadata.num_rows == 0:
        raise DataError(path, "no rows")
    first = f.read_row_group(0, columns=["input_ids"]).column(0)[0]
    return len(first)


def _column(path: str, table: pa.Table, name: str) -> np.ndarray:
    """(rows, length) array of one list column; every row must have the same length."""
    column = table.column(name).combine_chunks()
    offsets = np.asarray(column.offsets)
    lengths = np.diff(offsets)
    if len(lengths) and (lengths != lengths[0]).any():
        bad = int(np.flatnonzero(lengths != lengths[0])[0])
        raise DataError(path, f"column {name!r}: row {bad} has {lengths[bad]} tokens, row 0 "
                              f"has {lengths[0]}; rows must be packed to one length")
    values = np.asarray(column.flatten()).astype(np.int64, copy=False)
    return values.reshape(len(lengths), -1 if len(lengths) else 0)


def read_file(path: str, seq_len: int, vocab_size: int) -> PackedSplit:
    table = pq.read_table(path)
    _check_schema(path, table.schema)
    ids, mask, labels = (_column(path, table, name) for name in COLUMNS)
    if not (ids.shape == mask.shape == labels.shape):
        raise DataError(path, f"columns disagree in shape: input_ids {ids.shape}, "
                              f"attention_mask {mask.shape}, labels {labels.shape}")
    if ids.shape[1] > seq_len:
        raise DataError(path, f"sequences of {ids.shape[1]} tokens are longer than the "
                              f"configured sequence length {seq_len}; repack the data or raise "
                              "seq_len")
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise DataError(path, f"input_ids outside [0, {vocab_size}) (the model's vocab_size): "
                              f"min {ids.min()}, max {ids.max()}")
    scored = labels[labels != IGNORE]
    if scored.size and (scored.min() < 0 or scored.max() >= vocab_size):
        raise DataError(path, f"labels outside [0, {vocab_size}) and not {IGNORE}")
    if mask.size and not np.isin(mask, (0, 1)).all():
        raise DataError(path, "attention_mask holds values other than 0 and 1")
    return PackedSplit(ids, mask.astype(np.int8), labels, [path])


def read_split(folder: str, split: str, seq_len: int, vocab_size: int,
               seq_len_field: str = "model.seq_len") -> PackedSplit:
    """All rows of ``split`` (files in name order). The configured sequence length must equal
    the packed length: longer than the data is a ConfigError (there are no tokens to fill it),
    shorter a DataError (the rows would not fit)."""
    files = split_files(folder, split)
    check_seq_len(files[0], seq_len, seq_len_field)
    parts = [read_file(path, seq_len, vocab_size) for path in files]
    lengths = {p.length for p in parts}
    if len(lengths) > 1:
        raise DataError(folder, f"{split} files are packed to different lengths {sorted(lengths)}")
    return PackedSplit(*(np.concatenate([getattr(p, c) for p in parts]) for c in COLUMNS),
                       files)


def check_seq_len(path: str, seq_len: int, field: str) -> int:
    length = packed_length(path)
    if seq_len > length:
        raise ConfigError(field, seq_len, f"at most the data's packed length {length} "
                                          f"({path})")
    return length


def write_split(path: str, input_ids: np.ndarray, attention_mask: np.ndarray,
                labels: np.ndarray, rows_per_group: int = 1024) -> int:
    """Write (rows, length) arrays as one parquet file in the reference's schema; bytes."""
    def lists(values: np.ndarray, kind) -> pa.ListArray:
        n, length = values.shape
        offsets = pa.array(np.arange(0, (n + 1) * length, length, dtype=np.int32))
        return pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1), type=kind))

    table = pa.Table.from_arrays([lists(input_ids, pa.int32()),
                                  lists(attention_mask, pa.int8()),
                                  lists(labels, pa.int64())], schema=SCHEMA)
    pq.write_table(table, path, row_group_size=rows_per_group)
    return os.path.getsize(path)
