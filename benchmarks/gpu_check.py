"""The device check (issue 23 item 7), one command, prints a table and writes JSON:
    python benchmarks/gpu_check.py [--device cuda|cpu] [--out gpu_check.json] [--steps 4]

Every run goes through train.py with overrides (the normal run config), one subprocess each,
world size 1 (NCCL on CUDA, no process group on the CPU), and is judged from its
phase_summary.json and timeline.json:
  * every workload's proxy for a few steps (bf16 on CUDA; Llama compiled and not),
  * attribution events vs sync on Llama: time-to-train ratio and exposed communication,
  * NVML counters present (gpu_<i>_* in the summary), the profiler merge (profile_steps),
The three model checks run outside train.py, each in a fresh process on CUDA:
  * memory: a mid-size Llama layer stack (MEMORY_CASE: Llama 3.1 8B's layer and vocabulary,
    4 layers, seq 4096, bf16 autocast) built and stepped 3 times by the Llama workload itself;
    torch.cuda.max_memory_allocated from just before the build against the planner's
    memory_per_device for the same config: within 15 % (benchmarks/llama_memory_model.py is
    the CPU/fp32 twin, with RSS);
  * TFLOP/s: 2 of Llama 3.1 8B's blocks forward + backward at seq 4096 (the runner's bf16:
    autocast over fp32 weights), CUDA events, median of 10; achieved TFLOP/s from the
    planner's FLOP count (plan/llm.py layer_flops) against the preset of this GPU
    (gpu_preset: the device name -> conf/gpu): fraction of peak reached vs the planner's
    assumed fraction, measured/predicted rate and time; informational, "fail" only above peak;
  * MoE: GPT-OSS 20B's experts, the same fp32 weights and rows through GroupedExperts'
    _grouped (torch._grouped_mm) and _padded (bmm) paths under bf16 autocast: outputs vs each
    other and vs an fp32 per-expert loop, gradients vs each other (relative error within
    2e-2), and forward + backward time of each.
On a CPU the memory and timing parts say "needs CUDA"; what runs there runs: the FLOP count of
the 8B blocks on the meta device against the planner's, and the MoE paths' fp32 forward on a
tiny shape against the loop ("ok, cpu part"). The expectations and verdicts are plain
functions, tested in tests/test_gpu_check.py.
A feature whose code is not in the tree (train.compile, telemetry/gpu_counters.py,
telemetry/profiler.py) is reported "not available", found by looking, not assumed. What needs
CUDA on a CPU machine says so ("needs CUDA").
Budget: under 8 minutes on one H100/H200 (each run is capped by --run-timeout, each model
check by --check-timeout).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

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


# --- the three model checks: what they expect and how they judge (plain functions, tested on
# the CPU in tests/test_gpu_check.py), then what they measure (CUDA, one subprocess each) ------
MEMORY_TOLERANCE = 0.15     # issue 23 item 7: the planner's peak within 15 % of the measured one
MOE_TOLERANCE = 2e-2        # relative (Frobenius) error allowed between bf16 results
# A mid-size Llama layer stack as the runner builds it: Llama 3.1 8B's layer (dim 4096, GQA 32:8,
# SwiGLU 14336) and vocabulary, 4 layers, one sequence of 4096, bf16 autocast, AdamW. About 1.9 B
# parameters: the planner gives ~40 GiB, well inside an H100's 80 GB.
MEMORY_CASE = ["model=llama31_8b", "model.scale=proxy", "model.proxy.n_layers=4",
               "model.proxy.dim=4096", "model.proxy.n_heads=32", "model.proxy.n_kv_heads=8",
               "model.proxy.ffn_dim=14336", "model.proxy.vocab_size=128256",
               "model.proxy.seq_len=4096", "model.proxy.micro_batch_size=1",
               "model.proxy.global_batch_size=1", "model.proxy.precision=bf16",
               "tracking.enabled=false"]
MEMORY_STEPS = 3
# The TFLOP/s check times Llama 3.1 8B's blocks (model.full), BLOCKS of them, on one sequence.
FLOPS_BLOCKS, FLOPS_SEQ, FLOPS_MICRO_BATCH = 2, 4096, 1
TIMING_WARMUP, TIMING_ITERS = 3, 10
# The MoE check runs GPT-OSS 20B's experts (model.full) on MOE_TOKENS tokens.
MOE_TOKENS = 4096


def tests_on_path() -> None:
    """tests/ holds a helper reused here: harness.make_workload."""
    if str(ROOT / "tests") not in sys.path:
        sys.path.insert(0, str(ROOT / "tests"))


def compose_config(overrides: list[str], root: str):
    """The run config train.py would compose (sweepers/plan_grid.py's compose, one copy)."""
    from pinchpoint.sweepers.plan_grid import compose
    return compose(overrides, root, ROOT / "conf")


def memory_config(device: str, root: str):
    return compose_config([*MEMORY_CASE, f"train.device={device}"], root)


def planned_memory(cfg) -> dict:
    """The Llama planner's worst stage for the run config, at the config's precision."""
    from omegaconf import OmegaConf

    from pinchpoint.workloads.llama31 import plan
    lay = plan.layout_from(cfg)
    worst = plan.memory_per_device(OmegaConf.to_object(cfg.model[cfg.model.scale]),
                                   lay)["worst_stage"]
    return {"precision": lay.precision, **{k: v for k, v in worst.items()
                                           if k.endswith("_bytes")}}


def memory_verdict(measured_bytes: float, planned_bytes: float,
                   tolerance: float = MEMORY_TOLERANCE) -> dict:
    """error = planned / measured - 1 (negative: the planner leaves something out)."""
    error = planned_bytes / measured_bytes - 1
    return {"status": "ok" if abs(error) <= tolerance else "fail", "error": error,
            "measured_bytes": measured_bytes, "planned_bytes": planned_bytes,
            "tolerance": tolerance}


def gpu_preset(device_name: str) -> Optional[str]:
    """The conf/gpu preset for ``torch.cuda.get_device_name()`` (plan/hardware.py's mapping,
    the one the published-results benchmark uses for MLPerf's accelerator names)."""
    from pinchpoint.plan.hardware import preset_for_device
    return preset_for_device(device_name)


def flops_case(device: str = "cpu"):
    """(blocks, rope, LlamaArgs) of Llama 3.1 8B's layer as the workload builds it
    (workloads/llama31: llama_args of the model.full config, the Llama model's blocks and
    rotary table), FLOPS_BLOCKS blocks, on ``device`` (meta: shapes only)."""
    from dataclasses import replace

    import torch

    from pinchpoint.workloads.llama31.model import Llama
    from pinchpoint.workloads.llama31.workload import llama_args
    with tempfile.TemporaryDirectory() as tmp:
        full = compose_config(["model=llama31_8b"], tmp).model.full
    args = replace(llama_args(full), n_layers=FLOPS_BLOCKS, vocab_size=256)
    with torch.device("meta" if device == "meta" else "cpu"):
        model = Llama(args)
    if device != "meta":
        model = model.to(device)
    return model.layers, model.rope, args


def planned_block(args, blocks: int, seq_len: int, micro_batch: int,
                  preset: Optional[str]) -> dict:
    """The planner's FLOPs (plan/llm.py layer_flops) and, with a preset, its seconds
    (layer_seconds: compute and memory terms) for ``blocks`` layers forward + backward in bf16."""
    from pinchpoint.plan.compute import achieved_fraction
    from pinchpoint.plan.hardware import preset as load_preset
    from pinchpoint.plan.llm import DecoderShape, Layout, layer_flops, layer_seconds
    shape = DecoderShape.of(args)
    lay = Layout(micro_batch=micro_batch, global_batch=micro_batch, seq_len=seq_len,
                 precision="bf16")
    per = layer_flops(shape, lay)
    out = {"blocks": blocks, "gemm_flops": blocks * per["gemm"],
           "attention_flops": blocks * per["attention"],
           "flops": blocks * (per["gemm"] + per["attention"]), "preset": preset}
    if preset:
        system = load_preset(preset)
        t = layer_seconds(shape, lay, system)
        out.update(compute_s=blocks * t["compute"], memory_s=blocks * t["memory"],
                   peak_tflops=system.peak_flops("bf16") / 1e12,
                   achieved_fraction=achieved_fraction(system, "bf16"))
    return out


def counted_block_flops(blocks, rope, micro_batch: int, seq_len: int) -> dict:
    """FLOPs torch counts (FlopCounterMode) in forward + backward of the blocks, by op. On the
    meta device scaled_dot_product_attention decomposes to bmm (non-causal: twice the
    planner's causal count)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    device = rope.device
    dim = next(iter(blocks.values())).attention_norm.weight.shape[0]
    x = torch.zeros(micro_batch, seq_len, dim, device=device, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        h = x
        for block in blocks.values():
            h = block(h, rope)
        h.sum().backward()
    return {str(k).removeprefix("aten."): int(v)
            for k, v in counter.get_flop_counts()["Global"].items()}


def flops_verdict(measured_s: float, plan: dict) -> dict:
    """Achieved TFLOP/s from the planner's FLOP count; against the preset (if any): the fraction
    of peak reached, the planner's assumed fraction, and measured/predicted for the compute term
    (the rate) and for compute + memory (the time). Informational ("ok"), except what cannot
    be: a rate above the preset's peak means the count or the timing is wrong ("fail")."""
    achieved = plan["flops"] / measured_s / 1e12
    out = {"status": "ok", "measured_s": measured_s, "achieved_tflops": achieved,
           "preset": plan.get("preset")}
    if plan.get("preset"):
        predicted = plan["flops"] / plan["compute_s"] / 1e12
        out.update(peak_tflops=plan["peak_tflops"],
                   fraction_of_peak=achieved / plan["peak_tflops"],
                   planner_fraction=plan["achieved_fraction"], predicted_tflops=predicted,
                   rate_ratio=achieved / predicted,
                   time_ratio=measured_s / (plan["compute_s"] + plan["memory_s"]))
        if achieved > plan["peak_tflops"]:
            out["status"] = "fail"
    return out


def flops_detail(v: dict) -> str:
    text = f"{v['achieved_tflops']:.0f} TFLOP/s achieved (bf16, {v['measured_s'] * 1e3:.1f} ms)"
    if not v.get("preset"):
        return text + "; no planner preset for this GPU"
    return (f"{text}; {v['preset']} peak {v['peak_tflops']:.0f} -> {v['fraction_of_peak']:.1%}"
            f" reached vs planner's {v['planner_fraction']:.1%}: measured/predicted rate "
            f"{v['rate_ratio']:.2f}, time/(compute+memory terms) {v['time_ratio']:.2f}")


def moe_args(tiny: bool = False):
    """GPT-OSS 20B's expert shape (model.full: SwiGLU clamped, biases), or a tiny one."""
    from pinchpoint.workloads.common.moe import MoEArgs
    if tiny:
        return MoEArgs(dim=64, expert_dim=48, num_experts=8, top_k=2, expert_biases=True,
                       activation="gpt_oss")
    with tempfile.TemporaryDirectory() as tmp:
        f = compose_config(["model=gpt_oss_20b"], tmp).model.full
    return MoEArgs(dim=f.dim, expert_dim=f.expert_dim, num_experts=f.num_experts,
                   top_k=f.top_k, expert_biases=True, activation="gpt_oss")


def moe_case(a, tokens: int, device: str, seed: int = 0):
    """GroupedExperts (fp32 parameters, biases non-zero), rows (tokens x top_k, dim) already
    sorted by expert and counts per expert: uneven (log-normal shares) with the last expert
    idle, so padding and an empty group are both exercised."""
    import torch

    from pinchpoint.workloads.common.moe import GroupedExperts
    g = torch.Generator().manual_seed(seed)
    experts = GroupedExperts(a)
    with torch.no_grad():
        for p in experts.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    share = torch.exp(0.5 * torch.randn(a.num_experts, generator=g))
    share[-1] = 0
    pairs = tokens * a.top_k
    counts = torch.bincount(torch.multinomial(share, pairs, replacement=True, generator=g),
                            minlength=a.num_experts)
    rows = torch.randn(pairs, a.dim, generator=g)
    return experts.to(device), rows.to(device), counts.to(device)


def expert_loop(experts, rows, counts):
    """The reference: each expert's rows through its own weights, one expert at a time, fp32."""
    import torch

    from pinchpoint.workloads.common.moe import swiglu
    out, start = [], 0
    for e, n in enumerate(counts.tolist()):
        r = rows[start:start + n].float()
        h = r @ experts.gate_up_proj[e].float()
        if experts.gate_up_bias is not None:
            h = h + experts.gate_up_bias[e].float()
        y = swiglu(h, experts.activation) @ experts.down_proj[e].float()
        if experts.down_bias is not None:
            y = y + experts.down_bias[e].float()
        out.append(y)
        start += n
    return torch.cat(out)


def compare(out, ref) -> dict:
    """max |out - ref|, max |ref| and the relative Frobenius error ||out - ref|| / ||ref||."""
    diff = (out.float() - ref.float())
    return {"max_abs": float(diff.abs().max()), "max_ref": float(ref.float().abs().max()),
            "rel": float(diff.norm() / ref.float().norm().clamp(min=1e-30))}


def moe_verdict(errors: dict[str, dict], tolerance: float) -> dict:
    """ok when every comparison's relative error is within tolerance; the worst one named."""
    worst = max(errors, key=lambda k: errors[k]["rel"])
    return {"status": "ok" if errors[worst]["rel"] <= tolerance else "fail",
            "worst": worst, "worst_rel": errors[worst]["rel"], "tolerance": tolerance,
            "errors": errors}


def moe_cpu() -> dict:
    """What runs on a CPU: forward of both paths in fp32 on a tiny shape against the per-expert
    loop (torch._grouped_mm has a CPU forward, no backward: CPU training takes the padded path)."""
    import torch
    a = moe_args(tiny=True)
    experts, rows, counts = moe_case(a, 64, "cpu")
    with torch.no_grad():
        ref = expert_loop(experts, rows, counts)
        errors = {"padded vs loop": compare(experts._padded(rows, counts), ref)}
        try:
            grouped = experts._grouped(rows, counts)
        except (RuntimeError, AttributeError) as e:   # no CPU kernel in this torch
            return {**moe_verdict(errors, 1e-5), "grouped": f"no CPU forward: {e}"[:200]}
        errors["grouped vs loop"] = compare(grouped, ref)
        errors["grouped vs padded"] = compare(grouped, experts._padded(rows, counts))
    return moe_verdict(errors, 1e-5)


def cuda_median_s(fn, warmup: int = TIMING_WARMUP, iters: int = TIMING_ITERS) -> float:
    """Median seconds of fn() over iters runs after warmup, timed with CUDA events."""
    import torch
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def measure_memory(device: str = "cuda") -> dict:
    """MEMORY_CASE built and stepped by the Llama workload itself on CUDA (the runner's build,
    autocast, loss, clipping and AdamW), peak of torch.cuda.max_memory_allocated from just
    before the build, against the planner's worst stage for the same config."""
    import torch

    tests_on_path()
    from harness import make_workload
    from pinchpoint.parallel.context import RankContext
    from pinchpoint.runner.validation import validate
    with tempfile.TemporaryDirectory() as tmp:
        cfg = memory_config(device, tmp)
        validate(cfg)
        w = make_workload(cfg, RankContext(device=torch.device(device)))
        a = w.arch
        g = torch.Generator().manual_seed(0)
        tokens = torch.randint(a.vocab_size, (a.global_batch_size, a.seq_len + 1),
                               generator=g).to(device)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        started = time.perf_counter()
        w.build()
        phases = []
        for _ in range(MEMORY_STEPS):
            w.forward_backward(tokens)
            torch.cuda.synchronize()
            fb = torch.cuda.max_memory_allocated() - base
            w.optimizer_step()
            torch.cuda.synchronize()
            phases.append({"forward_backward_peak_bytes": fb,
                           "optimizer_step_peak_bytes": torch.cuda.max_memory_allocated() - base})
        peak = torch.cuda.max_memory_allocated() - base
        planned = planned_memory(cfg)
    return {**memory_verdict(peak, planned["total_bytes"]), "planned": planned,
            "phases": phases, "parameters": sum(p.numel() for p in w.params),
            "seconds": time.perf_counter() - started}


def measure_flops(device: str = "cuda") -> dict:
    """FLOPS_BLOCKS of Llama 3.1 8B's blocks forward + backward under bf16 autocast with fp32
    weights and an fp32 residual stream (the runner's bf16), CUDA events, median."""
    import torch
    blocks, rope, args = flops_case(device)
    name = torch.cuda.get_device_name()
    plan = planned_block(args, FLOPS_BLOCKS, FLOPS_SEQ, FLOPS_MICRO_BATCH, gpu_preset(name))
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(FLOPS_MICRO_BATCH, FLOPS_SEQ, args.dim, device=device, generator=g,
                    requires_grad=True)
    dy = torch.randn(x.shape, device=device, generator=g)
    params = list(blocks.parameters())

    def step():
        for p in params:
            p.grad = None
        x.grad = None
        with torch.autocast("cuda", dtype=torch.bfloat16):
            h = x
            for block in blocks.values():
                h = block(h, rope)
            h.backward(dy)

    v = flops_verdict(cuda_median_s(step), plan)
    return {**v, "detail": flops_detail(v), "gpu": name, "plan": plan,
            "shape": {"dim": args.dim, "n_heads": args.n_heads, "n_kv_heads": args.n_kv_heads,
                      "ffn_dim": args.ffn_dim, "blocks": FLOPS_BLOCKS, "seq_len": FLOPS_SEQ,
                      "micro_batch": FLOPS_MICRO_BATCH}}


def measure_moe(device: str = "cuda") -> dict:
    """GPT-OSS 20B's experts on CUDA under bf16 autocast, the same fp32 weights and rows
    through GroupedExperts._grouped (torch._grouped_mm) and ._padded (scatter + bmm):
    outputs against each other and against the fp32 per-expert loop, gradients (rows,
    weights, biases) against each other, and forward + backward time of each path."""
    import torch

    from pinchpoint.workloads.common.moe import _grouped_mm_usable
    a = moe_args()
    experts, rows, counts = moe_case(a, MOE_TOKENS, device)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        usable = _grouped_mm_usable(rows, a.expert_dim)
    if not usable:
        return {"status": "not available", "detail": "torch._grouped_mm not usable here "
                "(needs Hopper or later and widths divisible by 8): only the padded path runs"}
    dy = torch.randn(rows.shape, device=device, generator=torch.Generator(
        device=device).manual_seed(1))
    paths = {"grouped": lambda r: experts._grouped(r.to(torch.bfloat16), counts),
             "padded": lambda r: experts._padded(r, counts)}
    outs, grads = {}, {}
    for name, fn in paths.items():
        r = rows.clone().requires_grad_()
        experts.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y = fn(r)
            y.float().backward(dy)
        outs[name] = y.detach().float()
        grads[name] = {"rows": r.grad, **{n: p.grad for n, p in experts.named_parameters()}}
    with torch.no_grad():
        ref = expert_loop(experts, rows, counts)
    errors = {"grouped vs loop (fp32)": compare(outs["grouped"], ref),
              "padded vs loop (fp32)": compare(outs["padded"], ref),
              "grouped vs padded": compare(outs["grouped"], outs["padded"]),
              **{f"grad {k}: grouped vs padded": compare(grads["grouped"][k], grads["padded"][k])
                 for k in grads["grouped"]}}
    v = moe_verdict(errors, MOE_TOLERANCE)
    times = {}
    r = rows.clone().requires_grad_()
    for name, fn in paths.items():
        def step(fn=fn):
            experts.zero_grad(set_to_none=True)
            r.grad = None
            with torch.autocast("cuda", dtype=torch.bfloat16):
                fn(r).float().backward(dy)
        times[name] = cuda_median_s(step)
    v.update(times_s=times, shape={"dim": a.dim, "expert_dim": a.expert_dim,
                                   "num_experts": a.num_experts, "rows": len(rows),
                                   "counts": counts.tolist()})
    v["detail"] = (f"worst {v['worst']} rel {v['worst_rel']:.2e} (tol {MOE_TOLERANCE:g}); "
                   f"fwd+bwd grouped {times['grouped'] * 1e3:.2f} ms, padded "
                   f"{times['padded'] * 1e3:.2f} ms ({times['padded'] / times['grouped']:.2f}x)")
    return v


CHILDREN = {"memory": measure_memory, "flops": measure_flops, "moe": measure_moe}
NAMES = {"memory": "planner peak memory vs max_memory_allocated (15 %)",
         "flops": "Llama layer TFLOP/s vs planner compute term",
         "moe": "MoE grouped-matmul vs padded path (bf16 tolerance)"}


def child(name: str, timeout: int) -> dict:
    """One CUDA check in a fresh process (its own allocator peak; a crash or OOM stays there)."""
    try:
        p = subprocess.run([sys.executable, __file__, "--child", name], cwd=ROOT,
                           capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "fail", "detail": f"timed out after {timeout} s"}
    lines = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"status": "fail", "detail": f"exit {p.returncode}: {tail[0][:200]}"}
    return json.loads(lines[-1][len("RESULT "):])


