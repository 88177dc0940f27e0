"""Generate-once datasets: one folder per parameter hash on the storage tier, checksum manifest.

Written to a temp folder and renamed into place with the manifest last: a folder with a manifest
is complete, anything else is debris from a crash and is removed by the next generation. A file
lock serialises concurrent generators (ranks, sweep points); the others wait and reuse.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from typing import Callable, Optional

from pinchpoint.storage.atomic import sha256_file, write_text_atomic

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"


def params_hash(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]


@contextlib.contextmanager
def locked(path: str):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_manifest(folder: str, verify_checksums: bool = False) -> Optional[dict]:
    """The manifest when every listed file is present at its size (and checksum, if asked)."""
    path = os.path.join(folder, MANIFEST)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        manifest = json.load(f)
    for name, meta in manifest["files"].items():
        file = os.path.join(folder, name)
        if not os.path.exists(file) or os.path.getsize(file) != meta["bytes"]:
            log.warning("dataset %s: %s missing or resized; regenerating", folder, name)
            return None
        if verify_checksums and sha256_file(file) != meta["sha256"]:
            log.warning("dataset %s: %s checksum mismatch; regenerating", folder, name)
            return None
    return manifest


def ensure(datasets_dir: str, prefix: str, params: dict, generate: Callable[[str, dict], dict],
           verify_checksums: bool = False) -> tuple[str, dict, bool]:
    """(folder, manifest, generated_now) of the dataset for ``params``; ``generate(tmp, params)``
    writes it into an empty folder and returns the manifest when it is missing."""
    name = f"{prefix}_{params_hash(params)}"
    folder = os.path.join(datasets_dir, name)
    with locked(os.path.join(datasets_dir, ".generate.lock")):
        manifest = read_manifest(folder, verify_checksums)
        if manifest is not None and manifest["params"] == params:
            return folder, manifest, False
        for debris in os.listdir(datasets_dir):
            if debris.startswith(name + ".tmp"):
                shutil.rmtree(os.path.join(datasets_dir, debris), ignore_errors=True)
        if os.path.exists(folder):  # incomplete or mismatching: regenerate
            shutil.rmtree(folder)
        tmp = f"{folder}.tmp-{os.getpid()}"
        started = time.perf_counter()
        log.info("generating %s in %s (first time only)", prefix, folder)
        try:
            manifest = generate(tmp, params)
            write_text_atomic(os.path.join(tmp, MANIFEST), json.dumps(manifest, indent=1))
            os.replace(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("generated %s in %.1f s", name, time.perf_counter() - started)
        return folder, manifest, True
