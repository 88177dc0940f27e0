"""torch.distributed.checkpoint straight to an S3 bucket, atomic in the S3 sense.

Why our own ``FileSystemBase`` on boto3 rather than torch's fsspec writer: s3fs pulls aiobotocore,
which pins botocore to a narrow range and fights boto3 in one environment; and owning the
request layer lets an emulated tier charge every PUT/GET (bandwidth + per-request latency).
Everything else is torch's own FileSystemWriter/FileSystemReader (planning, file layout,
``.metadata``, resharding on load).

A checkpoint is a key prefix ``.../step_00000120/`` holding DCP's shard objects (``__R_I.distcp``),
its ``.metadata`` and, published last by the coordinator once every rank's shards are stored,
``MANIFEST.json`` listing every object and its size. A checkpoint without a manifest, or whose
listed objects are not all there at their listed sizes, is ignored: a kill at any instant leaves
either a complete checkpoint or debris that ``latest_complete`` skips and ``prune`` removes.

Entry points (every rank calls save/load; they are collective like dcp.save/dcp.load):
  save(state, url, store=None, meta=None) -> Transfer(nbytes, seconds)
  load(template, url, store=None) -> Transfer(nbytes, seconds)
  latest_complete(prefix, store=None) -> url or None;  read_manifest(url) -> meta + objects
  prune(prefix, keep, store=None);  clear(prefix, store=None);  url_for_step(prefix, step)
and ``S3CheckpointManager``, the object tier's checkpoint manager (``tier.checkpoint_manager``).
"""
from __future__ import annotations

import contextlib
import glob
import io
import json
import os
import re
import tempfile
import time
import warnings
from typing import Any, Iterator, NamedTuple, Optional

from torch.distributed.checkpoint.filesystem import (FileSystemBase, FileSystemReader,
                                                     FileSystemWriter)

from pinchpoint.errors import DataError
from pinchpoint.storage.checkpoint import CheckpointRead, CheckpointWrite
from pinchpoint.storage.object_store import ObjectStore, parse_url

MANIFEST = "MANIFEST.json"
METADATA = ".metadata"
BLOCK_BYTES = 8 * 1024 * 1024     # a read fetches at least this much (one ranged GET)
SPILL_BYTES = 64 * 1024 * 1024    # a shard larger than this is buffered on local disk, not RAM
_STEP = re.compile(r"step_(\d+)")


class Transfer(NamedTuple):
    nbytes: int      # save: the whole checkpoint (all ranks); load: what this rank fetched
    seconds: float


