"""Under CI a piece of infrastructure that cannot start fails the tests that need it; elsewhere
they skip with the reason. Each fixture is run in its own pytest session against launchers that
say "cannot start here" (exit 3), once as CI runs (PINCHPOINT_CI=1) and once as a laptop does."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

INNER = '''
from pathlib import Path

import pytest

import {module}

{module}.ROOT = Path({fake_root!r})
from {module} import {fixture}  # noqa: E402,F401  (the fixture, now on the fake launchers)


def test_needs_it({fixture}):
    pass
'''

CASES = {   # fixture module, fixture, the launcher it runs
    "slurm": ("slurm_cluster", "slurm_cluster", "slurm_up.sh"),
    "multinode": ("slurm_cluster", "multinode_cluster", "slurm_up.sh"),
    "s3": ("object_store_server", "object_store", "object_store_up.sh"),
}


def run_inner(case: str, tmp_path: Path, ci: bool) -> str:
    module, fixture, launcher = CASES[case]
    fake = tmp_path / "root"
    (fake / "launchers").mkdir(parents=True, exist_ok=True)
    for name in (launcher, launcher.replace("_up", "_down")):
        script = fake / "launchers" / name
        script.write_text("#!/bin/sh\necho 'cannot install or start on this machine' >&2\n"
                          + ("exit 3\n" if name == launcher else "exit 0\n"))
        script.chmod(0o755)
    test = tmp_path / f"test_inner_{case}.py"
    test.write_text(INNER.format(module=module, fixture=fixture, fake_root=str(fake)))
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PINCHPOINT_CI")}
    if ci:
        env["PINCHPOINT_CI"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), str(test)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    return proc.stdout + proc.stderr


@pytest.mark.parametrize("case", sorted(CASES))
def test_under_ci_a_missing_piece_fails_and_elsewhere_it_skips(case, tmp_path):
    under_ci = run_inner(case, tmp_path, ci=True)
    assert "1 error" in under_ci or "1 failed" in under_ci, under_ci[-2000:]
    assert "failed (3)" in under_ci and "skipped" not in under_ci, under_ci[-2000:]
    laptop = run_inner(case, tmp_path, ci=False)
    assert "1 skipped" in laptop and "cannot" in laptop.lower(), laptop[-2000:]
