"""Checkpoint interval x storage tier, with recovery measured: the classic optimum interval.

1. The write bursts: `python train.py -m +sweep=ckpt_interval_storage` (interval x tier, each
   point uninterrupted): per point checkpoints written, bytes, seconds, MB/s per checkpoint, the
   checkpoint share of the loop, the mean training step.
2. The recovery, per tier at one interval: the same point run with ``fault=kill_at_step:K``
   (SIGKILL of the run's whole process group, as a node dying), then the same command again: it
   resumes from its newest checkpoint. Measured: seconds from the kill to training resumed (the
   first MLPerf event of the new attempt), checkpoint load seconds, steps redone, and the
   time-to-train lost against the uninterrupted point (MLPerf's clock includes the downtime).
3. Per tier and interval: what checkpointing costs a run (writes x seconds each) against the
   rework ``--failures-per-run`` crashes are expected to cost (half an interval of steps each, at
   the measured step time). Where the two cross is the interval at which checkpointing overtakes
   the expected rework: the measured optimum (Young's sqrt(2 x write seconds x time between
   failures) is printed beside it). The restart (kill to training resumed) is paid whatever the
   interval: it is in the total and in recovery.csv, not in the crossing.

    launchers/object_store_up.sh && python benchmarks/ckpt_recovery.py
Writes sweeps/results/ckpt_interval_storage/{report.csv,recovery.csv,optimum.csv,report.png}.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from pinchpoint.runner.faults import read_kill  # noqa: E402

SWEEP = "ckpt_interval_storage"
QUIET = ["tracking.system_metrics=false"]


def load() -> str:
    return "load average " + ", ".join(f"{x:.1f}" for x in os.getloadavg())


def train(args: list[str], out: Path, killed_ok: bool = False) -> None:
    # A new session: kill_at_step SIGKILLs its own process group, never this driver.
    cmd = [sys.executable, str(ROOT / "train.py"), *args, f"output_root={out}"]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env,
                          start_new_session=True)
    if proc.returncode != 0 and not (killed_ok and proc.returncode == -9):
        raise SystemExit(f"{' '.join(cmd)} -> {proc.returncode}\n{proc.stderr[-4000:]}")


def grid(out: Path, intervals: str, tiers: str, reuse: bool = False) -> list[dict]:
    if not (reuse and (out / "sweeps").exists()):
        train(["-m", f"+sweep={SWEEP}", *QUIET, f"checkpoint.interval={intervals}",
               f"storage={tiers}"], out)
    sweep = sorted((out / "sweeps").iterdir())[-1]
    rows = []
    for job in sorted((p for p in sweep.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)):
        cfg = job / "config_resolved.yaml"
        s = json.loads((job / "phase_summary.json").read_text())
        import yaml
        c = yaml.safe_load(cfg.read_text())
        writes = int(s.get("checkpoint_writes", 0))
        wsec, wbytes = s.get("checkpoint_write_seconds", 0.0), s.get("checkpoint_write_bytes", 0)
        rows.append({
            "storage": c["storage"]["name"], "interval": c["checkpoint"]["interval"],
            "steps": s["steps"], "checkpoint_writes": writes, "checkpoint_write_bytes": wbytes,
            "checkpoint_write_seconds": round(wsec, 4),
            "seconds_per_checkpoint": round(wsec / writes, 4) if writes else None,
            "mb_per_s_per_checkpoint": round(wbytes / wsec / 1e6, 2) if wsec else None,
            "checkpoint_fraction": round(s.get("checkpoint_fraction", 0.0), 4),
            "step_seconds": round(s["phase_forward_backward_s"] + s["phase_data_wait_s"]
                                  + s["phase_optimizer_s"], 4) / max(1, s["steps"]),
            "bottleneck": s.get("bottleneck"), "time_to_train_s": s["time_to_train_s"],
            "load_average_1m": round(os.getloadavg()[0], 1)})   # when the grid was read
    return rows


def first_event_after(log: Path, t: float) -> tuple[float, str]:
    for line in log.read_text().splitlines():
        if line.startswith(":::MLLOG"):
            event = json.loads(line[len(":::MLLOG"):])
            if event["time_ms"] / 1000 > t:
                return event["time_ms"] / 1000, event["key"]
    raise SystemExit(f"{log}: no event after the kill at {t}")


def recovery(out: Path, tier: str, interval: int, kill_at: int, uninterrupted: float,
             reuse: bool = False) -> dict:
    point = [f"+sweep={SWEEP}", *QUIET, f"storage={tier}", f"checkpoint.interval={interval}",
             "hydra.sweeper.params={}"]
    measured = reuse and len(list((out / "runs").glob("*"))) >= 2
    if not measured:
        train([*point, f"fault=kill_at_step:{kill_at}"], out, killed_ok=True)
    killed_dir, resumed_dir = sorted((out / "runs").iterdir())[-2:] if measured else \
        (sorted((out / "runs").iterdir())[-1], None)
    killed = read_kill(str(killed_dir))
    if killed is None:
        raise SystemExit(f"{killed_dir}: the run was not killed at step {kill_at}")
    if not measured:
        train(point, out)
    resumed = resumed_dir or sorted((out / "runs").iterdir())[-1]
    s = json.loads((resumed / "phase_summary.json").read_text())
    at, key = first_event_after(resumed / "mlperf.log", killed["killed_at"])
    return {"storage": tier, "interval": interval, "killed_at_step": kill_at,
            "seconds_kill_to_training_resumed": round(at - killed["killed_at"], 3),
            "resumed_at_event": key, "checkpoint_load_seconds":
                round(s.get("checkpoint_load_seconds", 0.0), 4),
            "checkpoint_load_bytes": s.get("checkpoint_load_bytes"),
            "steps_redone": s.get("steps_redone"), "restarts": s.get("restarts"),
            "time_to_train_s": s["time_to_train_s"],
            "time_to_train_lost_s": round(s["time_to_train_s"] - uninterrupted, 3),
            "load_average_1m": round(os.getloadavg()[0], 1)}


def optimum(rows: list[dict], rec: dict, failures_per_run: float) -> list[dict]:
    """Per interval of one tier: checkpoint cost per run vs the rework crashes are expected to
    cost (half an interval of steps each). The restart itself (kill to training resumed,
    measured) is paid whatever the interval: it is in the total, not in the crossing."""
    out = []
    for r in sorted(rows, key=lambda r: r["interval"]):
        restart = failures_per_run * rec["seconds_kill_to_training_resumed"]
        rework = failures_per_run * r["interval"] / 2 * r["step_seconds"]
        out.append({"storage": r["storage"], "interval": r["interval"],
                    "checkpoint_cost_s": r["checkpoint_write_seconds"],
                    "expected_rework_s": round(rework, 4), "restart_s": round(restart, 3),
                    "overhead_s": round(r["checkpoint_write_seconds"] + rework + restart, 4)})
    return out


def crossing(opt: list[dict]) -> str:
    for a, b in zip(opt, opt[1:]):
        if a["checkpoint_cost_s"] >= a["expected_rework_s"] and \
                b["checkpoint_cost_s"] < b["expected_rework_s"]:
            return f"between {a['interval']} and {b['interval']} steps"
    first = opt[0]
    side = "checkpointing" if first["checkpoint_cost_s"] >= first["expected_rework_s"] \
        else "rework"
    return f"none in {opt[0]['interval']}..{opt[-1]['interval']} ({side} dominates throughout)"


def young(rows: list[dict], failures_per_run: float) -> float:
    """Young's interval in steps: sqrt(2 x seconds per checkpoint x seconds between failures)."""
    r = max(rows, key=lambda r: r["interval"])
    c = r["seconds_per_checkpoint"] or 0.0
    mtbf = r["steps"] * r["step_seconds"] / failures_per_run
    return math.sqrt(2 * c * mtbf) / r["step_seconds"]


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def plot(opts: dict[str, list[dict]], failures_per_run: float, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(opts), figsize=(4.2 * len(opts), 3.6), sharey=True)
    for ax, (tier, opt) in zip(axes if len(opts) > 1 else [axes], opts.items()):
        xs = [o["interval"] for o in opt]
        ax.plot(xs, [o["checkpoint_cost_s"] for o in opt], "o-", label="checkpoint writes")
        ax.plot(xs, [o["expected_rework_s"] for o in opt], "s--", label="expected rework")
        ax.plot(xs, [o["checkpoint_cost_s"] + o["expected_rework_s"] for o in opt], ":",
                color="grey", label="sum (restart: constant, not drawn)")
        ax.set_xscale("log", base=2)
        ax.set_title(f"{tier}: optimum {crossing(opt)}", fontsize=8)
        ax.set_xlabel("checkpoint interval (steps)")
    (axes[0] if len(opts) > 1 else axes).set_ylabel("seconds per run")
    (axes[0] if len(opts) > 1 else axes).legend(fontsize=7)
    fig.suptitle(f"{SWEEP}: checkpoint cost vs expected rework per run (measured; "
                 f"{failures_per_run:g} crash per run)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--intervals", default="1,2,4,8,16")
    ap.add_argument("--tiers", default="nvme,nfs,object")
    ap.add_argument("--recovery-interval", type=int, default=8)
    ap.add_argument("--kill-at", type=int, default=20, help="step (of 24) the run is killed at")
    ap.add_argument("--failures-per-run", type=float, default=1.0)
    ap.add_argument("--results", type=Path, default=ROOT / "sweeps" / "results" / SWEEP)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--reuse", action="store_true",
                    help="read the runs already in --out instead of running them again")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = a.out or Path(tmp)
        t0 = time.time()
        print(f"grid {a.intervals} x {a.tiers} ({load()})")
        rows = grid(out / "grid", a.intervals, a.tiers, a.reuse)
        print(f"grid: {len(rows)} runs in {time.time() - t0:.0f} s ({load()})")
        recs, opts = [], {}
        for tier in a.tiers.split(","):
            mine = [r for r in rows if r["storage"] == tier]
            base = next(r for r in mine if r["interval"] == a.recovery_interval)
            rec = recovery(out / f"recovery_{tier}", tier, a.recovery_interval, a.kill_at,
                           base["time_to_train_s"], a.reuse)
            recs.append(rec)
            opts[tier] = optimum(mine, rec, a.failures_per_run)
            print(f"{tier}: kill->resumed {rec['seconds_kill_to_training_resumed']} s, "
                  f"{rec['steps_redone']} steps redone, TTT lost {rec['time_to_train_lost_s']} s;"
                  f" optimum {crossing(opts[tier])}; Young {young(mine, a.failures_per_run):.1f}"
                  f" steps ({load()})")
        a.results.mkdir(parents=True, exist_ok=True)
        write_csv(rows, a.results / "report.csv")
        write_csv(recs, a.results / "recovery.csv")
        write_csv([o for opt in opts.values() for o in opt], a.results / "optimum.csv")
        plot(opts, a.failures_per_run, a.results / "report.png")
        print(f"{time.time() - t0:.0f} s in all; wrote {a.results}")


if __name__ == "__main__":
    main()
