"""storage=object against a real S3 server (SeaweedFS on loopback): the pre-launch check, datasets
staged through S3, and torch.distributed.checkpoint into the bucket with a manifest commit."""
from __future__ import annotations

import copy
import os
import socket
import time
from typing import Optional

import pytest
import torch

from conftest import compose
from object_store_server import object_store, s3_prefix  # noqa: F401  (fixtures)
from pinchpoint.errors import ConfigError, DataError
from pinchpoint.storage import make_tier
from pinchpoint.storage import s3_checkpoint as s3c
from pinchpoint.storage.object_store import Endpoint, ObjectStore, check_reachable
from pinchpoint.storage.object_tier import ObjectStoreTier
from pinchpoint.storage.tier import StorageTier
from pinchpoint.parallel.context import shutdown


@pytest.fixture(scope="module")
def composed(tmp_path_factory):
    """storage=object composed once (composing costs seconds); ${oc.env:...} values resolve when
    read, so a test can still change the environment afterwards."""
    return compose(["storage=object"], tmp_path_factory.mktemp("out"))


def _storage(composed, endpoint: Optional[str] = None, prefix: Optional[str] = None, **fields):
    """A copy of the composed storage config with ``object_store`` fields replaced."""
    cfg = copy.deepcopy(composed)
    for key, value in dict(fields, endpoint=endpoint, prefix=prefix).items():
        if value is not None:
            cfg.storage.object_store[key] = value
    return cfg.storage


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- config and the pre-launch check ---------------------------------------------------------------
def test_object_config_builds_an_emulated_object_tier(composed, object_store, s3_prefix,
                                                      monkeypatch):
    monkeypatch.delenv("PINCHPOINT_S3_ENDPOINT", raising=False)
    storage = _storage(composed, object_store, s3_prefix)
    tier = make_tier(storage)
    assert isinstance(tier, ObjectStoreTier) and tier.emulated
    assert tier.checkpoint_url("run1") == f"s3://pinchpoint/{s3_prefix}/checkpoints/run1"
    assert tier.describe()["storage_object_bucket"] == "pinchpoint"
    check_reachable(storage)   # our server, our bucket: no error


def test_another_endpoint_from_env_turns_emulation_off(composed, monkeypatch):
    monkeypatch.setenv("PINCHPOINT_S3_ENDPOINT", "https://s3.example.com")
    monkeypatch.setenv("PINCHPOINT_S3_BUCKET", "team-ckpts")
    storage = composed.storage
    assert storage.object_store.endpoint == "https://s3.example.com"
    assert storage.object_store.bucket == "team-ckpts"
    assert storage.emulation.enabled is False and storage.object_store.create_bucket is False


def test_unreachable_endpoint_fails_fast_before_launch(composed, monkeypatch):
    monkeypatch.delenv("PINCHPOINT_S3_ENDPOINT", raising=False)
    storage = _storage(composed, f"http://127.0.0.1:{_free_port()}")
    started = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        check_reachable(storage, timeout_s=1.0)
    assert time.perf_counter() - started < 10
    assert err.value.field == "storage.object_store.endpoint"
    assert "object_store_up.sh" in str(err.value)


@pytest.mark.parametrize("field,value", [("endpoint", "127.0.0.1:8333"), ("bucket", "No_Such")])
def test_malformed_endpoint_or_bucket_names_the_field(composed, field, value):
    storage = _storage(composed, **{field: value})
    with pytest.raises(ConfigError) as err:
        check_reachable(storage)
    assert err.value.field == f"storage.object_store.{field}"


def test_missing_bucket_on_a_real_endpoint_is_an_error(composed, object_store, s3_prefix):
    storage = _storage(composed, object_store, s3_prefix, bucket=s3_prefix, create_bucket=False)
    with pytest.raises(ConfigError) as err:
        check_reachable(storage)
    assert err.value.field == "storage.object_store.bucket" and "existing bucket" in str(err.value)


# --- datasets through S3 ---------------------------------------------------------------------------
def test_file_tiers_read_in_place(tmp_path):
    assert StorageTier("local", str(tmp_path)).stage(["/nonexistent"]).nbytes == 0


def test_datasets_are_published_and_staged_through_s3(tmp_path, composed, object_store,
                                                      s3_prefix):
    storage = _storage(composed, object_store, s3_prefix)
    storage.root, storage.emulation.enabled = str(tmp_path / "cache"), False
    tier = make_tier(storage)
    folder = os.path.join(tier.datasets_dir(), "toy")
    os.makedirs(folder)
    payload = {f"part_{i}.bin": os.urandom(300_000 + i) for i in range(3)}
    files = []
    for name, data in payload.items():
        files.append(os.path.join(folder, name))
        with open(files[-1], "wb") as f:
            f.write(data)
    # cache_clear (before init) publishes what the bucket lacks; nothing is read yet
    assert tier.clear_cache(files) == "s3_publish+fadvise"
    listed = tier.store.sizes(f"{s3_prefix}/datasets/toy/")
    assert listed == {f"{s3_prefix}/datasets/toy/{n}": len(d) for n, d in payload.items()}
    assert tier.io.read_bytes == 0
    for path in files:   # the local copies may go: the bucket is the source from now on
        os.remove(path)
    # stage (after run_start): the run's read accounting counts exactly the bytes fetched via S3
    charge = tier.stage(files)
    assert charge.nbytes == tier.io.read_bytes == sum(map(len, payload.values()))
    assert tier.io.read_seconds > 0
    for path, data in zip(files, payload.values()):
        with open(path, "rb") as f:
            assert f.read() == data
    # ... and a reader's later reads of the staged copy are local, not object-store traffic.
    charge = tier.throttle(10**6, 4, time.perf_counter(), write=False)
    assert (charge.nbytes, charge.requests) == (0, 0)


