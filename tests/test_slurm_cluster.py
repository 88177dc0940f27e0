"""Sweeps as Slurm jobs on a real single-node cluster (started by the slurm_cluster fixture).

The sweeps that mostly wait (the requeue scenario needs ~2 min: Slurm checks time limits every
30 s and the shortest limit is a minute) or that test concurrency are submitted when this module
starts and checked by their tests while the others run beside them; the node offers enough CPU
slots for all of them at once (launchers/slurm_up.sh).
"""
from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from conftest import ROOT, TINY_DLRM, compose, mlflow_client, seed_mlflow_store, train

pytestmark = pytest.mark.slurm
# Reaches its target (success) at step 24 of the tiny proxy.
TINY = [*TINY_DLRM, "dataset.target_margin=0.3"]
# Time limit 2 min and USR2 60 s before it: Slurm signals at its first 30 s check once at most
# 90 s remain, i.e. 30-60 s into an attempt. Emulated NFS latency (65 ms x 28 reads a step)
# stretches training to ~55 s, more than the first attempt can do, so it is always requeued.
REQUEUE = ["cluster=slurm", "storage=nfs", "storage.emulation.latency_ms=65", *TINY,
           "checkpoint.interval=2", "cluster.time_limit_min=2", "cluster.signal_delay_s=60",
           "cluster.max_num_timeout=4", "tracking.experiment=requeue"]
BACKGROUND = {
    "requeue": ["-m", *REQUEUE],
    "ddp2": ["-m", "cluster=slurm", "parallel=ddp2", *TINY, "train.max_steps=4"],
    "writers": ["-m", "cluster=slurm", "seed=range(8)", *TINY_DLRM, "train.max_steps=2"],
}
STAMP = re.compile(r"\((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\)")


def sacct(*args: str) -> list[list[str]]:
    out = subprocess.run(["sacct", "-X", "-P", "-n", *args], capture_output=True, text=True,
                         check=True).stdout
    return [line.split("|") for line in out.splitlines() if line]


def children(out: Path, experiment: str = "dlrm_dcnv2"):
    client = mlflow_client(out)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("pinchpoint.kind") == "sweep"]
    return client, parents, [r for r in runs if r.data.tags.get("pinchpoint.kind") == "point"]


def submitit_logs(out: Path) -> list[str]:
    return sorted(glob.glob(str(out / "sweeps" / "*" / ".submitit" / "*" / "*_log.out")))


def first_start(log: str) -> datetime:
    with open(log) as f:
        for line in f:
            if "Starting with JobEnvironment" in line:
                return datetime.strptime(STAMP.search(line).group(1), "%Y-%m-%d %H:%M:%S,%f")
    raise AssertionError(f"no start line in {log}")


def popen_train(args: list[str], out: Path, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, str(ROOT / "train.py"), *args, f"output_root={out}"]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


@dataclass
class Sweep:
    out: Path
    proc: subprocess.Popen
    log: Path

    def wait(self, timeout: float = 600) -> str:
        """The sweep command's output once it has exited with status 0."""
        rc = self.proc.wait(timeout=timeout)
        text = self.log.read_text()
        assert rc == 0, f"sweep exited {rc}:\n{text[-4000:]}"
        return text


@pytest.fixture(scope="module", autouse=True)
def background(slurm_cluster, tmp_path_factory):
    """BACKGROUND's sweeps, each with its own fresh output folder and store."""
    started = {}
    for name, args in BACKGROUND.items():
        out = tmp_path_factory.mktemp(name) / "outputs"
        if name != "writers":   # the writers' point is eight jobs creating one fresh store
            seed_mlflow_store(out)
        started[name] = Sweep(out, popen_train(args, out, out.parent / "sweep.log"),
                              out.parent / "sweep.log")
    yield started
    for sweep in started.values():
        if sweep.proc.poll() is None:
            sweep.proc.kill()


