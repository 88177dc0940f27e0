"""Session fixture: a real single-node Slurm cluster (launchers/slurm_up.sh) for the tests marked
``slurm``, stopped (launchers/slurm_down.sh) when the session ends. It skips only when Slurm
truly cannot start here (not root, no apt-get, offline): any other start failure fails."""
from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CANNOT_START = 3   # slurm_up.sh's exit status for "cannot install or start on this machine"


@pytest.fixture(scope="session")
def slurm_cluster():
    """The cluster's state folder; SLURM_CONF is exported for the tests and their subprocesses."""
    env = {**os.environ, "PINCHPOINT_SLURM_HOLDER": str(os.getpid())}
    with tempfile.NamedTemporaryFile("w+", suffix=".log", prefix="slurm_up_") as log:
        # A file, not a pipe: the daemons it starts must not hold our stdout open.
        proc = subprocess.run([str(ROOT / "launchers/slurm_up.sh")], env=env, stdout=log,
                              stderr=subprocess.STDOUT, timeout=600)
        log.seek(0)
        text = log.read()
    if proc.returncode == CANNOT_START:
        pytest.skip(f"no Slurm cluster on this machine: {text.strip().splitlines()[-1]}")
    if proc.returncode != 0:
        pytest.fail(f"launchers/slurm_up.sh failed ({proc.returncode}):\n{text[-3000:]}")
    state = os.environ.get("PINCHPOINT_SLURM_STATE", "/tmp/pinchpoint-slurm")
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = f"{state}/slurm.conf"
    try:
        yield state
    finally:
        subprocess.run([str(ROOT / "launchers/slurm_down.sh")], env=env, timeout=120,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
