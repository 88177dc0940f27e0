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
"""
from __future__ import annotations

from typing import Any

from pinchpoint.errors import ConfigError

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


def memory_per_device(a, rank: int, targets, dropout: float, dp: int, micro_batch: int,
                      seq_len: int, recompute: bool, precision: str) -> dict[str, float]:
    counts = parameter_counts(a, rank, targets)
    w = 2 if precision == "bf16" else 4
    tokens = micro_batch * seq_len
    per_layer = activation_bytes_per_token_layer(a, rank, targets, dropout, w) * tokens
    if recompute:
        activations = a.n_layers * tokens * a.dim * w + per_layer
    else:
        activations = a.n_layers * per_layer
    out = {"frozen_weights_bytes": counts["base"] * w / dp,
           "adapter_state_bytes": counts["adapters"] * ADAPTER_BYTES / dp,
           "fsdp_gather_bytes": 2 * counts["per_layer"] * w if dp > 1 else 0.0,
           "activation_bytes": activations,
           "logits_bytes": tokens * a.vocab_size * (w + 4 + 4)}
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


def describe(run) -> dict[str, Any]:
    m, dims = run.model, _dims(run)
    a = getattr(m, m.scale)
    lora = m.lora
    counts = parameter_counts(a, lora.rank, lora.target_modules)
    memory = {}
    for recompute in (True, False):
        memory["with_recompute" if recompute else "without_recompute"] = memory_per_device(
            a, lora.rank, lora.target_modules, lora.dropout, dims.dp, a.micro_batch_size,
            a.seq_len, recompute, a.precision)
    chosen = memory["with_recompute" if m.recompute else "without_recompute"]
    usable = (run.gpu.memory_gib - run.gpu.reserved_gib) * GIB
    return {"model": m.name, "scale": m.scale, "parameters": counts,
            "trainable_fraction": counts["adapters"] / counts["total"],
            "layout": {"dp": dims.dp, "world": dims.world_size,
                       "micro_batch": a.micro_batch_size, "seq_len": a.seq_len,
                       "recompute": m.recompute, "precision": a.precision},
            "memory_per_device": memory,
            "memory_needed_gib": chosen["total_bytes"] / GIB,
            "memory_usable_gib": usable / GIB, "fits": chosen["total_bytes"] <= usable,
            "model_flops_per_step": flops_per_step(a, counts, a.global_batch_size, a.seq_len,
                                                   m.recompute),
            # adapters: fp32 weights + AdamW's two moments; full adds the base in its dtype
            "adapter_checkpoint_bytes": counts["adapters"] * (4 + 8),
            "full_checkpoint_bytes": counts["adapters"] * (4 + 8) +
            counts["base"] * (2 if a.precision == "bf16" else 4)}


def _dims(run):
    from pinchpoint.parallel.dims import ParallelDims
    return ParallelDims.from_config(run.parallel)


def check_fits(run) -> None:
    """Refuse a layout whose devices need more memory than the configured GPU has."""
    p = describe(run)
    if p["fits"]:
        return
    m = run.model
    parts = p["memory_per_device"]["with_recompute" if m.recompute else "without_recompute"]
    detail = ", ".join(f"{k.removesuffix('_bytes')} {v / GIB:.1f}" for k, v in parts.items()
                       if k != "total_bytes")
    hint = "" if m.recompute else " or set model.recompute=true"
    raise ConfigError("gpu.memory_gib", run.gpu.memory_gib,
                      f"at least {p['memory_needed_gib'] + run.gpu.reserved_gib:.1f} GiB per "
                      f"device for {m.name} ({m.scale}) on dp={p['layout']['dp']} at seq_len "
                      f"{p['layout']['seq_len']} (GiB: {detail}; +{run.gpu.reserved_gib} "
                      f"reserved): raise parallel.dp_shard{hint}")