def test_two_point_sweep_is_a_job_array_with_parent_children_and_slurm_tags(out):
    proc = train(["-m", "cluster=slurm", "model=dlrm", "storage=nvme,nfs", *TINY], out,
                 timeout=400)
    text = proc.stdout + proc.stderr
    for label in ("storage=nvme", "storage=nfs"):   # progress per point
        assert re.search(rf"#\d {label}: RUNNING on", text)
        assert re.search(rf"#\d {label}: COMPLETED after \d+ s, time_to_train_s", text)
    client, parents, points = children(out)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED" and len(points) == 2
    array = {p.data.tags["slurm_array_job_id"] for p in points}
    assert len(array) == 1   # one job array
    assert {p.data.tags["slurm_array_task_id"] for p in points} == {"0", "1"}
    for p in points:
        t = p.data.tags
        assert t["mlflow.parentRunId"] == parents[0].info.run_id and t["status"] == "success"
        assert t["slurm_job_partition"] == "debug" and t["slurm_job_nodelist"]
        assert t["slurm_job_id"] and t["slurm_state"] == "COMPLETED"
        assert p.data.metrics["slurm_attempts"] == 1 and p.data.metrics["wall_time_s"] > 0
        logs = {a.path for a in client.list_artifacts(p.info.run_id, "slurm")}
        job = t["slurm_job"]
        assert logs == {f"slurm/{job}_0_log.out", f"slurm/{job}_0_log.err"}
    # Submit-to-start latency: the submitting command's log line to each task's first line.
    submitted = datetime.strptime(re.search(r"\[(\S+ \S+)\]\[HYDRA\] submitted 2 point", text)
                                  .group(1), "%Y-%m-%d %H:%M:%S,%f")
    waits = [(first_start(log) - submitted).total_seconds() for log in submitit_logs(out)]
    slurm_waits = [p.data.metrics["slurm_queue_wait_s"] for p in points]
    # The bound is the cluster's own: a pending job waits at most one scheduling pass (the
    # slurm.conf's sched_interval / bf_interval), then the task's start costs what starting a
    # Python that imports submitit under Slurm costs on this machine now, measured here with two
    # such steps at once (the array's two tasks start together). Twice that: the baseline runs
    # a moment apart from the sweep, beside the same background sweeps.
    cadence = scheduling_cadence_s()
    baseline = srun_python_start_s(tasks=2)
    bound = cadence + 2 * baseline
    print(f"\nsubmit-to-start: Slurm {slurm_waits} s (1 s resolution), "
          f"submission to task's first log line {[round(w, 2) for w in waits]} s; bound "
          f"{bound:.2f} s = cadence {cadence:g} s + 2 x srun python start {baseline:.2f} s")
    assert all(0 <= w <= bound for w in waits)
    assert all(w <= bound + 1 for w in slurm_waits)   # sacct's whole seconds: +1 s rounding


def scheduling_cadence_s() -> float:
    """The longest a pending job waits for a scheduling pass on this cluster: the larger of the
    main scheduler's and backfill's intervals in its slurm.conf (Slurm's defaults: 60 s, 30 s)."""
    params = {"sched_interval": 60.0, "bf_interval": 30.0}
    for line in Path(os.environ["SLURM_CONF"]).read_text().splitlines():
        if line.strip().startswith("SchedulerParameters="):
            for item in line.split("=", 1)[1].split(","):
                key, _, value = item.strip().partition("=")
                if key in params and value:
                    params[key] = float(value)
    return max(params.values())


def srun_python_start_s(tasks: int) -> float:
    """Wall time of ``tasks`` concurrent ``srun python -c 'import submitit.core._submit'`` (the
    module a submitit task starts with): scheduling, step launch and the import, the slowest."""
    cmd = ["srun", "--quiet", "-n1", "-c1", sys.executable, "-c", "import submitit.core._submit"]
    began = time.perf_counter()
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(tasks)]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    return time.perf_counter() - began


