"""Megatron indexed dataset (.bin/.idx, MMIDIDX) writer/reader and GPT sample building."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from pinchpoint.data import megatron
from pinchpoint.data.npy_format import DataFormatError


def _docs(rng, n, vocab, dtype):
    return [rng.integers(0, vocab, rng.integers(1, 50)).astype(dtype) for _ in range(n)]


@pytest.mark.parametrize("vocab,dtype,code", [(32000, np.uint16, 8), (128256, np.int32, 4)])
def test_round_trip_header_and_tokens(tmp_path, vocab, dtype, code):
    assert megatron.token_dtype(vocab) == np.dtype(dtype)
    rng = np.random.default_rng(0)
    docs = _docs(rng, 37, vocab, dtype)
    prefix = str(tmp_path / "corpus_text_document")
    stats = megatron.write_indexed(prefix, docs, dtype)
    raw = open(prefix + ".idx", "rb").read()
    assert raw[:9] == b"MMIDIDX\x00\x00"
    assert struct.unpack("<Q", raw[9:17]) == (1,)
    assert raw[17] == code
    assert struct.unpack("<QQ", raw[18:34]) == (37, 38)   # sequences, document index entries
    sizes = np.frombuffer(raw, np.int32, 37, 34)
    pointers = np.frombuffer(raw, np.int64, 37, 34 + 4 * 37)
    doc_index = np.frombuffer(raw, np.int64, 38, 34 + 12 * 37)
    assert sizes.tolist() == [len(d) for d in docs]
    assert pointers.tolist() == (np.cumsum([0] + [len(d) for d in docs[:-1]]) *
                                 np.dtype(dtype).itemsize).tolist()
    assert doc_index.tolist() == list(range(38))
    assert len(raw) == 34 + 12 * 37 + 8 * 38
    data = megatron.IndexedDataset(prefix)
    assert data.dtype == np.dtype(dtype) and len(data) == 37
    for i, doc in enumerate(docs):
        np.testing.assert_array_equal(data[i], doc)
    assert stats["tokens"] == sum(len(d) for d in docs)
    assert stats["bin_bytes"] == stats["tokens"] * np.dtype(dtype).itemsize


def test_damaged_files_fail_clearly(tmp_path):
    prefix = str(tmp_path / "c")
    megatron.write_indexed(prefix, [np.arange(10, dtype=np.uint16)], np.uint16)
    raw = bytearray(open(prefix + ".idx", "rb").read())
    open(prefix + ".idx", "wb").write(b"XXIDIDX\x00\x00" + raw[9:])
    with pytest.raises(DataFormatError, match="magic"):
        megatron.IndexedDataset(prefix)
    open(prefix + ".idx", "wb").write(raw)
    open(prefix + ".bin", "wb").write(b"\x00" * 4)       # truncated tokens
    with pytest.raises(DataFormatError, match="index needs 20"):
        megatron.IndexedDataset(prefix)
    with pytest.raises(DataFormatError, match="missing"):
        megatron.IndexedDataset(str(tmp_path / "absent"))


def _reference_sample_index(sizes, doc_idx, seq_length, num_samples):
    """Port of Megatron's helpers.cpp build_sample_idx (add_extra_token_to_sequence=True)."""
    out = np.zeros((num_samples + 1, 2), dtype=np.int64)
    doc_i, offset = 0, 0
    out[0] = (doc_i, offset)
    for s in range(1, num_samples + 1):
        remaining = seq_length + 1
        while remaining != 0:
            length = sizes[doc_idx[doc_i]] - offset
            remaining -= length
            if remaining <= 0:
                offset += remaining + length - 1
                remaining = 0
            else:
                doc_i += 1
                offset = 0
        out[s] = (doc_i, offset)
    return out


def test_sample_index_matches_megatron_loop():
    rng = np.random.default_rng(1)
    sizes = rng.integers(1, 40, 200).astype(np.int32)
    doc_idx = megatron.build_document_index(200, 2, np.random.RandomState(3))
    n = megatron.samples_in(int(sizes.sum()) * 2, 16)
    ours = megatron.build_sample_index(sizes, doc_idx, 16, n)
    np.testing.assert_array_equal(ours, _reference_sample_index(sizes, doc_idx, 16, n))


def test_gpt_samples_cover_the_stream_and_cache(tmp_path):
    docs = [np.arange(i * 100, i * 100 + 7 + i, dtype=np.uint16) for i in range(30)]
    prefix = str(tmp_path / "c")
    megatron.write_indexed(prefix, docs, np.uint16)
    data = megatron.IndexedDataset(prefix)
    stream = np.concatenate(docs).astype(np.int64)
    val = megatron.GPTDataset(data, 8, 5, seed=0, shuffle=False)
    for i in range(5):   # unshuffled validation: consecutive windows sharing one token
        np.testing.assert_array_equal(val[i], stream[i * 8: i * 8 + 9])
    cache = str(tmp_path / "cache")
    import os
    os.makedirs(cache)
    train = megatron.GPTDataset(data, 8, 0, seed=7, shuffle=True, cache_dir=cache)
    assert not train.cached and len(os.listdir(cache)) == 3
    again = megatron.GPTDataset(data, 8, 0, seed=7, shuffle=True, cache_dir=cache)
    assert again.cached
    assert sorted(map(int, train.shuffle_index)) == list(range(len(train)))
    for i in range(len(train)):
        sample = again[i]
        assert len(sample) == 9
        np.testing.assert_array_equal(sample, train[i])
    # every token of a sample is a real token of some document, in document order within docs
    order = np.concatenate([docs[d] for d in train.document_index]).astype(np.int64)
    j = int(train.shuffle_index[0])
    np.testing.assert_array_equal(train[0], order[j * 8: j * 8 + 9])


def test_synthetic_corpus_entropy_and_format(tmp_path):
    from pinchpoint.data import synthetic_c4
    params = {"vocab_size": 64, "train_tokens": 20000, "validation_tokens": 4000,
              "teacher": {"successors": 4, "g1_std": 1.0, "g2_std": 3.0, "g2_rank": 4,
                          "mean_doc_tokens": 50.0, "seed": 1}}
    folder, manifest = synthetic_c4.ensure(str(tmp_path), params)
    assert synthetic_c4.ensure(str(tmp_path), params)[1]["created"] == manifest["created"]
    data = megatron.IndexedDataset(f"{folder}/{synthetic_c4.VALIDATION}")
    assert data.dtype == np.uint16
    assert all(int(data[i][-1]) == 63 for i in range(len(data)))   # documents end with EOD
    h = manifest["teacher_entropy_nats"]
    assert 0 < h < manifest["bigram_log_perplexity"] < manifest["uniform_log_perplexity"]
    best = synthetic_c4.best_log_perplexity(folder, 16, 10)
    assert abs(best - h) < 0.25
