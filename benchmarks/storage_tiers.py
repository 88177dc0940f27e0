"""Side by side in one run (python benchmarks/storage_tiers.py [--mb 64] [--repeats 3]):

1. Checkpoint write and read MB/s of the same torch.distributed.checkpoint state on local disk
   (FileSystemWriter, fsync on, cold read after evicting the files from the page cache) and on
   the object store through the S3 API (pinchpoint.storage.s3_checkpoint): the real SeaweedFS
   server on loopback unthrottled, and the tier as storage=object emulates a remote store.
2. Emulation accuracy: a file tier emulated at 50 MB/s (and at 5 ms per request) read through
   the real Criteo reader, measured in the tier's own read accounting.

Needs the loopback S3 server: launchers/object_store_up.sh (the script starts it if it is down
and stops what it started). Medians over --repeats; every figure is measured here, now.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def make_state(mb: int) -> dict:
    """A model-like state: 4 MB tensors (an optimizer's moments look the same)."""
    g = torch.Generator().manual_seed(0)
    return {"model": {f"layer{i}.weight": torch.randn(1024, 1024, generator=g)
                      for i in range(max(1, mb // 4))}, "step": 7}


def template(state: dict) -> dict:
    return {"model": {k: torch.empty_like(v) for k, v in state["model"].items()}, "step": 0}


def evict(folder: str) -> None:
    for root, _, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)


def local_disk(state: dict, root: str) -> tuple[float, float, int]:
    import torch.distributed.checkpoint as dcp
    from pinchpoint.storage.s3_checkpoint import _one_process_ok
    folder = os.path.join(root, f"ck-{uuid.uuid4().hex[:8]}")
    started = time.perf_counter()
    with _one_process_ok():
        dcp.save(state, storage_writer=dcp.FileSystemWriter(folder, sync_files=True))
    write_s = time.perf_counter() - started
    nbytes = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(folder) for f in fs)
    evict(folder)
    started = time.perf_counter()
    with _one_process_ok():
        dcp.load(template(state), checkpoint_id=folder)
    read_s = time.perf_counter() - started
    shutil.rmtree(folder)
    return write_s, read_s, nbytes


def object_store(state: dict, store, prefix: str) -> tuple[float, float, int]:
    from pinchpoint.storage import s3_checkpoint as s3c
    url = s3c.url_for_step(store.url(prefix, uuid.uuid4().hex[:8]), 1)
    saved = s3c.save(state, url, store)
    read = s3c.load(template(state), url, store)
    manifest = s3c.read_manifest(url, store)
    s3c.prune(url.rsplit("/", 1)[0], keep=0, store=store)
    return saved.seconds, read.seconds, manifest["bytes"]


def emulation_accuracy(folder: str) -> dict[str, float]:
    from test_emulation import _criteo_days, _read_all
    from pinchpoint.storage.tier import StorageTier
    os.makedirs(folder, exist_ok=True)
    files = _criteo_days(folder, rows=160_000)
    out = {}
    bw = StorageTier("bw", folder, emulated=True, read_mb_per_s=50, write_mb_per_s=50)
    bw.clear_cache(files)
    _read_all(bw, folder, batch=16_384)
    out["emulated 50 MB/s tier measured MB/s"] = bw.io.read_bytes / 1e6 / bw.io.read_seconds
    lat = StorageTier("lat", folder, emulated=True, read_mb_per_s=1e6, write_mb_per_s=1e6,
                      latency_ms=5.0)
    lat.clear_cache(files)
    _read_all(lat, folder, batch=4_096)
    out["emulated 5 ms/request tier measured ms/request"] = \
        1e3 * lat.io.read_seconds / lat.io.read_requests
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=64, help="checkpoint size in MB")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    env = {**os.environ, "PINCHPOINT_S3_HOLDER": str(os.getpid())}
    subprocess.run([str(ROOT / "launchers/object_store_up.sh")], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    try:
        run(args)
    finally:
        subprocess.run([str(ROOT / "launchers/object_store_down.sh")], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run(args) -> None:
    from conftest import compose
    from pinchpoint.storage import make_tier
    from pinchpoint.storage.object_store import ObjectStore, check_reachable

    with tempfile.TemporaryDirectory(dir=str(ROOT / "outputs") if (ROOT / "outputs").is_dir()
                                     else None) as tmp:
        storage = compose(["storage=object"], tmp).storage
        check_reachable(storage)
        emulated = make_tier(storage)                        # the storage=object profile
        real = ObjectStore(emulated.endpoint)                # same server, unthrottled
        state = make_state(args.mb)
        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        rows = {"local disk (DCP FileSystemWriter, fsync, cold read)":
                lambda: local_disk(state, tmp),
                f"object store: SeaweedFS on loopback via S3 ({real.endpoint.url})":
                lambda: object_store(state, real, prefix),
                f"object store: storage=object emulated ({emulated.read_bytes_per_s / 1e6:.0f} "
                f"MB/s, {emulated.latency_s * 1e3:.0f} ms/request)":
                lambda: object_store(state, emulated.store, prefix)}
        print(f"checkpoint of {args.mb} MB, median of {args.repeats} "
              f"(torch {torch.__version__}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})")
        print(f"{'tier':<72} {'write MB/s':>10} {'read MB/s':>10}")
        local_write = None
        for name, fn in rows.items():
            results = [fn() for _ in range(args.repeats)]
            nbytes = results[0][2]
            write = statistics.median(nbytes / 1e6 / r[0] for r in results)
            read = statistics.median(nbytes / 1e6 / r[1] for r in results)
            local_write = local_write or (write, read)
            print(f"{name:<72} {write:>10.1f} {read:>10.1f}   "
                  f"(x{write / local_write[0]:.2f} / x{read / local_write[1]:.2f} of local)")
        for name, value in emulation_accuracy(os.path.join(tmp, "criteo")).items():
            print(f"{name:<72} {value:>10.2f}")


if __name__ == "__main__":
    main()
