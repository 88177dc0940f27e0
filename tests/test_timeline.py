"""One timeline per run: run events, collectives by kind, system counters sampled by the run, and
a Slurm job's life from accounting (one track per attempt), all on one clock; a requeued run's
trace keeps every attempt."""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from pinchpoint.cluster import accounting
from pinchpoint.cluster.accounting import draw_slurm_job
from pinchpoint.telemetry.phases import PhaseTimer
from pinchpoint.telemetry.system_sampler import SystemSampler
from pinchpoint.telemetry.timeline import SLURM_PID, Timeline


def _load(path) -> list[dict]:
    return json.loads(path.read_text())["traceEvents"]


def _thread_names(events: list[dict], pid: int) -> dict[int, str]:
    return {e["tid"]: e["args"]["name"] for e in events
            if e.get("ph") == "M" and e["name"] == "thread_name" and e["pid"] == pid}


def test_phases_and_collectives_by_kind_on_their_tracks(tmp_path):
    tl = Timeline(rank=0)
    phases = PhaseTimer(tl)
    phases.begin()
    with phases.carve("communication", {"kind": "all_to_all_single", "bytes": 64}):
        time.sleep(0.002)
    with phases.carve("communication", {"kind": "all_reduce", "bytes": 8}):
        pass
    phases.mark("forward_backward")
    phases.end_step(1)
    events = _load(Path(tl.write(str(tmp_path / "t.json"))))
    names = _thread_names(events, 0)
    by_name = {e["name"]: e for e in events if e.get("ph") == "X"}
    assert names[by_name["all_to_all_single"]["tid"]] == "collective all_to_all_single"
    assert names[by_name["all_reduce"]["tid"]] == "collective all_reduce"
    assert by_name["all_to_all_single"]["dur"] >= 2000
    assert names[by_name["forward_backward"]["tid"]] == "phase"
    assert names[by_name["step 1"]["tid"]] == "step"