def test_ddp2_point_runs_as_two_slurm_tasks_of_one_job(background):
    out = background["ddp2"].out
    background["ddp2"].wait()
    _, parents, points = children(out)
    assert len(points) == 1 and points[0].info.status == "FINISHED"
    tags = points[0].data.tags
    assert tags["world_size"] == "2" and tags["launcher"] == "submitit"
    logs = submitit_logs(out)
    assert [os.path.basename(l).split("_")[-2] for l in logs] == ["0", "1"]   # task ids
    ranks = sorted(re.search(r"global_rank=(\d\(\d\))", open(l).read()).group(1) for l in logs)
    assert ranks == ["0(2)", "1(2)"]
    assert [r[0] for r in sacct("-j", tags["slurm_job_id"], "-o", "JobID")] == \
        [tags["slurm_job_id"]]   # one job, not two


def test_scancel_fails_the_point_without_a_hang_and_a_rerun_reruns_only_it(out, tmp_path):
    args = ["-m", "cluster=slurm", "storage=local,nfs", "storage.emulation.latency_ms=20",
            *TINY, "checkpoint.interval=2"]
    log = tmp_path / "first.log"
    proc = popen_train(args, out, log)
    deadline = time.time() + 240
    run_file = None
    while run_file is None and time.time() < deadline and proc.poll() is None:
        time.sleep(1)   # wait until the nfs point trains: its MLflow run exists
        found = glob.glob(str(out / "sweeps" / "*" / "1" / "mlflow_run_id"))
        run_file = found[0] if found else None
    assert run_file, f"nfs point never started:\n{log.read_text()[-3000:]}"
    while not glob.glob(str(out / "storage/nfs/checkpoints/*/step_*.json")):
        assert time.time() < deadline and proc.poll() is None, log.read_text()[-3000:]
        time.sleep(0.5)   # cancel after its first checkpoint: the rerun resumes from it
    job = re.search(r"#1 storage=nfs\s+job (\S+)", log.read_text()).group(1)
    cancelled_at = time.time()
    subprocess.run(["scancel", job], check=True)
    assert proc.wait(timeout=120) == 1
    reported = time.time() - cancelled_at
    text = log.read_text()
    assert "1 of 2 point(s) failed" in text and re.search(
        rf"storage=nfs: PointFailed: .*Slurm job {job} cancelled", text)
    client, parents, points = children(out)
    nfs = client.get_run(open(run_file).read().strip())
    assert nfs.info.status == "FAILED" and nfs.data.tags["status"] == "failed"
    assert "CANCELLED" in nfs.data.tags["slurm_state"] and "cancelled" in nfs.data.tags["failure"]
    assert {a.path for a in client.list_artifacts(nfs.info.run_id, "slurm")}
    assert parents[0].info.status == "FAILED"
    print(f"\nscancel reported as a failed point {reported:.1f} s after the cancel")

    rerun = train(args, out, timeout=400)
    text = rerun.stdout + rerun.stderr
    assert "2 point(s), 1 to run, 1 already succeeded" in text
    assert "submitted 1 point(s)" in text and "skip storage=local" in text
    nfs = client.get_run(nfs.info.run_id)   # resumed from its checkpoint: the same run continues
    assert nfs.info.status == "FINISHED" and nfs.data.tags["status"] == "success"


def test_eight_simultaneous_jobs_write_one_fresh_sqlite_store(background):
    out = background["writers"].out   # the store did not exist before this sweep
    background["writers"].wait()
    _, parents, points = children(out)
    assert len(points) == 8 and parents[0].info.status == "FINISHED"
    for p in points:
        assert p.info.status == "FINISHED" and p.data.tags["status"] in ("success", "aborted")
        assert "time_to_train_s" in p.data.metrics and len(p.data.params) > 50
        assert p.data.tags["slurm_state"] == "COMPLETED"
    for log in submitit_logs(out):
        err = log.replace("_log.out", "_log.err")
        assert "locked" not in open(log).read() + open(err).read()
    rows = sacct("-j", points[0].data.tags["slurm_array_job_id"], "-o", "State,Start,End")
    assert [r[0] for r in rows] == ["COMPLETED"] * 8
    assert max(r[1] for r in rows) < min(r[2] for r in rows)   # all 8 ran at the same time


