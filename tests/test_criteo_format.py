"""The Criteo multi-hot files are the reference's layout, byte for byte in structure."""
import json
import os
import zipfile

import numpy as np
import pytest

from pinchpoint.data import criteo
from pinchpoint.workloads.dlrm_dcnv2 import synthetic as synthetic_criteo
from pinchpoint.data.npy_format import DataFormatError
from pinchpoint.storage.tier import StorageTier

HOT = [3, 2, 1, 2, 6, 1, 1, 1, 1, 7, 3, 8, 1, 6, 9, 5, 1, 1, 1, 12, 100, 27, 10, 3, 1, 1]
ROWS = [100] * 26


def params(days=3, n=1000):
    return {"num_embeddings_per_feature": ROWS, "multi_hot_sizes": HOT, "num_days": days,
            "samples_per_day": n, "teacher": {"embedding_dim": 2, "logit_std": 2.0,
                                              "logit_bias": -1.0, "id_skew": 3.0, "seed": 7}}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("criteo")
    return synthetic_criteo.ensure(str(root), params())


def test_files_have_the_reference_layout(dataset):
    folder, manifest = dataset
    assert sorted(os.listdir(folder)) == sorted(synthetic_criteo.expected_files(3) +
                                                ["manifest.json"])
    for day in range(3):
        paths = criteo.day_files(folder, day)
        dense, labels = np.load(paths["dense"]), np.load(paths["labels"])
        assert dense.dtype == np.float32 and dense.shape == (1000, 13)
        assert labels.dtype == np.int32 and labels.shape == (1000, 1)
        assert set(np.unique(labels)) <= {0, 1}
        with zipfile.ZipFile(paths["sparse_multi_hot"]) as zf:
            infos = zf.infolist()
            assert [i.filename for i in infos] == [f"{t}.npy" for t in range(26)]
            assert all(i.compress_type == zipfile.ZIP_STORED for i in infos)
        with np.load(paths["sparse_multi_hot"]) as npz:
            assert list(npz.keys()) == [str(t) for t in range(26)]
            for t, hot in enumerate(HOT):
                assert npz[str(t)].dtype == np.int32 and npz[str(t)].shape == (1000, hot)
                assert npz[str(t)].min() >= 0 and npz[str(t)].max() < ROWS[t]
    assert 0.5 < manifest["best_auroc"] < 1.0
    assert 0.05 < manifest["positive_rate"] < 0.95


@pytest.mark.parametrize("mmap", [True, False])
def test_reader_round_trip(tmp_path, mmap):
    rng = np.random.default_rng(0)
    days = []
    for day in range(2):
        dense = rng.random((50, 13), dtype=np.float32)
        labels = rng.integers(0, 2, (50, 1), dtype=np.int32)
        sparse = [rng.integers(0, 100, (50, h), dtype=np.int32) for h in HOT]
        criteo.write_day(str(tmp_path), day, dense, labels, sparse)
        days.append((dense, labels, sparse))
    train, val = criteo.open_splits(str(tmp_path), 2, HOT, mmap)
    assert len(train) == 50 and len(val) == 25  # validation = first half of the last day
    batch = train.read(10, 20)
    np.testing.assert_array_equal(batch.dense, days[0][0][10:30])
    np.testing.assert_array_equal(batch.labels, days[0][1][10:30])
    for t in range(26):
        np.testing.assert_array_equal(batch.sparse[t], days[0][2][t][10:30])
    vb = val.read(0, 25)
    np.testing.assert_array_equal(vb.dense, days[1][0][:25])
    assert isinstance(train.days[0].dense, np.memmap) == mmap
    assert all(isinstance(s, np.memmap) for s in train.days[0].sparse)  # always mapped


def test_reuse_and_regenerate(tmp_path):
    folder, first = synthetic_criteo.ensure(str(tmp_path), params(days=2, n=200))
    again_folder, again = synthetic_criteo.ensure(str(tmp_path), params(days=2, n=200))
    assert (again_folder, again["created"]) == (folder, first["created"])  # reused
    other, _ = synthetic_criteo.ensure(str(tmp_path), params(days=2, n=300))
    assert other != folder  # different parameters -> a new dataset
    # a damaged file makes the next ensure() regenerate instead of reading garbage
    path = criteo.day_files(folder, 1)["labels"]
    with open(path, "r+b") as f:
        f.truncate(100)
    _, regenerated = synthetic_criteo.ensure(str(tmp_path), params(days=2, n=200))
    assert regenerated["created"] > first["created"]
    assert not [d for d in os.listdir(tmp_path) if ".tmp" in d]


def test_truncated_and_wrong_dtype_files_are_named(dataset, tmp_path):
    folder, _ = dataset
    import shutil
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    sparse = criteo.day_files(str(broken), 0)["sparse_multi_hot"]
    with open(sparse, "r+b") as f:
        f.truncate(os.path.getsize(sparse) // 2)
    with pytest.raises(DataFormatError, match="day_0_sparse_multi_hot.npz"):
        criteo.inspect_day(str(broken), 0, HOT)
    dense = criteo.day_files(str(broken), 1)["dense"]
    np.save(dense, np.zeros((1000, 13), dtype=np.float64))
    with pytest.raises(DataFormatError, match=r"day_1_dense.npy: dtype is float64, expected float32"):
        criteo.inspect_day(str(broken), 1, HOT)
    labels = criteo.day_files(str(broken), 2)["labels"]
    with open(labels, "r+b") as f:
        f.truncate(os.path.getsize(labels) - 8)
    with pytest.raises(DataFormatError, match="day_2_labels.npy: truncated"):
        criteo.inspect_day(str(broken), 2, HOT)


def test_compressed_npz_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    criteo.write_day(str(tmp_path), 0, rng.random((4, 13), dtype=np.float32),
                     np.zeros((4, 1), np.int32), [np.zeros((4, h), np.int32) for h in HOT])
    np.savez_compressed(criteo.day_files(str(tmp_path), 0)["sparse_multi_hot"],
                        **{str(t): np.zeros((4, h), np.int32) for t, h in enumerate(HOT)})
    with pytest.raises(DataFormatError, match="compressed"):
        criteo.inspect_day(str(tmp_path), 0, HOT)


def test_emulated_tier_throttles_reads(dataset):
    import time
    folder, _ = dataset
    tier = StorageTier("slow", folder, emulated=True, read_mb_per_s=1.0, write_mb_per_s=1.0,
                       latency_ms=5.0)
    train, _ = criteo.open_splits(folder, 3, HOT, True, tier)
    started = time.perf_counter()
    batch = train.read(0, 100)
    tier.account(batch.io)
    elapsed = time.perf_counter() - started
    modelled = 28 * 0.005 + batch.nbytes / 1e6  # 26 sparse + dense + labels requests
    assert elapsed >= modelled * 0.99
    assert tier.io.read_bytes == batch.nbytes and tier.io.read_requests == 28
    assert tier.io.emulated_delay_seconds > 0
