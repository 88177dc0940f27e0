"""GovReport parquet: the synthetic generator writes the reference's schema and the same reader
loads it; bad files are DataErrors (ConfigError for a sequence length above the packed one)."""
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pinchpoint.errors import ConfigError, DataError
from pinchpoint.workloads.llama2_70b_lora import data, synthetic

TASK = {"successors": 4, "g1_std": 1.0, "g2_std": 3.0, "g2_rank": 4, "mean_doc_tokens": 40.0,
        "report_fraction": 0.5, "seed": 7, "shift_seed": 8}
PARAMS = {"vocab_size": 64, "seq_len": 32, "train_sequences": 40, "validation_sequences": 12,
          "task": TASK}


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    return synthetic.ensure(str(tmp_path_factory.mktemp("datasets")), PARAMS)


def test_synthetic_files_have_the_reference_schema(generated):
    folder, manifest = generated
    schema = pq.read_schema(f"{folder}/{synthetic.VALIDATION_FILE}")
    assert schema.names == ["input_ids", "attention_mask", "labels"]
    assert all(pa.types.is_list(schema.field(n).type) for n in schema.names)
    train = data.read_split(folder, "train", 32, 64)
    val = data.read_split(folder, "validation", 32, 64)
    assert train.input_ids.shape == (40, 32) and val.input_ids.shape == (12, 32)
    assert (train.labels == train.input_ids).all() and (val.attention_mask == 1).all()
    masked = val.labels == data.IGNORE
    assert 0.3 < masked.mean() < 0.8  # reports and EOS tokens are not scored
    assert (val.labels[~masked] == val.input_ids[~masked]).all()


def test_manifest_records_a_planted_gap(generated):
    _, manifest = generated
    # A perfect base (the pretraining teacher) is far from what the fine-tuning task allows.
    assert manifest["best_eval_loss"] < manifest["pretrain_teacher_eval_loss"] - 0.3
    assert manifest["best_eval_loss"] < manifest["uniform_loss"]


def write(path, **columns):
    pq.write_table(pa.table(columns), path)


def good_columns(rows=3, length=8):
    ids = [[1] * length] * rows
    return {"input_ids": ids, "attention_mask": [[1] * length] * rows, "labels": ids}


def test_missing_column(tmp_path):
    columns = good_columns()
    del columns["labels"]
    write(tmp_path / "train-0.parquet", **columns)
    with pytest.raises(DataError, match="missing column 'labels'"):
        data.read_split(str(tmp_path), "train", 8, 64)


def test_wrong_dtype(tmp_path):
    columns = good_columns()
    columns["input_ids"] = [[1.5] * 8] * 3
    write(tmp_path / "train-0.parquet", **columns)
    with pytest.raises(DataError, match="'input_ids' is list<.*double>; expected a list of "
                                        "integers"):
        data.read_split(str(tmp_path), "train", 8, 64)


def test_sequences_longer_than_configured(tmp_path):
    write(tmp_path / "train-0.parquet", **good_columns(length=16))
    with pytest.raises(DataError, match="16 tokens are longer than the configured sequence "
                                        "length 8"):
        data.read_file(str(tmp_path / "train-0.parquet"), 8, 64)


def test_seq_len_above_the_packed_length(tmp_path):
    write(tmp_path / "train-0.parquet", **good_columns(length=8))
    with pytest.raises(ConfigError) as err:
        data.read_split(str(tmp_path), "train", 16, 64, seq_len_field="model.proxy.seq_len")
    assert err.value.field == "model.proxy.seq_len" and "packed length 8" in str(err.value)


def test_ragged_rows_and_out_of_vocab_ids(tmp_path):
    columns = good_columns()
    columns["labels"] = [[1] * 8, [1] * 7, [1] * 8]
    write(tmp_path / "train-0.parquet", **columns)
    with pytest.raises(DataError, match="row 1 has 7 tokens"):
        data.read_split(str(tmp_path), "train", 8, 64)
    columns = good_columns()
    columns["input_ids"] = [[99] * 8] * 3
    write(tmp_path / "train-0.parquet", **columns)
    with pytest.raises(DataError, match=r"input_ids outside \[0, 64\)"):
        data.read_split(str(tmp_path), "train", 8, 64)


def test_no_files(tmp_path):
    with pytest.raises(DataError, match="no validation\\*.parquet"):
        data.read_split(str(tmp_path), "validation", 8, 64)


def test_writer_round_trip(tmp_path):
    ids = np.arange(24).reshape(3, 8)
    labels = ids.copy()
    labels[:, :4] = data.IGNORE
    data.write_split(str(tmp_path / "validation-0.parquet"), ids, np.ones_like(ids), labels)
    split = data.read_split(str(tmp_path), "validation", 8, 64)
    assert (split.input_ids == ids).all() and (split.labels == labels).all()
    assert pq.read_schema(tmp_path / "validation-0.parquet") == data.SCHEMA