@contextlib.contextmanager
def _one_process_ok():
    """DCP warns when it runs without a process group; one process is a valid world here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _default_store(url: str, store: Optional[ObjectStore]) -> ObjectStore:
    if store is not None:
        return store
    from pinchpoint.storage.object_store import Endpoint
    bucket, _ = parse_url(url)
    endpoint = os.environ.get("PINCHPOINT_S3_ENDPOINT") or \
        f"http://127.0.0.1:{os.environ.get('PINCHPOINT_S3_PORT', '8333')}"
    return ObjectStore(Endpoint(endpoint, bucket))


# --- S3 as a DCP file system ----------------------------------------------------------------------
class _UploadOnClose(io.RawIOBase):
    """A write stream that buffers (RAM, spilling to a temp file) and PUTs on close."""

    def __init__(self, store: ObjectStore, key: str):
        super().__init__()
        self.store, self.key = store, key
        self.buffer = tempfile.SpooledTemporaryFile(max_size=SPILL_BYTES)
        self.nbytes = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        n = self.buffer.write(data)
        self.nbytes += n
        return n

    def tell(self) -> int:
        return self.nbytes

    def upload(self) -> None:
        self.buffer.seek(0)
        self.store.put(self.key, self.buffer, self.nbytes)
        self.buffer.close()


class _RangedReader(io.RawIOBase):
    """A seekable read stream over one object, served from aligned BLOCK_BYTES blocks fetched
    with ranged GETs and a few kept: a rank loading only its shards of a file fetches only those
    regions, and torch.load's back-and-forth seeks inside one record hit the blocks it holds."""

    KEEP = 4

    def __init__(self, store: ObjectStore, key: str, counter: list):
        super().__init__()
        self.store, self.key, self.counter = store, key, counter
        self.size = int(store.client.head_object(Bucket=store.bucket, Key=key)["ContentLength"])
        self.pos = 0
        self.blocks: dict[int, bytes] = {}

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def _block(self, index: int) -> bytes:
        if index not in self.blocks:
            start = index * BLOCK_BYTES
            data, charge = self.store.get_range(self.key, start, min(self.size,
                                                                     start + BLOCK_BYTES))
            self.counter[0] += charge.nbytes
            if len(self.blocks) >= self.KEEP:
                self.blocks.pop(next(iter(self.blocks)))
            self.blocks[index] = data
        return self.blocks[index]

    def readinto(self, b) -> int:
        want = min(len(b), self.size - self.pos)
        out = memoryview(b)
        done = 0
        while done < want:
            index, lo = divmod(self.pos, BLOCK_BYTES)
            chunk = self._block(index)[lo:lo + want - done]
            out[done:done + len(chunk)] = chunk
            done += len(chunk)
            self.pos += len(chunk)
        return done


class S3FileSystem(FileSystemBase):
    """DCP's file-system interface on one bucket: paths are ``s3://bucket/key`` strings."""

    def __init__(self, store: ObjectStore):
        self.store = store
        self.read_bytes = [0]      # fetched by this rank's ranged GETs (a list: shared by streams)
        self.written: dict[str, int] = {}

    def _key(self, path) -> str:
        bucket, key = parse_url(str(path))
        if bucket != self.store.bucket:
            raise ValueError(f"{path}: bucket {bucket!r}, but this store is {self.store.bucket!r}")
        return key

    @contextlib.contextmanager
    def create_stream(self, path, mode: str) -> Iterator[io.IOBase]:
        key = self._key(path)
        if "w" in mode:
            stream = _UploadOnClose(self.store, key)
            yield stream            # nothing is stored unless the body finished without error
            stream.upload()
            self.written[key] = stream.nbytes
        else:
            yield _RangedReader(self.store, key, self.read_bytes)

    def concat_path(self, path, suffix: str) -> str:
        return f"{str(path).rstrip('/')}/{suffix}"

    def init_path(self, path, **kwargs) -> str:
        parse_url(str(path))
        return str(path).rstrip("/")

    def rename(self, path, new_path) -> None:   # only DCP's .metadata.tmp -> .metadata
        self.store.copy(self._key(path), self._key(new_path))
        self.store.delete([self._key(path)])

    def mkdir(self, path) -> None:              # S3 has no folders
        pass

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id) -> bool:
        return str(checkpoint_id).startswith("s3://")

    def exists(self, path) -> bool:
        return self.store.exists(self._key(path))

    def rm_file(self, path) -> None:
        self.store.delete([self._key(path)])


