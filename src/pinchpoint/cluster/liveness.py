"""Is a point's unfinished MLflow run genuinely still running? Sweep resume must not launch a
second copy of a point whose Slurm job is still queued, running or waiting to be requeued: both
would write the same checkpoints and continue the same MLflow run.

Only Slurm can answer (the run carries its job ids as tags); a RUNNING run without them (a local
run that crashed or is running in another shell) cannot be told apart here and is rerun as before.
"""
from __future__ import annotations

from typing import Any, Optional

from pinchpoint.cluster import accounting

ALIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING",
         "COMPLETING", "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT"}


def slurm_job(run: Any) -> Optional[str]:
    """The Slurm job a run belongs to: "ARRAY_TASK" for array tasks, else the job id."""
    tags = run.data.tags
    array, task = tags.get("slurm_array_job_id"), tags.get("slurm_array_task_id")
    if array and task is not None:
        return f"{array}_{task}"
    return tags.get("slurm_job_id")


def still_running(run: Any) -> Optional[str]:
    """"Slurm job 12_3 RUNNING" when the run's job is still alive, else None (ended, not a
    Slurm run, or Slurm not reachable from here: then nothing can be said)."""
    job = slurm_job(run)
    if job is None:
        return None
    states = accounting.queued([job])
    state = (states or {}).get(job)
    return f"Slurm job {job} {state}" if state in ALIVE else None