@pytest.mark.parametrize("overrides, field", [
    (["cluster.partition=nope"], "cluster.partition"),
    (["cluster.nodes=2"], "cluster.nodes"),
    (["cluster.cpus_per_task=64"], "cluster.cpus_per_task"),
    (["cluster.gpus_per_node=1"], "cluster.gpus_per_node"),
    (["cluster.container.image=/img.sqsh"], "cluster.container.image"),
])
def test_requests_this_cluster_cannot_give_are_refused(overrides, field, tmp_path):
    from pinchpoint.cluster import preflight
    from pinchpoint.errors import ConfigError

    info = preflight.read_cluster()   # the real sinfo
    with pytest.raises(ConfigError) as err:
        preflight.check(compose(["cluster=slurm", *overrides], tmp_path), info)
    assert err.value.field == field


@pytest.mark.parametrize("overrides, says", [
    (["cluster.partition=nope"], "cluster.partition='nope' is not allowed: one of debug"),
    (["cluster.time_limit_min=0"], "cluster.time_limit_min=0 is not allowed"),
])
def test_bad_inputs_are_refused_before_anything_is_submitted(overrides, says, out):
    experiment = f"refused_{abs(hash(tuple(overrides))) % 10**6}"
    proc = train(["-m", "cluster=slurm", "storage=nvme,nfs", *overrides,
                  f"tracking.experiment={experiment}"], out, check=False, timeout=120)
    assert proc.returncode == 2 and says in proc.stdout + proc.stderr   # refused: one line
    assert "HYDRA_FULL_ERROR" not in proc.stderr
    assert sacct("--name", f"pinchpoint-{experiment}", "-o", "JobID") == []


def test_time_limit_requeues_and_resumes_the_same_mlflow_run(background):
    out = background["requeue"].out
    text = background["requeue"].wait()
    assert "REQUEUED" in text and re.search(r"COMPLETED after \d+ s \(\d requeue", text)
    client, parents, points = children(out, "requeue")
    assert len(points) == 1   # one MLflow run across all attempts
    run = points[0]
    assert run.info.status == "FINISHED" and run.data.tags["status"] == "success"
    m = run.data.metrics
    assert m["restarts"] >= 1 and m["slurm_requeues"] >= 1 and m["slurm_attempts"] >= 2
    assert m["wall_time_s"] >= m["time_to_train_s"] > 0
    for metric in ("train_loss", "eval_auroc"):
        steps = [h.step for h in client.get_metric_history(run.info.run_id, metric)]
        assert steps == sorted(set(steps)), f"{metric} steps repeated: {steps}"
    # requeue-to-resume: the job's requeue to the next attempt's first resumed training line.
    # ("starting run" when it was requeued before its first checkpoint: the run continues but
    # training starts over.)
    lines = open(submitit_logs(out)[0]).read().splitlines()
    requeued = [_clock(l) for l in lines if "Requeued job" in l and l.startswith("submitit")]
    trains = [_clock(l) for l in lines if re.search(r"(resuming|starting) run", l)]
    gaps = [min(t for t in trains if t > r) - r for r in requeued]
    print(f"\nrequeue: {int(m['slurm_requeues'])} requeue(s), Slurm requeue-to-start "
          f"{m['slurm_requeue_to_start_s']:.0f} s, requeue-to-resumed-training "
          f"{[round(g) for g in gaps]} s, steps redone {m['steps_redone']:.0f}, "
          f"wall {m['wall_time_s']:.0f} s, time_to_train_s {m['time_to_train_s']:.1f}")
    assert gaps and all(0 < g < 300 for g in gaps)


def _clock(line: str) -> float:
    """Seconds since midnight of a submitit ("(2026-11-28 14:58:35,555)") or pinchpoint
    ("[14:59:02]") log line."""
    found = STAMP.search(line) or re.match(r"\[(\d\d:\d\d:\d\d)\]", line)
    h, m, s = found.group(1)[-12:].split(":")
    return int(h[-2:]) * 3600 + int(m) * 60 + float(s.replace(",", "."))
