"""The prefetch thread never outlives its stream: ``close()`` joins it, and a stream nobody
closed is joined at exit, before the interpreter finalizes. (A daemon thread still freeing a
``torch.from_numpy`` batch while the interpreter finalized aborted the process with
"terminate called without an active exception"; see data/loader.py.)"""
from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import torch

from pinchpoint.data.loader import BatchStream


def read(step: int) -> torch.Tensor:
    time.sleep(0.01)   # a storage read: the thread is busy when close() comes
    return torch.from_numpy(np.full((4, 33), step, dtype=np.int64))


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "pinchpoint-prefetch"]


def test_close_joins_the_prefetch_thread_and_keeps_order():
    stream = BatchStream(read, 0, 50, num_workers=0, prefetch=2, pin_memory=False)
    assert [int(next(stream)[0, 0]) for _ in range(3)] == [0, 1, 2]
    stream.close()
    assert prefetch_threads() == []


def test_a_stream_left_open_is_joined_before_the_interpreter_finalizes():
    # atexit runs handlers last-registered-first: this check, registered before the loader is
    # imported, runs after the loader's own handler.
    code = (
        "import atexit, threading, sys\n"
        "atexit.register(lambda: print('ALIVE', [t.name for t in threading.enumerate()"
        " if t.name == 'pinchpoint-prefetch' and t.is_alive()], flush=True))\n"
        "sys.path.insert(0, %r)\n"
        "from test_loader_shutdown import read\n"
        "from pinchpoint.data.loader import BatchStream\n"
        "stream = BatchStream(read, 0, 50, num_workers=0, prefetch=2, pin_memory=False)\n"
        "next(stream)\n" % str(__import__("pathlib").Path(__file__).parent))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ALIVE []" in proc.stdout, proc.stdout
