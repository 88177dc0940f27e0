"""The device check (issue 23 item 7), one command, prints a table and writes JSON:
    python benchmarks/gpu_check.py [--device cuda|cpu] [--out gpu_check.json] [--steps 4]

Every run goes through train.py with overrides (the normal run config), one subprocess each,
world size 1 (NCCL on CUDA, no process group on the CPU), and is judged from its
phase_summary.json and timeline.json:
  * every workload's proxy for a few steps (bf16 on CUDA; Llama compiled and not),
  * attribution events vs sync on Llama: time-to-train ratio and exposed communication,
  * NVML counters present (gpu_<i>_* in the summary), the profiler merge (profile_steps),
  * CUDA-only: the planner's peak memory vs torch.cuda.max_memory_allocated, a Llama layer's
    TFLOP/s vs the planner's compute term, MoE grouped-matmul vs padded path.
A feature whose code is not in the tree (train.compile, telemetry/gpu_counters.py,
telemetry/profiler.py) is reported "not available", found by looking, not assumed. What needs
CUDA on a CPU machine says so ("needs CUDA"); a check not written yet says "not implemented".
Budget: under 8 minutes on one H100/H200 (each run is capped by --run-timeout).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = ("dlrm_dcnv2", "llama31_8b", "llama31_405b", "llama2_70b_lora", "flux1",
             "gpt_oss_20b", "deepseek_v3_671b")
LLM = ("llama31_8b", "llama31_405b", "llama2_70b_lora", "gpt_oss_20b", "deepseek_v3_671b")


def has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def has_config(section: str, key: str) -> bool:
    from pinchpoint.config import schema
    cls = getattr(schema, section, None)
    return cls is not None and key in getattr(cls, "__dataclass_fields__", {})


class Runner:
    def __init__(self, device: str, steps: int, timeout: int, root: str):
        self.device, self.steps, self.timeout, self.root = device, steps, timeout, root
        self.n = 0

    def scale(self) -> str:
        return "proxy" if self.device == "cuda" else "smoke"

    def run(self, model: str, *extra: str) -> dict:
        """train.py for one run; its summary, timeline metadata and wall seconds."""
        self.n += 1
        out = Path(self.root) / f"run{self.n}"
        args = [f"model={model}", f"model.scale={self.scale()}", f"train.device={self.device}",
                f"train.max_steps={self.steps}", "tracking.enabled=false",
                f"hydra.run.dir={out}", *extra]
        if self.device == "cuda" and model in LLM:
            args.append(f"model.{self.scale()}.precision=bf16")
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        started = time.perf_counter()
        try:
            p = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT,
                               env=env, capture_output=True, text=True, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            return {"ok": False, "why": f"timed out after {self.timeout} s", "args": args}
        wall = time.perf_counter() - started
        summary_path = out / "phase_summary.json"
        if p.returncode != 0 or not summary_path.exists():
            tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["no output"]
            return {"ok": False, "why": f"exit {p.returncode}: {tail[0][:200]}", "args": args}
        summary = json.loads(summary_path.read_text())
        timeline = out / "timeline.json"
        other = json.loads(timeline.read_text()).get("otherData", {}) if timeline.exists() \
            else {}
        return {"ok": True, "wall_s": wall, "summary": summary, "timeline": other,
                "args": args}


def row(check: str, status: str, detail: str = "", **values) -> dict:
    return {"check": check, "status": status, "detail": detail, **values}


def workloads(r: Runner, compile_ok: bool) -> list[dict]:
    rows = []
    for model in WORKLOADS:
        res = r.run(model)
        rows.append(row(f"workload {model}", "ok" if res["ok"] else "fail",
                        f"{res['summary']['steps']} steps, "
                        f"{res['summary']['throughput_samples_per_s']:.0f} samples/s"
                        if res["ok"] else res["why"]))
    if not compile_ok:
        rows.append(row("workload llama31_8b compiled", "not available",
                        "train.compile is not in this tree"))
    else:
        res = r.run("llama31_8b", "train.compile=true")
        rows.append(row("workload llama31_8b compiled", "ok" if res["ok"] else "fail",
                        res.get("why", f"{res.get('summary', {}).get('steps')} steps")))
    return rows


def attribution(r: Runner) -> list[dict]:
    if r.device != "cuda":
        return [row("attribution events vs sync", "needs CUDA",
                    "events needs CUDA streams; sync (auto on CPU) ran in every workload row")]
    runs = {mode: r.run("llama31_8b", f"telemetry.attribution={mode}")
            for mode in ("events", "sync")}
    if not all(x["ok"] for x in runs.values()):
        return [row("attribution events vs sync", "fail",
                    "; ".join(f"{m}: {x['why']}" for m, x in runs.items() if not x["ok"]))]
    ev, sy = runs["events"]["summary"], runs["sync"]["summary"]
    ratio = sy["time_to_train_s"] / max(ev["time_to_train_s"], 1e-9)
    return [row("attribution events vs sync", "ok",
                f"time-to-train sync/events {ratio:.3f}x; exposed comm/step events "
                f"{ev.get('exposed_communication_s_per_step', float('nan')):.4f} s, sync "
                f"{sy.get('exposed_communication_s_per_step', float('nan')):.4f} s",
                ttt_ratio_sync_over_events=ratio, events=_pick(ev), sync=_pick(sy))]


def _pick(s: dict) -> dict:
    return {k: v for k, v in s.items() if k in ("time_to_train_s", "compute_s_per_step",
                                                "communication_s_per_step",
                                                "exposed_communication_s_per_step",
                                                "attribution")}


def counters_and_profiler(r: Runner) -> list[dict]:
    rows = []
    gpu = has_module("pinchpoint.telemetry.gpu_counters") and has_config("TelemetryConfig",
                                                                          "gpu_counters")
    prof = has_module("pinchpoint.telemetry.profiler") and has_config("TelemetryConfig",
                                                                      "profile_steps")
    extra = ["telemetry.profile_steps=[2,3]"] if prof else []
    res = r.run("llama31_8b", *extra)
    if not gpu:
        rows.append(row("NVML counters", "not available", "telemetry/gpu_counters.py missing"))
    elif r.device != "cuda":
        rows.append(row("NVML counters", "needs CUDA", "no GPU visible: nothing is sampled"))
    else:
        keys = sorted(k for k in res.get("summary", {}) if k.startswith("gpu_"))
        rows.append(row("NVML counters", "ok" if keys else "fail",
                        f"{len(keys)} gpu_* keys" if keys else res.get("why", "no gpu_* keys")))
    if not prof:
        rows.append(row("profiler merge", "not available", "telemetry/profiler.py missing"))
    else:
        merged = res.get("timeline", {}).get("profiler", {}) if res["ok"] else {}
        by = merged.get("by_category", {})
        good = merged.get("events", 0) > 0 and (r.device != "cuda" or by.get("kernel", 0) > 0)
        rows.append(row("profiler merge", "ok" if good else "fail",
                        f"{merged.get('events', 0)} events merged {by}, clock error "
                        f"{merged.get('clock_error_us', float('nan'))} us" if res["ok"]
                        else res["why"], profiler=merged))
    return rows


def cuda_only(device: str) -> list[dict]:
    names = ("planner peak memory vs max_memory_allocated (15 %)",
             "Llama layer TFLOP/s vs planner compute term",
             "MoE grouped-matmul vs padded path (bf16 tolerance)")
    if device != "cuda":
        return [row(n, "needs CUDA", "pending a GPU run") for n in names]
    return [row(n, "not implemented", "written for a GPU session: pending") for n in names]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    parser.add_argument("--out", default="gpu_check.json")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--run-timeout", type=int, default=120)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    import torch
    device = args.device if args.device != "auto" else \
        ("cuda" if torch.cuda.is_available() else "cpu")
    started = time.perf_counter()
    compile_ok = has_config("TrainConfig", "compile") and \
        has_module("pinchpoint.workloads.common.compile")
    with tempfile.TemporaryDirectory() as tmp:
        r = Runner(device, args.steps, args.run_timeout, tmp)
        rows = [*workloads(r, compile_ok), *attribution(r), *counters_and_profiler(r),
                *cuda_only(device)]
    result = {"device": device, "gpu": torch.cuda.get_device_name() if device == "cuda"
              else None, "torch": torch.__version__, "seconds": time.perf_counter() - started,
              "rows": rows}
    width = max(len(x["check"]) for x in rows)
    print(f"== gpu_check on {device} ({result['gpu'] or 'no GPU'}), torch {torch.__version__},"
          f" {result['seconds']:.0f} s ==")
    for x in rows:
        print(f"  {x['check']:<{width}}  {x['status']:<14} {x['detail']}")
    Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    print(f"JSON: {args.out}" + ("" if device == "cuda" else "   (the GPU run is pending)"))
    return result


if __name__ == "__main__":
    main()
