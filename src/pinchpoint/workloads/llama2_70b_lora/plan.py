"""Pre-flight plan of llama2_70b_lora: parameters (base and adapters, exact from the
architecture), memory per device under FSDP/ZeRO-3 with and without activation recomputation,
and FLOPs per step. Arithmetic only; nothing is allocated.

Memory per device (dp ranks shard everything, as ZeRO-3):
- frozen base weights in their dtype (bf16: 2 bytes, fp32: 4) / dp, plus the transient
  all-gather of two decoder layers (the current one and the prefetched next);
- adapters: fp32 weights, gradients and AdamW's two moments (16 bytes each) / dp;
- activations saved for backward, per token per layer, counted tensor by tensor for this model
  (a frozen projection saves nothing: its weight needs no gradient and its input-gradient needs
  only the weight): the two RMSNorm inputs (upcast to fp32), q, k, v and the attention output
  kept by fused attention, each adapter's dropped-out input, dropout mask (1 byte) and rank-r
  A output, and SwiGLU's gate, silu and up outputs. Recompute keeps each layer's input plus one
  layer's activations while it is recomputed;
- logits of the micro-batch (activation dtype), their fp32 upcast in the loss and its gradient.
Not counted: the runtime (CUDA context, NCCL buffers, allocator slack: ``gpu.reserved_gib``).
tests/test_lora_plan.py checks the activation count against the tensors autograd really saves.
``plan.stack=megatron`` counts memory as NeMo with Transformer Engine keeps it instead
(``te_activation_bytes_per_token_layer``): the frozen base quantized (``frozen_weight_bytes``:
FP8 under ``te.fp8_model_init``, the v5.0 logs' ``fp8_params: true``; 4-bit in place), the
norms' BF16 inputs, q, k, v and the output in the attention's precision, the SwiGLU input (in
FP8 with ``plan.fp8_activation_store``), the adapters' inputs; ``plan.recompute_layers``
recomputes only the first N layers (block).

Step time (``step_terms``), per micro-batch and GPU at the full scale's sequence length (8k),
on the shared planner parts (plan/compute.py at the calibrated achieved rates, plan/network.py):
- the frozen base: forward 2 x linear parameters x tokens, backward input gradients only (2 x,
  not the 4 x of a full fine-tune: no weight gradients), recompute one more forward; causal
  attention forward and its whole backward (no weights: as in pretraining); the frozen head's
  forward and input gradient;
- the adapters: 6 x their parameters x tokens (their weight gradients are computed);
- attention's passes at least as long as softmax's exponentials (compute.attention_s);
- memory-bound kernels (norms, residuals, RoPE, SwiGLU, the adapters' dropout) as plan/llm.py,
  plus the low-precision casts of the frozen GEMMs' inputs (one copy: no weight gradient);
- a fixed overhead per layer and micro-batch (calibration.LAYER_OVERHEAD_S);
- FSDP2 as the runner applies it (one unit per decoder layer, the adapters their own units):
  every micro-batch gathers each frozen layer forward and again backward, in its dtype; only
  the adapters' gradients are reduce-scattered (fp32) and, under HSDP, all-reduced over the
  replicas; frozen weights have no gradients to reduce. Exposed as the dense planner does
  (calibrated data-parallel overlap, at most what compute covers);
- the optimizer: AdamW over the adapters' shard only.
``plan.stack=megatron`` plans LoRA as the NeMo submissions run it instead: the frozen base
replicated on every rank (nothing gathered), the sequence split ``cp`` ways (ring attention: K
and V passed cp - 1 times forward, K, V and their gradients backward, hidden behind attention
as the dense planner's CP), the adapters' gradients all-reduced over dp x cp once a step.
``tp`` splits every GEMM and the heads, with sequence parallelism's gathers and reduce-scatters
of the layer input forward and backward (hidden as the dense planner's TP); ``pp`` is not planned
(no LoRA submission uses it; the runner shards over dp only).
"""
from __future__ import annotations