def memory_detail(v: dict) -> str:
    where = ""
    if v.get("phases"):
        fb = max(p["forward_backward_peak_bytes"] for p in v["phases"])
        where = ", peak in the optimizer step" if v["measured_bytes"] > fb else \
            ", peak in forward + backward"
    return (f"measured {v['measured_bytes'] / 2**30:.2f} GiB{where}; planner "
            f"{v['planned_bytes'] / 2**30:.2f} GiB ({v['planned']['precision']}): "
            f"error {v['error']:+.1%} (tol {v['tolerance']:.0%})")


def cuda_only(device: str, timeout: int = 300) -> list[dict]:
    if device == "cuda":
        rows = []
        for key in ("memory", "flops", "moe"):
            v = child(key, timeout)
            detail = v.pop("detail", None) or (memory_detail(v) if key == "memory" and
                                               "error" in v else "")
            rows.append(row(NAMES[key], v.pop("status"), detail, **v))
        return rows
    # CPU: what can be checked without a GPU, said as such.
    blocks, rope, args = flops_case("meta")
    counted = counted_block_flops(blocks, rope, FLOPS_MICRO_BATCH, FLOPS_SEQ)
    plan = planned_block(args, FLOPS_BLOCKS, FLOPS_SEQ, FLOPS_MICRO_BATCH, None)
    same = counted.get("mm") == plan["gemm_flops"] and \
        counted.get("bmm") == 2 * plan["attention_flops"]
    moe = moe_cpu()
    return [row(NAMES["memory"], "needs CUDA", "torch.cuda.max_memory_allocated: pending a GPU "
                "run"),
            row(NAMES["flops"], "needs CUDA",
                f"timing pending a GPU run; FLOP count {'matches' if same else 'DIFFERS from'} "
                f"the planner's ({plan['flops'] / 1e12:.1f} TFLOP for {FLOPS_BLOCKS} 8B blocks,"
                f" seq {FLOPS_SEQ}: counted matmuls = planner, attention = 2x causal)",
                counted_flops=counted, plan=plan, flop_count_matches=same),
            row(NAMES["moe"], "ok, cpu part" if moe["status"] == "ok" else "fail",
                f"fp32 forward, tiny shape: worst {moe['worst']} rel {moe['worst_rel']:.1e}; "
                "bf16, backward and timing pending a GPU run" +
                (f" ({moe['grouped']})" if "grouped" in moe else ""),
                **{k: v for k, v in moe.items() if k != "status"})]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    parser.add_argument("--out", default="gpu_check.json")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--run-timeout", type=int, default=120)
    parser.add_argument("--check-timeout", type=int, default=300,
                        help="seconds for each CUDA model check (memory, TFLOP/s, MoE)")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    if args.child:   # one CUDA model check, in the process cuda_only started for it
        print("RESULT", json.dumps(CHILDREN[args.child](), default=str))
        return {}
    import torch
    device = args.device if args.device != "auto" else \
        ("cuda" if torch.cuda.is_available() else "cpu")
    started = time.perf_counter()
    compile_ok = has_config("TrainConfig", "compile") and \
        has_module("pinchpoint.workloads.common.compile")
    with tempfile.TemporaryDirectory() as tmp:
        r = Runner(device, args.steps, args.run_timeout, tmp)
        rows = [*workloads(r, compile_ok), *attribution(r), *counters_and_profiler(r),
                *cuda_only(device, args.check_timeout)]
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
