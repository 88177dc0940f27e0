"""Pre-flight plan of a Llama 3.1 run (8B, 405B) from its config: parameters, memory per
device, step time by term, time-to-train. The arithmetic is in plan/llm.py (any dense decoder);
this module reads the run config into its Layout and checks that a run fits."""
from __future__ import annotations

from pinchpoint.errors import ConfigError
from pinchpoint.plan import config_access as access
from pinchpoint.plan import llm
from pinchpoint.plan.hardware import System, system_from
from pinchpoint.plan.llm import GIB, DecoderShape, Layout, parameter_counts
from pinchpoint.plan.memory import memory_per_device
from pinchpoint.plan.result import PlanResult, from_parts
from pinchpoint.plan.rules import MLPerfRules
from pinchpoint.plan.time_to_train import assemble, dominant, pinch
from pinchpoint.workloads.registry import spec


def layout_from(cfg) -> Layout:
    a = access.scale(cfg)
    dims = access.degrees(cfg.parallel)
    p = access.plan_settings(cfg)
    precision = p.precision or getattr(a, "plan_precision", None) or a.precision
    return Layout(dp_replicate=dims.dp_replicate, dp_shard=dims.dp_shard, tp=dims.tp,
                  pp=dims.pp, cp=dims.cp, micro_batch=a.micro_batch_size,
                  global_batch=a.global_batch_size, seq_len=a.seq_len, recompute=a.recompute,
                  precision=precision,
                  schedule=getattr(cfg.model, "pipeline_schedule", "1f1b"),
                  **access.layout_settings(p),
                  fp8_attention=getattr(p, "fp8_attention", None),
                  fp8_param_gather=bool(getattr(p, "fp8_param_gather", False)),
                  stack=access.stack(cfg, spec(cfg.model.name).rules.reference_stack))


def eval_seconds(step: dict, lay: Layout, eval_samples: int) -> float:
    """One evaluation: a forward pass (a third of forward + backward) over eval_samples, spread
    over the data-parallel replicas like a training batch, plus one pipeline fill."""
    t = step["terms_s"]
    forward = sum(t[k] for k in ("compute", "memory", "tp", "cp", "pp", "overhead")) / 3
    return eval_samples / lay.global_batch * forward + t["bubble"] / 3


def plan(a, lay: Layout, gpu, rules: MLPerfRules | None = None, ruleset: str = "6.0.0",
         eval_every: int = 12288, eval_samples: int = 1024, init_s: float = 0.0,
         below_smallest_rcp: bool = False) -> dict:
    """The step, memory and time-to-train arithmetic (a dict: plan_run makes it a PlanResult);
    ``rules``: the benchmark's MLPerf rules (default: llama31_8b's)."""
    rules = rules or spec("llama31_8b").rules
    benchmark = rules.benchmark
    system = gpu if isinstance(gpu, System) else system_from(gpu)
    shape = a if isinstance(a, DecoderShape) else DecoderShape.of(a)
    step = llm.step_terms(shape, lay, system)
    mem = memory_per_device(shape, lay)
    need = mem["worst_stage"]["total_bytes"]
    ttt = assemble(rules, lay.global_batch, ruleset, step["step_s"],
                   eval_seconds(step, lay, eval_samples), eval_every, init_s,
                   "model.full.global_batch_size", below_smallest_rcp)
    achieved = step["model_flops_per_step"] / step["step_s"] / lay.world
    return {"model": benchmark, "gpu": system.name, "world_size": lay.world,
            "global_batch": lay.global_batch, "precision": lay.precision,
            "attention_precision": llm.attention_precision_of(lay, system),
            "layout": {**{k: v for k, v in lay.__dict__.items() if k != "overlap"},
                       "dp": lay.dp, "micro_batches": lay.micro_batches},
            "parameters": parameter_counts(shape),
            "memory_per_device": mem, "memory_needed_gib": need / GIB,
            "memory_usable_gib": system.usable_bytes / GIB, "fits": need <= system.usable_bytes,
            "step_s": step["step_s"], "terms_s": step["terms_s"],
            "dominant": dominant(step["terms_s"]), "pinch": pinch(step["terms_s"]),
            "communication_s": step["communication_s"],
            "layers_per_chunk": step["layers_per_chunk"],
            "model_tflops_per_gpu": achieved / 1e12,
            "time_to_train": ttt}


def plan_run(cfg) -> PlanResult:
    a = access.scale(cfg)
    p = access.plan_settings(cfg)
    rules = spec(cfg.model.name).rules
    out = plan(a, layout_from(cfg), system_from(cfg.gpu), rules, access.ruleset(cfg),
               rules.eval_every_samples(cfg), a.eval_samples, p.init_in_clock_s,
               access.below_smallest_rcp(cfg))
    return from_parts(out, out["memory_per_device"]["worst_stage"], model=cfg.model.name,
                      scale=cfg.model.scale)


def check_fits_gpu(cfg) -> None:
    """Refuse a layout whose worst device needs more memory than the configured GPU has."""
    p = plan_run(cfg)
    if p.fits:
        return
    raise ConfigError("gpu.memory_gib", cfg.gpu.memory_gib, fit_message(p, cfg.gpu.reserved_gib))


def fit_message(p: PlanResult, reserved_gib: float) -> str:
    w = p.memory_per_device_bytes
    parts = ", ".join(f"{k.removesuffix('_bytes')} {w[k] / GIB:.1f}" for k in
                      ("weights_bytes", "gradients_bytes", "optimizer_bytes",
                       "fsdp_gather_bytes", "activation_bytes", "logits_bytes"))
    lay = p.details["layout"]
    return (f"at least {p.memory_needed_gib + reserved_gib:.1f} GiB per device for "
            f"{p.model} on {p.gpu} with dp_replicate={lay['dp_replicate']} "
            f"dp_shard={lay['dp_shard']} tp={lay['tp']} pp={lay['pp']} cp={lay['cp']} "
            f"(GiB: {parts}; +{reserved_gib} reserved): raise parallel.tp/pp/dp_shard, set "
            "recompute=true or lower micro_batch_size")


def check_fits_host(cfg) -> None:
    """A CPU run must fit in this machine's free memory (all ranks share it)."""
    import psutil

    a = access.scale(cfg)
    lay = layout_from(cfg)
    lay.precision = "fp32"
    need = memory_per_device(a, lay)["worst_stage"]["total_bytes"] * lay.world
    have = psutil.virtual_memory().available
    if need > have:
        raise ConfigError("model.scale", cfg.model.scale,
                          f"a scale that fits here: {need / GIB:.1f} GiB across "
                          f"{lay.world} ranks, {have / GIB:.1f} GiB free (plan it with "
                          "plan_only=true, or use proxy)")
