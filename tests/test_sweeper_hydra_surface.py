"""What `python train.py --help` shows: pinchpoint's page (groups and their options, -m,
+sweep=NAME, pinchpoint report, plan), not Hydra's 250-line config dump or the schema/* groups."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_help_page_lists_groups_and_commands_only():
    proc = subprocess.run([sys.executable, "train.py", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=180, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    page = proc.stdout
    assert "schema/" not in page and "hydra/" not in page.replace("hydra/sweeper=optuna", "")
    for text in ("python train.py -m +sweep=NAME", "pinchpoint report", "pinchpoint plan",
                 "plan_only=true", "hydra/sweeper=optuna", "(none: +gpu=NAME)"):
        assert text in page
    groups = {p.name for p in (ROOT / "conf").iterdir() if p.is_dir()} - {"hydra", "sweep"}
    listed = {line.split()[0] for line in page.split("== Config groups")[1].splitlines()[2:]
              if line.startswith("  ") and line.split()}
    assert groups <= listed
    sweeps = {p.stem for p in (ROOT / "sweeps").glob("*.yaml")}
    assert all(name in page for name in sweeps)
    assert len(page.splitlines()) < 60