class S3Writer(FileSystemWriter):
    """DCP StorageWriter into a bucket. The coordinator removes an older manifest before any rank
    writes and publishes the new one after ``.metadata``: the manifest is the commit."""

    def __init__(self, url: str, store: ObjectStore, meta: Optional[dict] = None,
                 thread_count: int = 1):
        # sync_files=False: a PUT is durable when it returns (fsync would sync this machine's disks)
        super().__init__(url, single_file_per_rank=True, sync_files=False,
                         thread_count=thread_count, overwrite=True)
        self.fs = S3FileSystem(store)
        self.path = self.fs.init_path(url)
        self.meta = dict(meta or {})

    def prepare_global_plan(self, plans):
        prefix = self.fs._key(self.path)
        self.fs.store.delete([f"{prefix}/{MANIFEST}", f"{prefix}/{METADATA}"])
        return super().prepare_global_plan(plans)

    def finish(self, metadata, results) -> None:
        super().finish(metadata, results)
        prefix = self.fs._key(self.path)
        names = {wr.storage_data.relative_path for rank in results for wr in rank} | {METADATA}
        stored = self.fs.store.sizes(prefix + "/")
        objects = {name: stored.get(f"{prefix}/{name}") for name in sorted(names)}
        missing = [n for n, size in objects.items() if size is None]
        if missing:   # never publish a manifest for a checkpoint that is not all there
            raise DataError(self.path, f"objects missing after save: {missing}")
        manifest = {"step": step_of(str(self.path)), **self.meta,
                    "format": "pinchpoint-dcp-s3/1", "objects": objects,
                    "bytes": sum(objects.values()), "created_unix": time.time()}
        self.fs.store.put_bytes(f"{prefix}/{MANIFEST}", json.dumps(manifest, indent=1).encode())


class S3Reader(FileSystemReader):
    def __init__(self, url: str, store: ObjectStore):
        super().__init__(url)
        self.fs = S3FileSystem(store)
        self.path = self.fs.init_path(url)


# --- entry points --------------------------------------------------------------------------------
def save(state: dict[str, Any], url: str, store: Optional[ObjectStore] = None,
         meta: Optional[dict] = None) -> Transfer:
    """Collective: every rank passes its own (sharded) state; ``meta`` (JSON-able, the runner's
    loop position etc.) goes into the manifest, read back by ``read_manifest``. Returns the bytes
    of all ranks' shards (from the metadata every rank receives) and this rank's wall seconds."""
    import torch.distributed.checkpoint as dcp
    started = time.perf_counter()
    store = _default_store(url, store)
    with _one_process_ok():
        metadata = dcp.save(state, storage_writer=S3Writer(url, store, meta))
    payload = {(info.relative_path, info.offset, info.length)
               for info in metadata.storage_data.values()}
    return Transfer(sum(length for _, _, length in payload), time.perf_counter() - started)


def load(template: dict[str, Any], url: str, store: Optional[ObjectStore] = None) -> Transfer:
    """Collective: fill ``template`` (this rank's layout, any world size) in place from ``url``,
    which must be a complete checkpoint. Returns the bytes this rank fetched and its seconds."""
    import torch.distributed.checkpoint as dcp
    started = time.perf_counter()
    store = _default_store(url, store)
    if read_manifest(url, store) is None:
        raise DataError(url, f"not a complete checkpoint (no valid {MANIFEST}); "
                             "use latest_complete() to find one")
    reader = S3Reader(url, store)
    with _one_process_ok():
        dcp.load(template, storage_reader=reader)
    return Transfer(reader.fs.read_bytes[0], time.perf_counter() - started)


def read_manifest(url: str, store: Optional[ObjectStore] = None) -> Optional[dict]:
    """The manifest of a complete checkpoint (every listed object present at its size), or None."""
    store = _default_store(url, store)
    _, prefix = parse_url(url.rstrip("/"))
    stored = store.sizes(prefix + "/")
    if f"{prefix}/{MANIFEST}" not in stored:
        return None
    body, _ = store.get_bytes(f"{prefix}/{MANIFEST}")
    try:
        manifest = json.loads(body)
        objects = dict(manifest["objects"])
    except (ValueError, KeyError, TypeError):
        return None
    if any(stored.get(f"{prefix}/{name}") != size for name, size in objects.items()):
        return None
    return manifest


def step_of(url: str) -> Optional[int]:
    m = _STEP.fullmatch(url.rstrip("/").rsplit("/", 1)[-1])
    return int(m.group(1)) if m else None