from typing import Any

from pinchpoint.plan.result import PlanResult, from_parts
from pinchpoint.workloads.registry import spec
from pinchpoint.errors import ConfigError
from pinchpoint.plan import network
from pinchpoint.plan.compute import (attention_precision, attention_s, layer_overhead_s,
                                     matmul_s, memory_s)
from pinchpoint.plan.hardware import system_from
from pinchpoint.plan.llm import (ACT, LOW_PRECISION_BYTES, OPTIMIZER_BYTES_PER_PARAM,
                                 DecoderShape, _exposed,
                                 cast_bytes_per_token, cp_ring_layer_s, overlap_or_calibrated,
                                 tp_layer_s)

GIB = 2 ** 30
ADAPTER_BYTES = 16  # fp32 weight + gradient + AdamW exp_avg + exp_avg_sq


def projection_shapes(a) -> dict[str, tuple[int, int]]:
    """(in, out) of each projection of a decoder layer."""
    hd = a.dim // a.n_heads
    return {"qkv_proj": (a.dim, (a.n_heads + 2 * a.n_kv_heads) * hd),
            "o_proj": (a.n_heads * hd, a.dim), "gate_proj": (a.dim, a.ffn_dim),
            "up_proj": (a.dim, a.ffn_dim), "down_proj": (a.ffn_dim, a.dim)}


def parameter_counts(a, rank: int, targets) -> dict[str, int]:
    shapes = projection_shapes(a)
    layer = sum(i * o for i, o in shapes.values()) + 2 * a.dim
    base = a.n_layers * layer + 2 * a.vocab_size * a.dim + a.dim
    adapters = a.n_layers * rank * sum(sum(shapes[t]) for t in targets)
    return {"base": base, "per_layer": layer, "adapters": adapters, "total": base + adapters}


