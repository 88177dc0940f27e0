"""The files a sweep leaves in its folder for its points: the MLflow parent run's id (every job --
basic launcher, submitit local or Slurm -- finds its parent there) and the keys the sweep varies
(a point is named by them). Written when the sweep starts (sweepers/mlflow_callback.py), read by
each point's run (runner/session.py, tracking/run_record.py) and by the sweepers."""
from __future__ import annotations

import json
import os
from typing import Optional

PARENT_FILE = "mlflow_parent_run_id"
SWEPT_FILE = "swept_keys.json"


def read_swept_keys(sweep_dir: Optional[str]) -> Optional[list[str]]:
    path = os.path.join(sweep_dir, SWEPT_FILE) if sweep_dir else None
    if not path or not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def parent_run_id(sweep_dir: Optional[str]) -> Optional[str]:
    if not sweep_dir:
        return None
    path = os.path.join(sweep_dir, PARENT_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return f.read().strip() or None