def checkpoints(prefix: str, store: Optional[ObjectStore] = None) -> list[str]:
    """``prefix/step_N`` URLs found under ``prefix``, newest step first (complete or not)."""
    store = _default_store(prefix, store)
    bucket, key = parse_url(prefix.rstrip("/"))
    # From the objects, not S3 "folders": a server may list an emptied folder for a while.
    names = {k[len(key) + 1:].split("/", 1)[0] for k in store.sizes(key + "/")}
    found = [f"s3://{bucket}/{key}/{n}" for n in names if _STEP.fullmatch(n)]
    return sorted(found, key=step_of, reverse=True)


def latest_complete(prefix: str, store: Optional[ObjectStore] = None) -> Optional[str]:
    """The newest checkpoint under ``prefix`` with a complete manifest, or None."""
    for url in checkpoints(prefix, store):
        if read_manifest(url, store) is not None:
            return url
    return None


def prune(prefix: str, keep: int, store: Optional[ObjectStore] = None) -> list[str]:
    """Delete all but the ``keep`` newest complete checkpoints and every incomplete one (debris
    of a killed save). Returns the deleted URLs. Rank 0, after a save returned: never while a
    save is in flight, whose objects are incomplete until its manifest is published."""
    store = _default_store(prefix, store)
    found = checkpoints(prefix, store)
    complete = [u for u in found if read_manifest(u, store) is not None]
    doomed = [u for u in found if u not in complete[:keep]]
    for url in doomed:
        _, key = parse_url(url)
        store.delete([f"{key}/{MANIFEST}"])   # the commit first: a half-deleted one is incomplete
        store.delete_prefix(key)
    return doomed


def clear(prefix: str, store: Optional[ObjectStore] = None) -> None:
    """Delete every checkpoint under ``prefix`` (a finished run's): manifests first."""
    store = _default_store(prefix, store)
    _, key = parse_url(prefix.rstrip("/"))
    objects = store.sizes(key + "/")
    store.delete([k for k in objects if k.endswith("/" + MANIFEST)])
    store.delete(objects)


def url_for_step(prefix: str, step: int) -> str:
    return f"{prefix.rstrip('/')}/step_{step:08d}"


# --- the object tier's checkpoint manager -------------------------------------------------------
class S3CheckpointManager:
    """A run's checkpoints on the object tier (``storage=object``; its ``checkpoint_manager``
    builds it): the interface of storage/checkpoint.py's CheckpointManager, through this
    module's save/load (shards first, the manifest object last as the commit)."""

    def __init__(self, tier, run_key: str, keep: int = 2):
        self.tier, self.keep, self.store = tier, keep, tier.store
        self.url = tier.checkpoint_url(run_key)
        self.dir = tier.checkpoints_dir(run_key)   # local: the progress marker

    @classmethod
    def source(cls, tier, where: str) -> "S3CheckpointManager":
        manager = cls(tier, "unused")
        manager.url = where if where.startswith("s3://") else tier.checkpoint_url(where)
        return manager

    @property
    def where(self) -> str:
        return self.url

    def save(self, state: dict[str, Any], meta: dict[str, Any], step: int,
             is_main: bool) -> Optional[CheckpointWrite]:
        url = url_for_step(self.url, step)
        # Every PUT is throttled by the tier's emulation already: no charge_write here.
        written = save(state, url, self.store, meta={"step": step, **meta})
        if not is_main:
            return None
        prune(self.url, self.keep, self.store)
        return CheckpointWrite(step, url, written.nbytes, written.seconds)

    def latest(self) -> Optional[dict[str, Any]]:
        url = latest_complete(self.url, self.store)
        return read_manifest(url, self.store) if url else None

    def load(self, template: dict[str, Any], step: int) -> CheckpointRead:
        read = load(template, url_for_step(self.url, step), self.store)
        return CheckpointRead(step, read.nbytes, read.seconds)

    def clear(self) -> None:
        clear(self.url, self.store)
        for path in glob.glob(os.path.join(self.dir, "progress.json")):
            os.remove(path)
