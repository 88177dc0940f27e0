"""Emulated tiers measure what they claim, in the run's own read accounting (the tier's IOCounters
that the runner reports as data_read_mb_per_s): bandwidth through the real Criteo reader on a
file tier, and through real S3 GETs on the object tier; per-request latency likewise.

No fixed MB/s or ms windows: each test checks the time against the model the emulation implements
(storage/tier.py: a charge costs ``requests x latency + bytes / bandwidth``; when the device was
faster the caller sleeps the difference, and a sleep's overshoot is carried over and taken off the
next wait). Summed over a tier's charges that gives, on any machine, loaded or not,

    model + carried <= read_seconds <= model + own + carried

where ``own`` is what the machine itself spent in those reads in the same test (the charges'
seconds less the emulated sleeps) and ``carried`` the tier's sleep overshoot not yet given back
(at most one late wake-up). The lower bound is "emulation is never faster than the model"; the
upper one is "it adds nothing beyond the model but the machine's own cost". Each test also reads
the same bytes unshaped in the same test, to show the machine is faster than the model (else there
is nothing to shape) and to print model vs unshaped vs shaped figures."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest
import yaml

from object_store_server import object_store, s3_prefix  # noqa: F401  (fixtures)
from pinchpoint.data.criteo import open_splits, write_day
from pinchpoint.storage.object_store import Endpoint, ObjectStore
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


def _model_s(tier: StorageTier, nbytes: int, requests: int, write: bool = False) -> float:
    """What the emulation charges (StorageTier.throttle): requests x latency + bytes / bandwidth."""
    bandwidth = tier.write_bytes_per_s if write else tier.read_bytes_per_s
    return requests * tier.latency_s + nbytes / bandwidth


def _wakeup_lateness_s(sleeps: int = 20, wait_s: float = 0.01) -> float:
    """How late this machine wakes a sleeper right now: the largest overshoot of a few sleeps."""
    worst = 0.0
    for _ in range(sleeps):
        began = time.perf_counter()
        time.sleep(wait_s)
        worst = max(worst, time.perf_counter() - began - wait_s)
    return worst


def _assert_model(tier: StorageTier, seconds: float, delay_s: float, model_s: float,
                  carried_before: float = 0.0) -> str:
    """``seconds`` (the charges' wall time, ``delay_s`` of it emulated sleep) against ``model_s``:
    model + carried <= seconds <= model + own + carried (module docstring). Returns a summary.
    ``carried_before``: the tier's overshoot before these charges (a throttled request that is
    not one of them, e.g. a PUT that set them up, left it; only what these charges carry counts)."""
    own = seconds - delay_s             # the machine's own time in these charges, measured here
    carried = tier._late_s - carried_before   # sleep overshoot these charges did not give back
    eps = 1e-6                          # float rounding of perf_counter differences
    text = (f"model {1e3 * model_s:.2f} ms, measured {1e3 * seconds:.2f} ms "
            f"(excess {1e3 * (seconds - model_s):.3f} ms; own {1e3 * own:.2f} ms, "
            f"carried overshoot {1e3 * carried:.3f} ms)")
    assert seconds >= model_s + carried - eps, f"faster than the model: {text}"
    assert seconds <= model_s + own + carried + eps, f"slower than model + own cost: {text}"
    return text


def test_file_tier_at_50_mb_per_s_measures_the_model_rate(tmp_path):
    files = _criteo_days(str(tmp_path), rows=160_000)     # ~27 MB read in 3 MB batches
    # the same reads unshaped, cold as well: the machine's own cost, measured in this test
    unshaped = StorageTier("local", str(tmp_path))
    unshaped.clear_cache(files)
    _read_all(unshaped, str(tmp_path), batch=16_384)
    tier = StorageTier("slow_nfs", str(tmp_path), emulated=True, read_mb_per_s=50,
                       write_mb_per_s=50, latency_ms=0.0)
    tier.clear_cache(files)
    started = time.perf_counter()
    _read_all(tier, str(tmp_path), batch=16_384)
    wall = time.perf_counter() - started
    io = tier.io
    assert io.read_bytes > 25e6
    assert (io.read_bytes, io.read_requests) == (unshaped.io.read_bytes, unshaped.io.read_requests)
    model = _model_s(tier, io.read_bytes, io.read_requests)
    # precondition, not a speed test: unshaped reads beat the model, so there is something to shape
    assert unshaped.io.read_seconds < model, "this machine reads slower than the emulated tier"
    text = _assert_model(tier, io.read_seconds, io.emulated_delay_seconds, model)
    print(f"\n50 MB/s tier: {_mb_per_s(tier):.3f} MB/s (model {io.read_bytes / 1e6 / model:.3f}); "
          f"{text}; unshaped {1e3 * unshaped.io.read_seconds:.2f} ms")
    # the accounting is the time the reads really took, not a modelled figure
    assert io.read_seconds <= wall


def test_file_tier_latency_per_request_shows_as_configured(tmp_path):
    files = _criteo_days(str(tmp_path), rows=20_000)
    tier = StorageTier("far_nfs", str(tmp_path), emulated=True, read_mb_per_s=1e6,
                       write_mb_per_s=1e6, latency_ms=5.0)
    unshaped = StorageTier("local", str(tmp_path))   # the machine's own cost, this test
    unshaped.clear_cache(files)
    _read_all(unshaped, str(tmp_path), batch=1000)
    tier.clear_cache(files)
    _read_all(tier, str(tmp_path), batch=1000)   # 20 reads x 10 requests (8 tables + 2 arrays)
    io = tier.io
    assert io.read_requests == 20 * (len(HOTNESS) + 2)
    model = _model_s(tier, io.read_bytes, io.read_requests)   # ~200 x 5 ms: latency-bound
    assert unshaped.io.read_seconds < model, "this machine reads slower than the emulated tier"
    # per request: at least the configured 5 ms, and over it only by the machine's own cost
    text = _assert_model(tier, io.read_seconds, io.emulated_delay_seconds, model)
    per_request_ms = 1e3 * io.read_seconds / io.read_requests
    print(f"\n5 ms tier: {per_request_ms:.4f} ms per request "
          f"(model {1e3 * model / io.read_requests:.4f}); {text}; "
          f"unshaped {1e3 * unshaped.io.read_seconds:.2f} ms")


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
    # Emulation can only slow the real server down, never speed it up: the emulated link is set
    # from what loopback SeaweedFS serves here, measured first (an unshaped fetch of the same
    # object), at a tenth of it and at most 10 MB/s, so the model is always the slower one, also
    # when a busy machine slows the shaped fetch itself (at a quarter and 20 MB/s, CI on two
    # loaded cores once fetched slower than the model, and no delay was added).
    endpoint = Endpoint(object_store, "pinchpoint", s3_prefix)
    unshaped = ObjectStoreTier("object", str(tmp_path / "unshaped"), endpoint)
    path = os.path.join(unshaped.datasets_dir(), "blob.bin")
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as f:
        f.write(os.urandom(12_000_000))
    unshaped.publish([path])
    unshaped.stage([path])
    loopback_mb_per_s = _mb_per_s(unshaped)
    mb_per_s = min(10.0, loopback_mb_per_s / 10)
    tier = _object_tier(tmp_path / "shaped", object_store, s3_prefix, mb_per_s=mb_per_s,
                        latency_ms=0)
    staged = os.path.join(tier.datasets_dir(), "blob.bin")
    charge = tier.stage([staged])
    io = tier.io
    assert io.read_bytes == 12_000_000 and io.read_requests == 2   # two 8 MiB parts
    model = _model_s(tier, io.read_bytes, io.read_requests)
    text = _assert_model(tier, io.read_seconds, io.emulated_delay_seconds, model)
    assert charge.emulated_delay_seconds > 0    # the link, not loopback, set the pace
    print(f"\nS3 at {mb_per_s:.2f} MB/s (loopback unshaped {loopback_mb_per_s:.1f} MB/s): "
          f"{_mb_per_s(tier):.3f} MB/s; {text}")


def test_object_request_latency_shows_as_configured(tmp_path, object_store, s3_prefix):
    tier = _object_tier(tmp_path, object_store, s3_prefix, mb_per_s=1e6, latency_ms=200)
    key = tier.store.key("small")
    tier.store.put_bytes(key, os.urandom(4096))   # throttled too: its overshoot is carried
    carried_before = tier._late_s
    unshaped = ObjectStore(tier.endpoint)          # the same GETs with no link: loopback's cost
    loopback_ms = [1e3 * unshaped.get_range(key, 0, 1024)[1].seconds for _ in range(5)]
    charges = [tier.store.get_range(key, 0, 1024)[1] for _ in range(5)]
    assert all(c.requests == 1 and c.nbytes == 1024 for c in charges)
    model = sum(_model_s(tier, c.nbytes, c.requests) for c in charges)   # 5 x 200 ms
    # Together the GETs cost the configured latency each, over it only by loopback's own cost
    # in them (one GET delayed by a busy machine may run longer, and the next one is shortened
    # by the sleep overshoot carried over: emulation never hides real slowness).
    text = _assert_model(tier, sum(c.seconds for c in charges),
                         sum(c.emulated_delay_seconds for c in charges), model, carried_before)
    ms = [round(1e3 * c.seconds, 2) for c in charges]
    print(f"\n200 ms GETs: {ms} ms; {text}; unshaped {[round(m, 2) for m in loopback_ms]} ms")


def test_requests_slower_than_the_model_are_not_slowed_further(tmp_path):
    tier = StorageTier("t", str(tmp_path), emulated=True, read_mb_per_s=1000, write_mb_per_s=1000,
                       latency_ms=1.0)
    started = time.perf_counter()
    time.sleep(0.05)                       # the "device" took 50 ms; the model says ~1 ms
    charge = tier.charge_read(1000, 1, started)
    elapsed = time.perf_counter() - started   # measured here: the charge is the real time, no more
    assert charge.emulated_delay_seconds == 0 and 0.05 <= charge.seconds <= elapsed


@pytest.mark.parametrize("write", [False, True])
def test_direction_uses_its_own_bandwidth(tmp_path, write):
    tier = StorageTier("t", str(tmp_path), emulated=True, read_mb_per_s=100, write_mb_per_s=25,
                       latency_ms=0)
    charge = tier.throttle(2_500_000, 1, time.perf_counter(), write=write)
    expected = 0.1 if write else 0.025       # 2.5 MB at 25 MB/s (write) or 100 MB/s (read)
    assert _model_s(tier, 2_500_000, 1, write) == pytest.approx(expected)
    # the model, plus only this charge's own (non-sleep) time and the sleep's overshoot
    _assert_model(tier, charge.seconds, charge.emulated_delay_seconds, expected)


@pytest.mark.slow
def test_a_training_run_on_a_50_mb_per_s_tier_reports_the_model_rate(out):
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
    emu = yaml.safe_load((summary.parent / "config_resolved.yaml").read_text())["storage"][
        "emulation"]
    assert s["data_bytes_read"] > 30e6 and emu["enabled"]
    # The model from the run's own counts and its own resolved emulation profile; the run's read
    # time from its own rate. Exact bounds (module docstring): at least the model, and over it by
    # no more than the run's own non-sleep read time plus the tier's carried sleep overshoot,
    # which a subprocess does not report: the machine's wake-up lateness measured here stands in.
    nbytes, requests = s["data_bytes_read"], s["data_read_requests"]
    model = requests * emu["latency_ms"] / 1e3 + nbytes / (emu["read_mb_per_s"] * 1e6)
    seconds = nbytes / 1e6 / s["data_read_mb_per_s"]
    own = seconds - s["storage_emulated_delay_s"]
    late = _wakeup_lateness_s()
    text = (f"run {s['data_read_mb_per_s']:.3f} MB/s vs model {nbytes / 1e6 / model:.3f} MB/s "
            f"({100 * (seconds / model - 1):.3f} % slower): model {1e3 * model:.2f} ms, "
            f"measured {1e3 * seconds:.2f} ms, own {1e3 * own:.2f} ms, wake-up late "
            f"{1e3 * late:.3f} ms")
    print("\n" + text)
    assert seconds >= model * (1 - 1e-9), f"faster than the model: {text}"
    assert seconds <= model + own + late, f"slower than model + own cost: {text}"
