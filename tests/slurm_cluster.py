"""Session fixtures: a real single-node Slurm cluster (launchers/slurm_up.sh) for the tests marked
``slurm``, and a 4-node one in network namespaces (slurm_up.sh --nodes 4) for the multi-node
tests, each stopped (launchers/slurm_down.sh) when the session ends. They skip only when Slurm
truly cannot start here (not root, no apt-get, offline), and never under CI (CI=true or
PINCHPOINT_CI=1): there a cluster that cannot start fails the tests that need it."""
from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CANNOT_START = 3   # slurm_up.sh's exit status for "cannot install or start on this machine"


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("PINCHPOINT_CI") == "1"


def start_cluster(nodes: int) -> None:
    """launchers/slurm_up.sh --nodes N; skips (outside CI) only when it cannot start here."""
    env = {**os.environ, "PINCHPOINT_SLURM_HOLDER": str(os.getpid())}
    if nodes > 1:   # that variable names the one-node cluster's folder
        env.pop("PINCHPOINT_SLURM_STATE", None)
    with tempfile.NamedTemporaryFile("w+", suffix=".log", prefix="slurm_up_") as log:
        # A file, not a pipe: the daemons it starts must not hold our stdout open.
        proc = subprocess.run([str(ROOT / "launchers/slurm_up.sh"), "--nodes", str(nodes)],
                              env=env, stdout=log, stderr=subprocess.STDOUT, timeout=600)
        log.seek(0)
        text = log.read()
    if proc.returncode == CANNOT_START and not under_ci():
        pytest.skip(f"no Slurm cluster on this machine: {text.strip().splitlines()[-1]}")
    if proc.returncode != 0:
        pytest.fail(f"launchers/slurm_up.sh --nodes {nodes} failed ({proc.returncode}):\n"
                    f"{text[-3000:]}")


def stop_cluster(nodes: int) -> None:
    env = {**os.environ, "PINCHPOINT_SLURM_HOLDER": str(os.getpid())}
    if nodes > 1:
        env.pop("PINCHPOINT_SLURM_STATE", None)
    subprocess.run([str(ROOT / "launchers/slurm_down.sh"), "--nodes", str(nodes)], env=env,
                   timeout=180, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@dataclass
class NodesCluster:
    state: str
    nodes: list[str]

    @property
    def conf(self) -> str:
        return f"{self.state}/slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """For a subprocess that talks to this cluster (the tests' own SLURM_CONF is the
        one-node cluster's)."""
        return {"SLURM_CONF": self.conf}


MULTINODE = 4


@pytest.fixture(scope="session")
def multinode_cluster():
    """A 4-node cluster (node1..node4, each a network namespace on a bridge); tests pass
    ``cluster.env`` to their subprocesses rather than changing this process's SLURM_CONF."""
    start_cluster(MULTINODE)
    try:
        yield NodesCluster("/tmp/pinchpoint-cluster",
                           [f"node{i}" for i in range(1, MULTINODE + 1)])
    finally:
        stop_cluster(MULTINODE)


@pytest.fixture(scope="session")
def slurm_cluster():
    """The cluster's state folder; SLURM_CONF is exported for the tests and their subprocesses."""
    start_cluster(1)
    state = os.environ.get("PINCHPOINT_SLURM_STATE", "/tmp/pinchpoint-slurm")
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = f"{state}/slurm.conf"
    try:
        yield state
    finally:
        stop_cluster(1)
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