def activation_bytes_per_token_layer(a, rank: int, targets, dropout: float,
                                     activation_bytes: int) -> float:
    e = activation_bytes
    kv = a.n_kv_heads * (a.dim // a.n_heads)
    norms = 2 * a.dim * 4                        # RMSNorm saves its fp32 upcast input
    attention = e * (a.dim + 2 * kv + a.dim)     # q, k, v, output (fused attention)
    shapes = projection_shapes(a)
    adapters = 0.0
    for t in targets:
        fan_in = shapes[t][0]
        mask = fan_in if dropout > 0 else 0      # bool mask, 1 byte per element
        adapters += e * fan_in + mask + e * rank
    mlp = 3 * a.ffn_dim * e                      # gate out, silu out, up out
    return norms + attention + adapters + mlp


def te_activation_bytes_per_token_layer(a, rank: int, targets, dropout: float,
                                        attention_bytes: int, fp8_activation_store: bool) -> float:
    """What one layer keeps for backward per token under Megatron with Transformer Engine: a
    frozen GEMM keeps nothing (its input is only needed for a weight gradient); the two fused
    RMSNorms their BF16 inputs; fused attention q, k, v and its output in the attention's
    precision; the SwiGLU its input (gate and up), in FP8 when ``fp8_activation_store``; each
    adapter its dropped-out BF16 input, dropout mask and rank-r output."""
    kv = a.n_kv_heads * (a.dim // a.n_heads)
    shapes = projection_shapes(a)
    adapters = sum(ACT * shapes[t][0] + (shapes[t][0] if dropout > 0 else 0) + ACT * rank
                   for t in targets)
    return (2 * a.dim * ACT + attention_bytes * (2 * a.dim + 2 * kv) + adapters
            + 2 * a.ffn_dim * (1 if fp8_activation_store else ACT))


def recomputed_layers(n_layers: int, recompute: bool, recompute_layers: int | None) -> int:
    """Layers whose forward runs again in backward: ``recompute_layers`` (block) when set,
    else all with ``recompute``, else none."""
    if recompute_layers is not None:
        if recompute_layers < 0:
            raise ConfigError("plan.recompute_layers", recompute_layers,
                              f"null or 0..{n_layers} (layers fully recomputed)")
        return min(recompute_layers, n_layers)
    return n_layers if recompute else 0


def frozen_weight_bytes(precision: str, stack: str) -> float:
    """Bytes a frozen base weight takes: the runner keeps it in BF16 under FP8 GEMMs (FP32 when
    asked); NeMo (megatron) builds it quantized: FP8 under te.fp8_model_init (NVIDIA's
    custom_llama.py configure_model), 4-bit in place with the row- and column-wise copies a
    GEMM and its input gradient read (custom_callbacks.py, pre_quantized_model)."""
    q = LOW_PRECISION_BYTES.get(precision) if stack == "megatron" else None
    if q:
        return q if precision in ("fp8", "mxfp8") else 2 * q
    return 4 if precision == "fp32" else ACT


def memory_per_device(a, rank: int, targets, dropout: float, dp: int, micro_batch: int,
                      seq_len: int, recompute: bool, precision: str,
                      stack: str = "fsdp2", cp: int = 1, tp: int = 1,
                      fp8_attention: bool = False, fp8_activation_store: bool = False,
                      recompute_layers: int | None = None) -> dict[str, float]:
    counts = parameter_counts(a, rank, targets)
    w = frozen_weight_bytes(precision, stack)
    tokens = micro_batch * seq_len / cp / tp      # sequence parallel: a tp-th of the tokens
    if stack == "megatron":
        per_token = te_activation_bytes_per_token_layer(
            a, rank, targets, dropout, 1 if fp8_attention else ACT, fp8_activation_store)
        layer_input = ACT
    else:       # the runner: activations in the base's dtype
        per_token = activation_bytes_per_token_layer(a, rank, targets, dropout, w)
        layer_input = w
    per_layer = per_token * tokens
    recomputed = recomputed_layers(a.n_layers, recompute, recompute_layers)
    # a recomputed layer keeps its input, plus one layer's activations while it is recomputed
    activations = recomputed * tokens * a.dim * layer_input + \
        (a.n_layers - recomputed) * per_layer + (per_layer if recomputed else 0)
    sharded = stack == "fsdp2"           # megatron: the frozen base whole on every rank
    out = {"frozen_weights_bytes": counts["base"] * w / (dp if sharded else tp),
           "adapter_state_bytes": counts["adapters"] * ADAPTER_BYTES / dp,
           "fsdp_gather_bytes": 2 * counts["per_layer"] * w if dp > 1 and sharded else 0.0,
           "activation_bytes": activations,
           "logits_bytes": tokens * a.vocab_size * (layer_input + 4 + 4)}
    out["total_bytes"] = sum(out.values())
    return out


def flops_per_step(a, counts: dict, global_batch: int, seq_len: int, recompute: bool) -> float:
    """Forward 2 N per token; backward through a frozen base computes input gradients only
    (2 N, not 4 N); recompute adds a forward. Attention: causal half of 4 s d per token/layer."""
    tokens = global_batch * seq_len
    dense = 2 * (counts["base"] - a.vocab_size * a.dim) * tokens
    attention = 2 * a.n_layers * global_batch * seq_len ** 2 * a.dim
    forward = dense + attention
    return forward * (2 + (1 if recompute else 0))


def training_flops(a, counts: dict, tokens: float, seq_len: int, recompute: bool | float,
                   frozen: bool = True) -> dict[str, float]:
    """FLOPs of ``tokens`` tokens (sequences of ``seq_len``) by pass: "forward" (base linears,
    head, causal attention, adapters), "backward" (frozen: input gradients of the base and
    head, 2 x their parameters, + attention's backward + the adapters' 4 x; ``frozen=False``:
    a full fine-tune's 4 x everything), "recompute" (one more forward of the layers when
    ``recompute``; a number: of that fraction of them)."""
    head = a.vocab_size * a.dim
    linear = a.n_layers * (counts["per_layer"] - 2 * a.dim)
    attention = 2 * a.n_layers * seq_len * tokens * a.dim      # causal half of QK^T and PV
    adapters = counts["adapters"]
    forward = 2 * (linear + head + adapters) * tokens + attention
    gemms = 1 if frozen else 2          # input gradients; + weight gradients when trained
    backward = 2 * gemms * (linear + head) * tokens + 4 * adapters * tokens + 2 * attention
    return {"forward": forward, "backward": backward,
            "recompute": (forward - 2 * head * tokens) * float(recompute)}


def _share_recomputed(r: float, layer_s) -> float:
    """A layer's time from ``layer_s(recompute)``, with a fraction ``r`` of the layers
    recomputed (block recompute): (1 - r) x without + r x with."""
    return sum(share * layer_s(again) for share, again in ((1 - r, False), (r, True)) if share)


def step_terms(a, counts: dict, system, dp_shard: int, dp_replicate: int, micro_batch: int,
               global_batch: int, seq_len: int, recompute: bool, precision: str,
               overlap: float | None = None, max_ctas: dict | None = None,
               stack: str = "fsdp2", cp: int = 1, fp8_attention: bool | None = None,
               overlap_cp: float | None = None, tp: int = 1,
               overlap_tp: float | None = None,
               recompute_layers: int | None = None) -> dict[str, Any]:
    """Seconds per optimizer step by term (see the module docstring)."""
    dp = dp_shard * dp_replicate
    if global_batch % (micro_batch * dp):
        raise ConfigError("model.full.global_batch_size", global_batch,
                          f"a multiple of micro_batch_size x dp = {micro_batch} x {dp}")
    for name, degree in (("cp", cp), ("tp", tp)):
        if degree > 1 and stack != "megatron":
            raise ConfigError(f"parallel.{name}", degree, "1 with plan.stack=fsdp2 (the runner "
                              "shards LoRA over dp only; plan.stack=megatron plans NeMo's "
                              "TP and CP)")
    m = global_batch // (micro_batch * dp)
    tokens = micro_batch * seq_len / cp
    r = recomputed_layers(a.n_layers, recompute, recompute_layers) / a.n_layers
    f = training_flops(a, counts, tokens, seq_len, r)
    attention = 2 * a.n_layers * seq_len * tokens * a.dim
    att = attention_precision(system, precision, fp8_attention)
    # attention (forward, backward, recomputed forward) at the attention precision
    # TP (sequence parallel): every GEMM and the attention heads split tp ways
    hd = a.dim // a.n_heads
    att_s = attention_s(3 * attention, system, att, 4 * hd, 1 + r) / tp
    gemm = sum(f.values()) - attention * (3 + r)
    compute = matmul_s(gemm, system, precision) / tp + att_s
    elements = 10 * a.dim + 2 * (a.n_heads + a.n_kv_heads) * hd + 3 * a.ffn_dim
    # the frozen GEMMs' inputs cast once (no weight gradient needs the transposed copy)
    per_token = 3 * ACT * elements / tp + \
        cast_bytes_per_token(DecoderShape.of(a), precision, tp, copies=1)
    mem = memory_s(per_token * tokens * a.n_layers * (1 + r / 3)
                   + 4 * 4 * a.vocab_size * tokens, system)
    capped = network.capped(system, max_ctas or {}, "dp")
    adapters = counts["adapters"] * 4                     # fp32 gradients, reduced once each
    if stack == "megatron":          # replicated base: only the adapters' gradients, once
        reduce = network.all_reduce_s(adapters, network.span(dp * cp, 1, system.nvlink_domain),
                                      capped)
        communication = {"fsdp_all_gather": 0.0, "adapter_all_reduce": reduce}
    else:
        communication = _fsdp2_s(a, counts, precision, dp_shard, dp_replicate, adapters,
                                 system, capped, m)
    terms = {"compute": m * compute, "memory": m * mem,
             "data_parallel": _exposed(sum(communication.values()),
                                       overlap_or_calibrated("data_parallel", overlap),
                                       m * compute),
             "optimizer": memory_s(counts["adapters"] / dp * OPTIMIZER_BYTES_PER_PARAM, system),
             "overhead": layer_overhead_s(m * a.n_layers)}
    if tp > 1:
        span = network.span(tp, 1, system.nvlink_domain)
        layers = a.n_layers * _share_recomputed(r, lambda again: tp_layer_s(
            tokens * a.dim * ACT, span, system, max_ctas, again))
        terms["tp"] = m * _exposed(layers, overlap_or_calibrated("tensor_parallel", overlap_tp),
                                   compute)
    if cp > 1:
        kv = tokens * 2 * a.n_kv_heads * hd * ACT / tp         # BF16 K and V of the chunk
        span = network.span(cp, tp, system.nvlink_domain)
        ring = a.n_layers * _share_recomputed(r, lambda again: cp_ring_layer_s(
            kv, span, system, max_ctas, again))
        terms["cp"] = m * _exposed(ring, overlap_or_calibrated("context_parallel", overlap_cp),
                                   att_s)
    # the evaluation's forward per sequence on one rank of a dp replica: the GEMMs split tp
    # ways as in training (mem is already per tp rank)
    forward = f["forward"] / micro_batch
    return {"step_s": sum(terms.values()), "terms_s": terms, "micro_batches": m,
            "flops_per_micro_batch": f,
            "communication_s": communication,
            "forward_s_per_sequence": matmul_s(forward, system, precision) / tp
            + mem / 3 / micro_batch}


def _fsdp2_s(a, counts: dict, precision: str, dp_shard: int, dp_replicate: int,
             adapters: float, system, capped, m: int) -> dict[str, float]:
    """FSDP2 as the runner applies it, per step: every micro-batch gathers each frozen layer
    forward and again backward (the root once), and reduce-scatters the adapters' gradients
    (then all-reduces them over the HSDP replicas)."""
    w = 2 if precision != "fp32" else 4
    shard = network.span(dp_shard, 1, system.nvlink_domain)
    replicas = network.span(dp_replicate, dp_shard, system.nvlink_domain)
    root = (counts["base"] - a.n_layers * counts["per_layer"]) * w
    gathers = 2 * a.n_layers * network.all_gather_s(counts["per_layer"] * w, shard, capped) + \
        network.all_gather_s(root, shard, capped)
    scatter = network.reduce_scatter_s(adapters, shard, capped) + \
        network.all_reduce_s(adapters / shard.size, replicas, capped)
    return {"fsdp_all_gather": m * gathers, "adapter_reduce_scatter": m * scatter}


def describe(run) -> PlanResult:
    m, dims = run.model, _dims(run)
    a = getattr(m, m.scale)
    lora = m.lora
    counts = parameter_counts(a, lora.rank, lora.target_modules)
    from pinchpoint.plan import config_access as access
    memory = {}
    stack = _stack(run)
    p = access.plan_settings(run)
    system = system_from(run.gpu)
    precision = p.precision or a.precision
    fp8_attention = attention_precision(system, precision,
                                        getattr(p, "fp8_attention", None)) == "fp8"
    for recompute in (True, False):
        memory["with_recompute" if recompute else "without_recompute"] = memory_per_device(
            a, lora.rank, lora.target_modules, lora.dropout, dims.dp, a.micro_batch_size,
            a.seq_len, recompute, precision, stack, dims.cp, dims.tp, fp8_attention,
            bool(getattr(p, "fp8_activation_store", False)),
            getattr(p, "recompute_layers", None))
    chosen = memory["with_recompute" if m.recompute else "without_recompute"]
    usable = (run.gpu.memory_gib - run.gpu.reserved_gib) * GIB
    out = {"parameters": counts,
            "trainable_fraction": counts["adapters"] / counts["total"],
            "layout": {"dp": dims.dp, "world": dims.world_size,
                       "micro_batch": a.micro_batch_size, "seq_len": a.seq_len,
                       "recompute": m.recompute, "precision": a.precision,
                       "stack": stack, "cp": dims.cp},
            "memory_per_device": memory,
            "memory_needed_gib": chosen["total_bytes"] / GIB,
            "memory_usable_gib": usable / GIB, "fits": chosen["total_bytes"] <= usable,
            "model_flops_per_step": flops_per_step(a, counts, a.global_batch_size, a.seq_len,
                                                   m.recompute),
            # adapters: fp32 weights + AdamW's two moments; full adds the base in its dtype
            "adapter_checkpoint_bytes": counts["adapters"] * (4 + 8),
            "full_checkpoint_bytes": counts["adapters"] * (4 + 8) +
            counts["base"] * (2 if a.precision == "bf16" else 4),
            **_time_to_train(run, a, counts, dims, p, system, precision, stack)}
    return from_parts(out, chosen, model=m.name, scale=m.scale)


def _time_to_train(run, a, counts: dict, dims, p, system, precision: str,
                   stack: str) -> dict[str, Any]:
    """Step time by term and time-to-train from the llama2_70b_lora RCPs (plan/rcp.py), for
    describe's plan settings ``p``, system, precision and stack."""
    from pinchpoint.plan import config_access as access
    from pinchpoint.plan.time_to_train import assemble, dominant, pinch
    step = step_terms(a, counts, system, dims.dp_shard, dims.dp_replicate, a.micro_batch_size,
                      a.global_batch_size, a.seq_len, run.model.recompute, precision,
                      p.overlap_data_parallel, access.mapping(p.nccl_max_ctas),
                      stack, dims.cp, getattr(p, "fp8_attention", None),
                      p.overlap_context_parallel, dims.tp, p.overlap_tensor_parallel,
                      getattr(p, "recompute_layers", None))
    # evaluation: a forward pass over the validation set, spread over the dp ranks
    eval_each = a.eval_samples / dims.dp * step["forward_s_per_sequence"]
    rules = spec(run.model.name).rules
    ttt = assemble(rules, a.global_batch_size, access.ruleset(run), step["step_s"],
                   eval_each, rules.eval_every_samples(run), p.init_in_clock_s,
                   "model.full.global_batch_size", access.below_smallest_rcp(run))
    return {"gpu": system.name, "world_size": dims.world_size, "precision": precision,
            "global_batch": a.global_batch_size, "step_s": step["step_s"],
            "terms_s": step["terms_s"], "dominant": dominant(step["terms_s"]),
            "pinch": pinch(step["terms_s"]), "step": step, "time_to_train": ttt}


def _stack(run) -> str:
    """plan.stack at the full scale (null: the reference's, fsdp2); the runner's otherwise."""
    from pinchpoint.plan import config_access as access
    return access.full_scale_stack(run, spec(run.model.name).rules.reference_stack)


def _dims(run):
    from pinchpoint.parallel.dims import ParallelDims
    return ParallelDims.from_config(run.parallel)


def check_fits(run) -> None:
    """Refuse a layout whose devices need more memory than the configured GPU has."""
    p = describe(run)
    if p.fits:
        return
    m = run.model
    parts = p.details["memory_per_device"][
        "with_recompute" if m.recompute else "without_recompute"]
    detail = ", ".join(f"{k.removesuffix('_bytes')} {v / GIB:.1f}" for k, v in parts.items()
                       if k != "total_bytes")
    hint = "" if m.recompute else " or set model.recompute=true"
    raise ConfigError("gpu.memory_gib", run.gpu.memory_gib,
                      f"at least {p.memory_needed_gib + run.gpu.reserved_gib:.1f} GiB per "
                      f"device for {m.name} ({m.scale}) on dp={p.details['layout']['dp']} at "
                      f"seq_len {p.details['layout']['seq_len']} (GiB: {detail}; +{run.gpu.reserved_gib} "
                      f"reserved): raise parallel.dp_shard{hint}")