# --- checkpoints -------------------------------------------------------------------------------------
def test_each_tier_gives_its_own_checkpoint_manager(tmp_path):
    """No URL sniffing: the tier decides between DCP folders and objects (nothing is asked of
    the endpoint until a checkpoint is written or read)."""
    from pinchpoint.storage.checkpoint import CheckpointManager
    from pinchpoint.storage.s3_checkpoint import S3CheckpointManager

    files = StorageTier("local", str(tmp_path))
    assert type(files.checkpoint_manager("run", keep=3)) is CheckpointManager
    assert files.checkpoint_source("other").where == files.checkpoints_dir("other")
    with pytest.raises(ConfigError) as err:
        files.checkpoint_source("s3://pinchpoint/checkpoints/other")
    assert err.value.field == "checkpoint.resume_from"
    objects = ObjectStoreTier("object", str(tmp_path), Endpoint("http://127.0.0.1:9", "b", "p"))
    manager = objects.checkpoint_manager("run", keep=3)
    assert type(manager) is S3CheckpointManager and manager.where == "s3://b/p/checkpoints/run"
    assert objects.checkpoint_source("s3://b/elsewhere").where == "s3://b/elsewhere"
    assert objects.checkpoint_source("other").where == "s3://b/p/checkpoints/other"


def _store(endpoint: str) -> ObjectStore:
    return ObjectStore(Endpoint(endpoint, "pinchpoint"))


def _state(seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"model": {"w": torch.randn(300, 200, generator=g), "steps": torch.tensor([seed])},
            "epoch": seed, "note": f"seed {seed}"}


def test_checkpoint_round_trip_with_manifest(object_store, s3_prefix):
    store = _store(object_store)
    url = s3c.url_for_step(store.url(s3_prefix, "ck"), 40)
    saved = s3c.save(_state(3), url, store, meta={"loop": {"step": 40}})
    assert saved.nbytes >= 300 * 200 * 4 and saved.seconds > 0
    manifest = s3c.read_manifest(url, store)
    assert manifest["loop"] == {"step": 40} and ".metadata" in manifest["objects"]
    assert manifest["step"] == 40
    assert manifest["bytes"] == sum(manifest["objects"].values()) > saved.nbytes
    template = {"model": {"w": torch.zeros(300, 200), "steps": torch.zeros(1, dtype=torch.long)},
                "epoch": 0, "note": ""}
    read = s3c.load(template, url, store)
    want = _state(3)
    assert torch.equal(template["model"]["w"], want["model"]["w"])
    assert template["epoch"] == 3 and template["note"] == "seed 3"
    assert read.nbytes >= 300 * 200 * 4


def test_resume_only_from_a_complete_manifest(object_store, s3_prefix):
    store = _store(object_store)
    prefix = store.url(s3_prefix, "ck")
    for step in (10, 20, 30):
        s3c.save(_state(step), s3c.url_for_step(prefix, step), store)
    assert s3c.latest_complete(prefix, store) == s3c.url_for_step(prefix, 30)
    # killed before the manifest was published: step 30 is not a checkpoint
    store.delete([f"{s3_prefix}/ck/step_00000030/MANIFEST.json"])
    assert s3c.latest_complete(prefix, store) == s3c.url_for_step(prefix, 20)
    # a shard lost or cut short: its manifest no longer matches, step 20 is skipped too
    shard = next(k for k in store.sizes(f"{s3_prefix}/ck/step_00000020/") if k.endswith(".distcp"))
    store.put_bytes(shard, b"truncated")
    assert s3c.latest_complete(prefix, store) == s3c.url_for_step(prefix, 10)
    with pytest.raises(DataError):
        s3c.load(_state(0), s3c.url_for_step(prefix, 20), store)
    # pruning keeps the newest complete one and removes the debris
    removed = s3c.prune(prefix, keep=1, store=store)
    assert set(removed) == {s3c.url_for_step(prefix, s) for s in (20, 30)}
    assert s3c.checkpoints(prefix, store) == [s3c.url_for_step(prefix, 10)]
    s3c.clear(prefix, store)
    assert s3c.checkpoints(prefix, store) == [] and s3c.latest_complete(prefix, store) is None


def _two_rank_save(rank: int, world: int, port: int, url: str, endpoint: str) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        mesh = init_device_mesh("cpu", (world,))
        full = torch.arange(64 * 10, dtype=torch.float32).reshape(64, 10)
        state = {"w": distribute_tensor(full, mesh, [Shard(0)]), "step": 5}
        s3c.save(state, url, _store(endpoint))
    finally:
        shutdown()   # collects cycles first: no group outlives its gloo threads


def test_two_ranks_write_their_shards_and_one_process_reads_them_back(object_store, s3_prefix):
    import torch.multiprocessing as mp
    url = s3c.url_for_step(_store(object_store).url(s3_prefix, "ck2"), 5)
    mp.start_processes(_two_rank_save, args=(2, _free_port(), url, object_store), nprocs=2,
                       join=True, start_method="fork")
    manifest = s3c.read_manifest(url, _store(object_store))
    assert {"__0_0.distcp", "__1_0.distcp"} <= set(manifest["objects"])
    template = {"w": torch.zeros(64, 10), "step": 0}   # another layout: one unsharded tensor
    s3c.load(template, url, _store(object_store))
    assert torch.equal(template["w"], torch.arange(640, dtype=torch.float32).reshape(64, 10))
    assert template["step"] == 5
