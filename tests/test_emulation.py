"""Emulated tiers measure what they claim, in the run's own read accounting (the tier's IOCounters
that the runner reports as data_read_mb_per_s): bandwidth through the real Criteo reader on a
file tier, and through real S3 GETs on the object tier; per-request latency likewise."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

from object_store_server import object_store, s3_prefix  # noqa: F401  (fixtures)
from pinchpoint.data.criteo import open_splits, write_day
from pinchpoint.storage.object_store import Endpoint
from pinchpoint.storage.object_tier import ObjectStoreTier
from pinchpoint.storage.tier import StorageTier

HOTNESS = [4] * 8          # 8 multi-hot tables: 13*4 + 4 + 8*4*4 = 184 bytes per sample


def _criteo_days(folder: str, rows: int) -> list[str]:
    rng = np.random.default_rng(0)
    files = []
    for day, n in enumerate((rows, 1024)):   # one training day, a small validation day
        paths = write_day(folder, day, rng.standard_normal((n, 13), dtype=np.float32),
                          rng.integers(0, 2, (n, 1), dtype=np.int32),
                          [rng.integers(0, 1000, (n, h), dtype=np.int32) for h in HOTNESS])
        files += paths.values()
    return files


def _read_all(tier: StorageTier, folder: str, batch: int) -> None:
    """Read the training split the way the DLRM loader does, accounting each batch's charge."""
    train, _ = open_splits(folder, 2, HOTNESS, mmap=True, tier=tier)
    for start in range(0, len(train) - batch + 1, batch):
        tier.account(train.read(start, batch).io)


def _mb_per_s(tier: StorageTier) -> float:
    return tier.io.read_bytes / 1e6 / tier.io.read_seconds


def test_file_tier_at_50_mb_per_s_measures_45_to_55(tmp_path):
    files = _criteo_days(str(tmp_path), rows=160_000)     # ~29 MB read in 3 MB batches
    tier = StorageTier("slow_nfs", str(tmp_path), emulated=True, read_mb_per_s=50,
                       write_mb_per_s=50, latency_ms=0.0)
    tier.clear_cache(files)
    started = time.perf_counter()
    _read_all(tier, str(tmp_path), batch=16_384)
    wall = time.perf_counter() - started
    assert tier.io.read_bytes > 25e6
    assert 45 <= _mb_per_s(tier) <= 55, f"measured {_mb_per_s(tier):.1f} MB/s"
    # the accounting is the time the reads really took, not a modelled figure
    assert tier.io.read_seconds <= wall


def test_file_tier_latency_per_request_shows_as_configured(tmp_path):
    files = _criteo_days(str(tmp_path), rows=20_000)
    tier = StorageTier("far_nfs", str(tmp_path), emulated=True, read_mb_per_s=1e6,
                       write_mb_per_s=1e6, latency_ms=5.0)
    tier.clear_cache(files)
    _read_all(tier, str(tmp_path), batch=1000)   # 20 reads x 10 requests (8 tables + 2 arrays)
    assert tier.io.read_requests == 20 * (len(HOTNESS) + 2)
    per_request_ms = 1e3 * tier.io.read_seconds / tier.io.read_requests
    assert 4.5 <= per_request_ms <= 5.75, f"measured {per_request_ms:.2f} ms per request"


def test_unemulated_tier_adds_no_delay(tmp_path):
    files = _criteo_days(str(tmp_path), rows=20_000)
    tier = StorageTier("local", str(tmp_path))
    tier.clear_cache(files)
    _read_all(tier, str(tmp_path), batch=4000)
    assert tier.io.emulated_delay_seconds == 0 and tier.io.read_bytes > 0


def _object_tier(tmp_path, endpoint: str, prefix: str, mb_per_s: float,
                 latency_ms: float) -> ObjectStoreTier:
    return ObjectStoreTier("object", str(tmp_path), Endpoint(endpoint, "pinchpoint", prefix),
                           emulated=True, read_mb_per_s=mb_per_s, write_mb_per_s=mb_per_s,
                           latency_ms=latency_ms)