def test_system_counters_measure_what_the_run_did(tmp_path):
    tl = Timeline()
    payload = os.urandom(8 * 1024 * 1024)
    with SystemSampler(tl, interval_s=0.1) as sampler:
        with open(tmp_path / "blob", "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        _loopback_send(payload)
        time.sleep(0.3)
    s = sampler.summary()
    assert s["system_samples"] >= 2
    assert s["system_net_sent_bytes"] >= len(payload)   # loopback counts, as S3 on loopback does
    if "process_disk_write_bytes" in s:                  # /proc/<pid>/io readable here
        assert s["process_disk_write_bytes"] >= len(payload)
    counters = {e["name"] for e in tl.events if e["ph"] == "C"}
    assert {"cpu %", "memory MB", "network MB/s"} <= counters
    first = min(e["ts"] for e in tl.events if e["ph"] == "C")
    assert 0 <= first < 10e6    # stamped on the timeline's own clock, microseconds from its origin


def _vm_rss(pid: int) -> int:
    """A process's resident set as the kernel reports it (/proc/<pid>/status VmRSS), bytes."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def test_children_started_after_the_sampler_are_found_within_a_tree_refresh(tmp_path):
    """The process tree is found again every TREE_REFRESH_SAMPLES samples (not every sample:
    scanning /proc was most of a sample's cost): a loader worker or rank started later counts.
    No deadline: the child says when its memory is resident, the test then counts sampler ticks
    (a refresh is due within TREE_REFRESH_SAMPLES of them), and the sampled RSS is checked
    against what the kernel says the child and this process hold."""
    import subprocess
    import sys

    from pinchpoint.telemetry.system_sampler import TREE_REFRESH_SAMPLES
    child_code = ("import sys; b = bytearray(300 << 20); b[::4096] = b'x' * len(b[::4096]); "
                  "print('ready', flush=True); sys.stdin.read()")   # holds it until stdin closes
    with SystemSampler(None, interval_s=0.02) as sampler:
        child = subprocess.Popen([sys.executable, "-c", child_code], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline() == "ready\n"     # every page touched
            own, child_rss = sampler.process.memory_info().rss, _vm_rss(child.pid)
            # +1: a sample already under way may have taken the tree before the child existed
            target = sampler.samples + TREE_REFRESH_SAMPLES + 1
            while sampler.samples < target:
                assert sampler._thread is not None and sampler._thread.is_alive(), \
                    "the sampler stopped"
                time.sleep(sampler.interval_s)
                own = min(own, sampler.process.memory_info().rss)   # read between the ticks
            child_rss = min(child_rss, _vm_rss(child.pid))
        finally:
            child.stdin.close()
            child.wait()
    # The tree's sampled RSS holds the child's whole resident set on top of this process's, both
    # read from the kernel here (the smallest reading of each). Less 1 MiB: this process's heap
    # moves by a few pages between its reads and the sampler's (12-32 KiB seen), far below the
    # child's 300 MiB that the check is about.
    print(f"\nsampled peak {sampler.rss_peak / 2**20:.2f} MiB, this process "
          f"{own / 2**20:.2f} MiB + child {child_rss / 2**20:.2f} MiB "
          f"({(sampler.rss_peak - own - child_rss) / 1024:+.0f} KiB)")
    assert child_rss >= 300 << 20
    assert sampler.rss_peak >= own + child_rss - (1 << 20)


def _loopback_send(data: bytes) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    received = []

    def serve():
        conn, _ = server.accept()
        with conn:
            while chunk := conn.recv(1 << 20):
                received.append(len(chunk))

    t = threading.Thread(target=serve)
    t.start()
    with socket.create_connection(server.getsockname()) as c:
        c.sendall(data)
    t.join(10)
    server.close()
    assert sum(received) == len(data)


SACCT = """\
41_0|REQUEUED|{s0}|{t0}|{e0}|node1
41_0|REQUEUED|{s1}|{t1}|{e1}|node1
41_0|COMPLETED|{s2}|{t2}|{e2}|node1
"""


def _sacct_text(base: float) -> str:
    from datetime import datetime

    def iso(offset: float) -> str:
        return datetime.fromtimestamp(base + offset).isoformat(timespec="seconds")
    marks = dict(s0=0, t0=2, e0=10, s1=0, t1=14, e1=20, s2=0, t2=25, e2=40)
    return SACCT.format(**{k: iso(v) for k, v in marks.items()})


def test_slurm_job_life_from_accounting_one_track_per_attempt(tmp_path, monkeypatch):
    base = float(int(time.time()) - 60)
    monkeypatch.setattr(accounting, "slurm_output", lambda cmd: _sacct_text(base))
    tl = Timeline()
    env = {"SLURM_ARRAY_JOB_ID": "41", "SLURM_ARRAY_TASK_ID": "0", "SLURM_JOB_ID": "42"}
    assert draw_slurm_job(tl, env)
    events = _load(Path(tl.write(str(tmp_path / "t.json"))))
    job = [e for e in events if e.get("pid") == SLURM_PID and e["ph"] != "M"]
    tracks = _thread_names(events, SLURM_PID)
    assert sorted(tracks.values()) == ["attempt 0 (REQUEUED) on node1",
                                       "attempt 1 (REQUEUED) on node1",
                                       "attempt 2 (COMPLETED) on node1"]
    instants = {(tracks[e["tid"]].split(" (")[0], e["name"]) for e in job if e["ph"] == "i"}
    assert {("attempt 0", "requeued"), ("attempt 1", "requeued"), ("attempt 2", "ended"),
            ("attempt 0", "submitted"), ("attempt 2", "started")} <= instants
    runs = sorted((e for e in job if e["ph"] == "X" and e["name"].startswith("attempt")),
                  key=lambda e: e["ts"])
    assert [round(e["dur"] / 1e6) for e in runs] == [8, 6, 15]
    # one clock: the first attempt started 58 s before the timeline's origin (sacct has 1 s ticks)
    assert abs(runs[0]["ts"] / 1e6 - (base + 2 - tl.origin_unix)) < 1.5


def test_no_slurm_no_job_track(tmp_path):
    tl = Timeline()
    assert not draw_slurm_job(tl, env={})
    events = _load(Path(tl.write(str(tmp_path / "t.json"))))
    assert all(e.get("pid") != SLURM_PID for e in events)


def test_a_requeued_run_keeps_every_attempt_on_one_clock(tmp_path):
    path = str(tmp_path / "timeline.json")
    first = Timeline(rank=0, attempt=0)
    t0 = time.perf_counter()
    first.span("step 1", "step", t0, t0 + 0.01)
    first.write(path)
    wall_of_step1 = first.origin_unix + (t0 - first.origin)
    time.sleep(0.05)
    second = Timeline(rank=0, attempt=1)
    second.instant("run_start (start)", "mlperf")
    second.write(path)
    events = json.loads(open(path).read())["traceEvents"]
    processes = {e["pid"]: e["args"]["name"] for e in events if e["name"] == "process_name"}
    assert processes == {0: "attempt 0 rank 0", 1000: "attempt 1 rank 0"}
    step = next(e for e in events if e["name"] == "step 1")
    # attempt 0's step sits where it happened on attempt 1's clock: before its origin
    assert abs(step["ts"] / 1e6 - (wall_of_step1 - second.origin_unix)) < 1e-3
    assert step["ts"] < 0
    # a third attempt still carries the first one
    Timeline(rank=0, attempt=2).write(path)
    pids = {e["pid"] for e in json.loads(open(path).read())["traceEvents"]}
    assert {0, 1000, 2000} <= pids


JOB = """#!/bin/bash
# First attempt: requeue itself (as a preemption would); second: draw its life from sacct.
if [ "${{SLURM_RESTART_COUNT:-0}}" = 0 ]; then scontrol requeue "$SLURM_JOB_ID"; sleep 120; fi
exec {python} -c "from pinchpoint.cluster.accounting import draw_slurm_job
from pinchpoint.telemetry.timeline import Timeline
t = Timeline(); assert draw_slurm_job(t); t.write('{trace}')"
"""


@pytest.mark.slurm
def test_a_requeued_slurm_job_draws_each_attempt_from_accounting(slurm_cluster, tmp_path):
    import subprocess
    import sys

    script = tmp_path / "job.sh"
    trace = tmp_path / "timeline.json"
    script.write_text(JOB.format(python=sys.executable, trace=trace))
    job = subprocess.run(["sbatch", "--parsable", "--requeue", "-o", str(tmp_path / "%j.log"),
                          str(script)], capture_output=True, text=True, check=True).stdout.strip()
    deadline = time.time() + 180
    while subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout.strip():
        assert time.time() < deadline, f"job {job} still queued or running after 180 s"
        time.sleep(1)
    assert trace.exists(), (tmp_path / f"{job}.log").read_text()
    events = _load(trace)
    tracks = sorted(_thread_names(events, SLURM_PID).values())
    assert tracks[0].startswith("attempt 0 (REQUEUED) on ") and tracks[1].startswith("attempt 1 (")
    names = {e["name"] for e in events if e.get("pid") == SLURM_PID}
    assert {"submitted", "started", "requeued", "queued"} <= names
