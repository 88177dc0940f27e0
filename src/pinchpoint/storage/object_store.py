"""storage=object: the S3 API (boto3) that its tier (storage/object_tier.py) and checkpoints
(storage/s3_checkpoint.py) speak: an endpoint, one bucket behind a client, the pre-launch check.

On a laptop the endpoint is SeaweedFS on loopback (``launchers/object_store_up.sh``) and the tier
emulates a remote object store's bandwidth and per-request latency on top of the real requests;
set ``PINCHPOINT_S3_ENDPOINT`` (plus the usual ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` or
``AWS_PROFILE``) to use AWS, MinIO or Ceph instead and emulation turns off (conf/storage/object.yaml).

How the tier stages datasets through it: storage/object_tier.py.
"""
from __future__ import annotations

import ipaddress
import math
import os
import re
import time
from dataclasses import dataclass
from typing import IO, Callable, Iterable, Optional
from urllib.parse import urlparse

from pinchpoint.errors import ConfigError
from pinchpoint.storage.tier import IOCharge


# s3transfer switches to multipart (one request per part) above this size; the emulation charges
# one request per part, the way the real transfer is made.
PART_BYTES = 8 * 1024 * 1024
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
Throttle = Callable[[int, int, float, bool], IOCharge]


def parse_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` -> ("bucket", "some/key")."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"{url!r} is not an s3://bucket/key URL")
    return parsed.netloc, parsed.path.lstrip("/")


def is_loopback(endpoint: str) -> bool:
    host = urlparse(endpoint).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def requests_for(nbytes: int) -> int:
    return max(1, math.ceil(nbytes / PART_BYTES)) if nbytes > PART_BYTES else 1


@dataclass
class Endpoint:
    """Where the bucket is: the storage config's ``object_store`` block."""
    url: str
    bucket: str
    prefix: str = ""
    region: str = "us-east-1"
    connect_timeout_s: float = 2.0
    create_bucket: bool = False

    @classmethod
    def from_config(cls, storage) -> "Endpoint":
        o = storage.object_store
        return cls(str(o.endpoint), str(o.bucket), str(o.prefix or "").strip("/"), str(o.region),
                   float(o.connect_timeout_s), bool(o.create_bucket))


def make_client(endpoint: Endpoint, timeout_s: Optional[float] = None, retries: int = 3):
    """A boto3 S3 client. Credentials come from boto3's usual chain (env vars, AWS_PROFILE, ...);
    a loopback server without credentials (our SeaweedFS runs without auth) gets unsigned requests."""
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    connect = timeout_s if timeout_s is not None else endpoint.connect_timeout_s
    read = timeout_s if timeout_s is not None else 60.0   # one 8 MB part on a slow link
    session = boto3.session.Session()
    unsigned = session.get_credentials() is None and is_loopback(endpoint.url)
    config = Config(connect_timeout=connect, read_timeout=read,
                    retries={"total_max_attempts": retries, "mode": "standard"},
                    signature_version=UNSIGNED if unsigned else None,
                    s3={"addressing_style": "path"}, max_pool_connections=16)
    return session.client("s3", endpoint_url=endpoint.url, region_name=endpoint.region,
                          config=config)


class ObjectStore:
    """One bucket (and key prefix) behind an S3 client. Every request is timed and, when a
    ``throttle`` is given (an emulated tier's), slowed to the emulated profile; each call returns
    what it cost as an IOCharge so the caller decides which accounting it belongs to."""

    def __init__(self, endpoint: Endpoint, throttle: Optional[Throttle] = None, client=None):
        self.endpoint, self.bucket, self.prefix = endpoint, endpoint.bucket, endpoint.prefix
        self.throttle = throttle
        self._client = client

    @property
    def client(self):
        if self._client is None:
            self._client = make_client(self.endpoint)
        return self._client

    # --- names -------------------------------------------------------------------------------
    def key(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p and p.strip("/"))

    def url(self, *parts: str) -> str:
        return f"s3://{self.bucket}/{self.key(*parts)}"

    def _charge(self, nbytes: int, requests: int, started: float, write: bool) -> IOCharge:
        if self.throttle is not None:
            return self.throttle(nbytes, requests, started, write)
        return IOCharge(nbytes, requests, time.perf_counter() - started, 0.0, write)

    # --- requests (keys are full keys inside the bucket) ---------------------------------------
    def put(self, key: str, body: IO[bytes], nbytes: int) -> IOCharge:
        """Upload a readable, seekable stream (multipart above PART_BYTES)."""
        from boto3.s3.transfer import TransferConfig
        started = time.perf_counter()
        self.client.upload_fileobj(body, self.bucket, key, Config=TransferConfig(
            multipart_threshold=PART_BYTES, multipart_chunksize=PART_BYTES))
        return self._charge(nbytes, requests_for(nbytes), started, write=True)

    def put_bytes(self, key: str, data: bytes) -> IOCharge:
        started = time.perf_counter()
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)
        return self._charge(len(data), 1, started, write=True)

    def get_range(self, key: str, start: int, end: int) -> tuple[bytes, IOCharge]:
        """Bytes [start, end) of an object, one ranged GET."""
        began = time.perf_counter()
        body = self.client.get_object(Bucket=self.bucket, Key=key,
                                      Range=f"bytes={start}-{end - 1}")["Body"].read()
        return body, self._charge(len(body), 1, began, write=False)

    def get_bytes(self, key: str) -> tuple[bytes, IOCharge]:
        began = time.perf_counter()
        body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return body, self._charge(len(body), 1, began, write=False)

    def download(self, key: str, path: str) -> IOCharge:
        """Object -> local file, written to a temp name and renamed (readers never see half)."""
        from boto3.s3.transfer import TransferConfig
        began = time.perf_counter()
        tmp = f"{path}.s3part"
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.client.download_file(self.bucket, key, tmp, Config=TransferConfig(
            multipart_threshold=PART_BYTES, multipart_chunksize=PART_BYTES))
        os.replace(tmp, path)
        nbytes = os.path.getsize(path)
        return self._charge(nbytes, requests_for(nbytes), began, write=False)

    def sizes(self, prefix: str) -> dict[str, int]:
        """{key: size} of every object under ``prefix`` (all pages)."""
        found: dict[str, int] = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix):
            found.update({o["Key"]: int(o["Size"]) for o in page.get("Contents", [])})
        return found

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
            return True
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def delete(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        for i in range(0, len(keys), 1000):   # DeleteObjects takes at most 1000 keys
            self.client.delete_objects(Bucket=self.bucket, Delete={
                "Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})

    def delete_prefix(self, prefix: str) -> None:
        self.delete(self.sizes(prefix.rstrip("/") + "/"))

    def copy(self, src: str, dst: str) -> None:
        self.client.copy_object(Bucket=self.bucket, Key=dst,
                                CopySource={"Bucket": self.bucket, "Key": src})


# --- pre-launch check ---------------------------------------------------------------------------
def check_reachable(storage, timeout_s: float = 2.0) -> None:
    """Raise ConfigError unless the object store answers and its bucket is usable. Call it during
    config validation, before any rank or job starts. One short try, no retries; a missing bucket
    is created only when ``object_store.create_bucket`` (our own loopback server)."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    o = getattr(storage, "object_store", None)
    if o is None:
        return
    endpoint = Endpoint.from_config(storage)
    if urlparse(endpoint.url).scheme not in ("http", "https") or not urlparse(endpoint.url).netloc:
        raise ConfigError("storage.object_store.endpoint", endpoint.url,
                          "an http(s)://host:port URL (or set PINCHPOINT_S3_ENDPOINT)")
    if not _BUCKET.match(endpoint.bucket):
        raise ConfigError("storage.object_store.bucket", endpoint.bucket,
                          "an S3 bucket name: 3-63 of a-z 0-9 . - (or set PINCHPOINT_S3_BUCKET)")
    client = make_client(endpoint, timeout_s=timeout_s, retries=1)
    hint = ("start the local server with launchers/object_store_up.sh"
            if is_loopback(endpoint.url) else "check PINCHPOINT_S3_ENDPOINT and the network")
    try:
        client.head_bucket(Bucket=endpoint.bucket)
        return
    except NoCredentialsError:
        raise ConfigError("storage.object_store.endpoint", endpoint.url,
                          "an endpoint with credentials: set AWS_ACCESS_KEY_ID and "
                          "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)") from None
    except ClientError as err:
        code = str(err.response.get("Error", {}).get("Code"))
        if code in ("404", "NoSuchBucket") and endpoint.create_bucket:
            client.create_bucket(Bucket=endpoint.bucket)
            return
        allowed = {"404": f"an existing bucket (no bucket {endpoint.bucket!r} at {endpoint.url})",
                   "403": f"a bucket these credentials may use (access to {endpoint.bucket!r} "
                          "denied)"}.get(code, f"a usable bucket ({err})")
        raise ConfigError("storage.object_store.bucket", endpoint.bucket, allowed) from None
    except BotoCoreError as err:
        raise ConfigError("storage.object_store.endpoint", endpoint.url,
                          f"a reachable S3 endpoint ({type(err).__name__}: {err}; {hint})"
                          ) from None