def test_object_tier_bandwidth_is_what_staging_measures(tmp_path, object_store, s3_prefix):
    # 20 MB/s, not 50: loopback SeaweedFS on a busy 2-core box serves GETs at roughly 50-110
    # MB/s, and emulation can only slow the real server down, never speed it up.
    tier = _object_tier(tmp_path, object_store, s3_prefix, mb_per_s=20, latency_ms=0)
    path = os.path.join(tier.datasets_dir(), "blob.bin")
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as f:
        f.write(os.urandom(12_000_000))
    tier.publish([path])
    tier.stage([path])
    assert tier.io.read_bytes == 12_000_000
    assert 18 <= _mb_per_s(tier) <= 22, f"measured {_mb_per_s(tier):.1f} MB/s"


def test_object_request_latency_shows_as_configured(tmp_path, object_store, s3_prefix):
    # 200 ms: well above what one small loopback GET takes even on a swamped machine, so the
    # figure is the emulated latency, not the machine's load
    tier = _object_tier(tmp_path, object_store, s3_prefix, mb_per_s=1e6, latency_ms=200)
    key = tier.store.key("small")
    tier.store.put_bytes(key, os.urandom(4096))
    charges = [tier.store.get_range(key, 0, 1024)[1] for _ in range(5)]
    ms = sorted(1e3 * c.seconds for c in charges)
    assert all(c.requests == 1 and c.nbytes == 1024 for c in charges)
    # together the GETs cost at least the configured latency each, and the typical GET costs
    # the latency (one request delayed by a busy machine may run longer, and the next one is
    # shortened by the sleep overshoot carried over: emulation never hides real slowness)
    assert sum(ms) >= 5 * 195 and 185 <= ms[2] <= 225, f"measured {ms} ms per GET"


def test_requests_slower_than_the_model_are_not_slowed_further(tmp_path):
    tier = StorageTier("t", str(tmp_path), emulated=True, read_mb_per_s=1000, write_mb_per_s=1000,
                       latency_ms=1.0)
    started = time.perf_counter()
    time.sleep(0.05)                       # the "device" took 50 ms; the model says ~1 ms
    charge = tier.charge_read(1000, 1, started)
    assert charge.emulated_delay_seconds == 0 and charge.seconds < 0.2


@pytest.mark.parametrize("write", [False, True])
def test_direction_uses_its_own_bandwidth(tmp_path, write):
    tier = StorageTier("t", str(tmp_path), emulated=True, read_mb_per_s=100, write_mb_per_s=25,
                       latency_ms=0)
    charge = tier.throttle(2_500_000, 1, time.perf_counter(), write=write)
    expected = 0.1 if write else 0.025
    assert expected * 0.95 <= charge.seconds <= expected * 1.5


@pytest.mark.slow
def test_a_training_run_on_a_50_mb_per_s_tier_reports_45_to_55(out):
    """The whole run: DLRM proxy on storage=nfs emulated at 50 MB/s (mmap: every batch is read
    from the tier), measured by the runner's own accounting in phase_summary.json."""
    import json

    from conftest import train
    train(["storage=nfs", "storage.emulation.read_mb_per_s=50", "storage.emulation.latency_ms=0",
           "dataset.num_days=3", "dataset.samples_per_day=16384", "dataset.batch_size=2048",
           "dataset.eval_batch_size=8192", "dataset.target_margin=0.25", "train.evals_per_epoch=2",
           "tracking.enabled=false", "train.progress_every_s=100"], out)
    (summary,) = out.glob("runs/*/phase_summary.json")
    s = json.loads(summary.read_text())
    assert s["data_bytes_read"] > 30e6
    assert 45 <= s["data_read_mb_per_s"] <= 55, f"measured {s['data_read_mb_per_s']:.1f} MB/s"
