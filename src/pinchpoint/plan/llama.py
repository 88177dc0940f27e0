"""Pre-flight plan for a dense Llama model x parallel layout x GPU: parameters, memory per device,
communication per step, first-order step time. Arithmetic only; nothing is allocated.

Memory model (per device, worst pipeline stage):
- parameters on the stage / tp, sharded over dp by FSDP (ZeRO-3): weights, gradients and AdamW
  state at ``bytes_per_param`` (fp32: 4 + 4 + 8; bf16 mixed: 2 bf16 weights + 4 fp32 grads +
  12 fp32 master/m/v), plus the transient all-gather of two blocks (current + prefetched);
- activations saved for backward per layer and micro-batch, counted tensor by tensor for this
  block (RMSNorm inputs, the all-gathered normed inputs of the column-parallel projections,
  q/k before and after RoPE, v, the attention output and its copy, SwiGLU's four ffn-wide
  tensors), divided by tp except the gathered
  inputs (DTensor saves them whole); attention scores are not stored (fused SDPA). Full
  recompute keeps only each block's input plus one block's activations. Micro-batches in flight:
  1 without PP, pp (1F1B) or all of them (GPipe) with PP; the last stage adds the logits
  (activation dtype + fp32 log-softmax + its gradient). Not modelled: the runtime itself (CUDA
  context, NCCL buffers, allocator slack: ``gpu.reserved_gib``) and transient backward buffers;
  benchmarks/llama_memory_model.py measures what that leaves out on CPU.
Communication: bytes each device puts on the wire per optimizer step (ring algorithms:
(n - 1) / n of the buffer), per collective, with the link each group uses (tp innermost, then
dp, then pp, as the device mesh is laid out).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GIB = 2 ** 30


@dataclass
class Layout:
    dp: int = 1
    tp: int = 1
    pp: int = 1
    cp: int = 1
    micro_batch: int = 1
    global_batch: int = 1
    seq_len: int = 8192
    recompute: bool = False
    precision: str = "bf16"
    schedule: str = "1f1b"

    @property
    def world(self) -> int:
        return self.dp * self.tp * self.pp * self.cp

    @property
    def accumulation(self) -> int:
        return max(1, self.global_batch // (self.micro_batch * self.dp))


def parameter_counts(a) -> dict[str, int]:
    hd = a.dim // a.n_heads
    attention = a.dim * a.n_heads * hd * 2 + a.dim * a.n_kv_heads * hd * 2
    mlp = 3 * a.dim * a.ffn_dim
    layer = attention + mlp + 2 * a.dim
    counts = {"embedding": a.vocab_size * a.dim, "output": a.vocab_size * a.dim,
              "final_norm": a.dim, "per_layer": layer, "attention_per_layer": attention,
              "mlp_per_layer": mlp, "layers": layer * a.n_layers}
    counts["total"] = counts["embedding"] + counts["output"] + counts["final_norm"] + \
        counts["layers"]
    return counts


def _bytes_per_param(precision: str) -> dict[str, int]:
    if precision == "fp32":
        return {"weights": 4, "gradients": 4, "optimizer": 8, "activation": 4}
    return {"weights": 2, "gradients": 4, "optimizer": 12, "activation": 2}


def activation_bytes_per_layer(a, lay: Layout) -> float:
    """Saved activations of one block for one micro-batch on one device."""
    e = _bytes_per_param(lay.precision)["activation"]
    tokens = lay.micro_batch * lay.seq_len / lay.cp
    hd = a.dim // a.n_heads
    t = lay.tp
    if lay.recompute:
        return tokens * a.dim * e / t          # the block input (sequence-sharded under SP)
    norm_inputs = 2 * a.dim / t                # SP: norms see a sequence shard
    gathered = 2 * a.dim if t > 1 else 2 * a.dim  # normed inputs of wq/wk/wv and w1/w3
    # q and k before and after RoPE, v, the SDPA output and its contiguous copy fed to wo
    attention = (4 * a.dim + 3 * a.n_kv_heads * hd) / t
    mlp = 4 * a.ffn_dim / t                    # w1 out, silu out, w3 out, product
    return tokens * (norm_inputs + gathered + attention + mlp) * e


def memory_per_device(a, lay: Layout) -> dict[str, Any]:
    counts = parameter_counts(a)
    b = _bytes_per_param(lay.precision)
    layers = a.n_layers // lay.pp
    stages = []
    for stage in range(lay.pp):
        first, last = stage == 0, stage == lay.pp - 1
        params = layers * counts["per_layer"] + first * counts["embedding"] + \
            last * (counts["output"] + counts["final_norm"])
        params_local = params / lay.tp / lay.dp
        state = {k: params_local * b[k] for k in ("weights", "gradients", "optimizer")}
        # FSDP gathers a block (and prefetches the next) to full size for compute.
        gather = 2 * counts["per_layer"] / lay.tp * b["weights"] if lay.dp > 1 else 0.0
        if lay.pp == 1:
            in_flight = 1
        elif lay.schedule == "gpipe":
            in_flight = lay.accumulation
        else:
            in_flight = min(lay.accumulation, lay.pp - stage)
        per_layer = activation_bytes_per_layer(a, lay)
        acts = per_layer * layers * in_flight
        if lay.recompute:  # one block's full activations live while it is recomputed
            full = Layout(**{**lay.__dict__, "recompute": False})
            acts += activation_bytes_per_layer(a, full)
        tokens = lay.micro_batch * lay.seq_len / lay.cp
        # logits, their fp32 log-softmax (saved by cross-entropy) and its gradient (at the
        # start of backward all three are alive)
        logits = tokens * a.vocab_size * (b["activation"] + 8) if last else 0.0
        total = sum(state.values()) + gather + acts + logits
        stages.append({"stage": stage, "parameters_per_device": params_local,
                       **{f"{k}_bytes": v for k, v in state.items()},
                       "fsdp_gather_bytes": gather, "activation_bytes": acts,
                       "logits_bytes": logits, "micro_batches_in_flight": in_flight,
                       "total_bytes": total})
    worst = max(stages, key=lambda s: s["total_bytes"])
    return {"worst_stage": worst, "stages": stages if lay.pp <= 16 else None}


def _link(group_span: int, gpu) -> float:
    """Bytes/s per device for a group spanning ``group_span`` consecutive ranks."""
    gbs = gpu.intra_node_gb_per_s if group_span <= gpu.gpus_per_node else gpu.inter_node_gb_per_s
    return gbs * 1e9


def communication_per_step(a, lay: Layout, gpu) -> dict[str, dict[str, float]]:
    counts = parameter_counts(a)
    b = _bytes_per_param(lay.precision)
    e = b["activation"]
    m = lay.accumulation
    layers = a.n_layers // lay.pp
    stage_params = (layers * counts["per_layer"] + counts["embedding"]) / lay.tp
    out: dict[str, dict[str, float]] = {}

    def add(name: str, nbytes: float, span: int) -> None:
        out[name] = {"bytes": nbytes, "seconds": nbytes / _link(span, gpu) if nbytes else 0.0}

    if lay.dp > 1:
        ring = (lay.dp - 1) / lay.dp
        gathers = 2 if lay.pp == 1 else 1   # forward + backward re-gather unless kept (PP)
        add("fsdp_all_gather", gathers * m * stage_params * b["weights"] * ring,
            lay.tp * lay.dp)
        add("fsdp_reduce_scatter", m * stage_params * b["gradients"] * ring, lay.tp * lay.dp)
    if lay.tp > 1:
        act = lay.micro_batch * lay.seq_len / lay.cp * a.dim * e * (lay.tp - 1) / lay.tp
        # per block: 2 all-gathers + 2 reduce-scatters forward, the mirror image backward
        per_mb = layers * 4 * act
        add("tp_all_gather", m * per_mb, lay.tp)
        add("tp_reduce_scatter", m * per_mb, lay.tp)
    if lay.pp > 1:
        act = lay.micro_batch * lay.seq_len / lay.cp * a.dim * e / lay.tp
        add("pp_send_recv", 2 * m * act, lay.world)
    if lay.cp > 1:
        kv = lay.micro_batch * lay.seq_len / lay.cp * 2 * a.n_kv_heads * (a.dim // a.n_heads) * e
        add("cp_kv_exchange", m * layers * 3 * kv * (lay.cp - 1), lay.tp * lay.cp)
    return out


def step_time(a, lay: Layout, gpu, comm: dict) -> dict[str, float]:
    counts = parameter_counts(a)
    tokens = lay.global_batch * lay.seq_len
    dense = 6 * (counts["total"] - counts["embedding"]) * tokens
    attention = 6 * a.n_layers * lay.global_batch * lay.seq_len ** 2 * a.dim  # causal half
    flops = (dense + attention) * (4 / 3 if lay.recompute else 1)
    compute = flops / lay.world / (gpu.peak_tflops * 1e12 * gpu.mfu)
    bubble = (lay.pp - 1) / lay.accumulation if lay.pp > 1 else 0.0
    comm_s = sum(c["seconds"] for c in comm.values())
    exposed = compute * (1 + bubble) + comm_s
    return {"model_flops_per_step": flops, "compute_seconds": compute,
            "pipeline_bubble_fraction": bubble, "communication_seconds": comm_s,
            "step_seconds_no_overlap": exposed,
            "step_seconds_full_overlap": max(compute * (1 + bubble), comm_s),
            "tokens_per_second_no_overlap": tokens / exposed}


def layout_from(cfg) -> Layout:
    a, p = cfg.model[cfg.model.scale], cfg.parallel
    return Layout(dp=p.dp, tp=p.tp, pp=p.pp, cp=p.cp, micro_batch=a.micro_batch_size,
                  global_batch=a.global_batch_size, seq_len=a.seq_len, recompute=a.recompute,
                  precision=a.precision, schedule=cfg.model.pipeline_schedule)


def plan(a, lay: Layout, gpu) -> dict[str, Any]:
    mem = memory_per_device(a, lay)
    comm = communication_per_step(a, lay, gpu)
    need = mem["worst_stage"]["total_bytes"]
    have = (gpu.memory_gib - gpu.reserved_gib) * GIB
    return {"parameters": parameter_counts(a), "layout": dict(lay.__dict__, world=lay.world,
                                                              accumulation=lay.accumulation),
            "gpu": dict(gpu.__dict__) if hasattr(gpu, "__dict__") else dict(gpu),
            "memory_per_device": mem, "memory_needed_gib": need / GIB,
            "memory_usable_gib": have / GIB, "fits": need <= have,
            "communication_per_step": comm, "step_time": step_time(a, lay, gpu, comm)}


def describe(cfg) -> dict[str, Any]:
    from omegaconf import OmegaConf
    a = OmegaConf.to_object(cfg.model[cfg.model.scale])
    gpu = OmegaConf.to_object(cfg.gpu)
    return {"model": cfg.model.name, "scale": cfg.model.scale, **plan(a, layout_from(cfg), gpu)}


def check_fits_gpu(cfg) -> None:
    """Refuse a layout whose worst device needs more memory than the configured GPU has."""
    from pinchpoint.config.validate import ConfigError
    p = describe(cfg)
    if p["fits"]:
        return
    w = p["memory_per_device"]["worst_stage"]
    parts = ", ".join(f"{k.removesuffix('_bytes')} {w[k] / GIB:.1f}" for k in
                      ("weights_bytes", "gradients_bytes", "optimizer_bytes",
                       "fsdp_gather_bytes", "activation_bytes", "logits_bytes"))
    raise ConfigError("gpu.memory_gib", cfg.gpu.memory_gib,
                      f"at least {p['memory_needed_gib'] + cfg.gpu.reserved_gib:.1f} GiB per "
                      f"device for {cfg.model.name} ({cfg.model.scale}) with dp={cfg.parallel.dp} "
                      f"tp={cfg.parallel.tp} pp={cfg.parallel.pp} cp={cfg.parallel.cp} "
                      f"(GiB: {parts}; +{cfg.gpu.reserved_gib} reserved): raise parallel.tp/pp/"
                      "dp, set recompute=true or lower micro_batch_size")


def check_fits_host(cfg) -> None:
    """A CPU run must fit in this machine's free memory (all ranks share it)."""
    import psutil

    from pinchpoint.config.validate import ConfigError
    from omegaconf import OmegaConf
    a = OmegaConf.to_object(cfg.model[cfg.model.scale])
    lay = layout_from(cfg)
    lay.precision = "fp32"
    need = memory_per_device(a, lay)["worst_stage"]["total_bytes"] * lay.world
    have = psutil.virtual_memory().available
    if need > have:
        raise ConfigError("model.scale", cfg.model.scale,
                          f"a scale that fits here: {need / GIB:.1f} GiB across "
                          f"{lay.world} ranks, {have / GIB:.1f} GiB free (plan it with "
                          "plan_only=true, or use proxy)")
