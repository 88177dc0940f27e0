"""Memory per device of a dense decoder LLM on a layout: weights, gradients and optimizer state
(sharded by FSDP over dp_shard x cp), the FSDP all-gather buffer, saved activations of the
micro-batches in flight (1F1B, GPipe or interleaved), and the logits on the last stage.
Not modelled: the runtime itself (CUDA context, NCCL buffers, allocator slack: the GPU's
``reserved_gib``) and transient backward buffers; benchmarks/llama_memory_model.py measures
what that leaves out on CPU."""
from __future__ import annotations

from typing import Any

from pinchpoint.plan import pipeline
from pinchpoint.plan.llm import DecoderShape, Layout, parameter_counts


def bytes_per_param(precision: str) -> dict[str, int]:
    if precision == "fp32":
        return {"weights": 4, "gradients": 4, "optimizer": 8, "activation": 4}
    return {"weights": 2, "gradients": 4, "optimizer": 12, "activation": 2}


def activation_bytes_per_layer(a, lay: Layout) -> float:
    """Saved activations of one block for one micro-batch on one device: RMSNorm inputs, the
    normed inputs of the column-parallel projections (sequence-sharded under TP, as Megatron/TE
    sequence parallelism saves them), q/k before and after RoPE, v, the attention output and
    its copy, SwiGLU's four ffn-wide tensors; fused attention stores no scores. Full recompute
    keeps only the block input."""
    s = a if isinstance(a, DecoderShape) else DecoderShape.of(a)
    e = bytes_per_param(lay.precision)["activation"]
    tokens = lay.micro_batch * lay.seq_len / lay.cp
    t = lay.tp
    if lay.recompute:
        return tokens * s.dim * e / t
    norm_inputs = 2 * s.dim / t
    gathered = 2 * s.dim / t if t > 1 else 2 * s.dim
    attention = (4 * s.dim + 3 * s.n_kv_heads * s.head_dim) / t
    mlp = 4 * s.ffn_dim / t
    return tokens * (norm_inputs + gathered + attention + mlp) * e


def _in_flight(lay: Layout, rank: int, chunks_on_rank: int) -> float:
    """Micro-batches (in units of the rank's whole layer stack) whose activations are alive at
    the peak: 1 without PP; pp - rank under 1F1B; all under GPipe; Megatron's warm-up count
    (pp - rank - 1) x 2 + (vp - 1) x pp + 1 chunk passes under interleaving."""
    m = lay.micro_batches
    if lay.pp == 1:
        return 1
    if lay.schedule == "gpipe":
        return m
    if lay.virtual_stages > 1:
        passes = (lay.pp - rank - 1) * 2 + (lay.virtual_stages - 1) * lay.pp + 1
        return min(passes, m * lay.virtual_stages) / chunks_on_rank
    return min(m, lay.pp - rank)


def memory_per_device(a, lay: Layout) -> dict[str, Any]:
    s = a if isinstance(a, DecoderShape) else DecoderShape.of(a)
    counts = parameter_counts(s)
    b = bytes_per_param(lay.precision)
    chunks = lay.chunks(s.n_layers)
    per_rank = pipeline.layers_per_rank(chunks, lay.pp)
    last_rank = (len(chunks) - 1) % lay.pp
    shard = lay.dp_shard * lay.cp if lay.dp_shard > 1 else 1
    per_layer_act = activation_bytes_per_layer(s, lay)
    tokens = lay.micro_batch * lay.seq_len / lay.cp
    stages = []
    for rank, layers in enumerate(per_rank):
        first, last = rank == 0, rank == last_rank
        params = layers * counts["per_layer"] + first * counts["embedding"] + \
            last * (counts["output"] + counts["final_norm"])
        local = params / lay.tp / shard
        state = {k: local * b[k] for k in ("weights", "gradients", "optimizer")}
        # FSDP gathers a block (and prefetches the next) to full size for compute.
        gather = 2 * counts["per_layer"] / lay.tp * b["weights"] if shard > 1 else 0.0
        in_flight = _in_flight(lay, rank, lay.virtual_stages)
        acts = per_layer_act * layers * in_flight
        if lay.recompute:  # one block's full activations live while it is recomputed
            acts += activation_bytes_per_layer(s, Layout(**{**lay.__dict__, "recompute": False}))
        # logits, their fp32 log-softmax (saved by cross-entropy) and its gradient
        logits = tokens * s.vocab_size / lay.tp * (b["activation"] + 8) if last else 0.0
        total = sum(state.values()) + gather + acts + logits
        stages.append({"stage": rank, "layers": layers, "parameters_per_device": local,
                       **{f"{k}_bytes": v for k, v in state.items()},
                       "fsdp_gather_bytes": gather, "activation_bytes": acts,
                       "logits_bytes": logits, "micro_batches_in_flight": in_flight,
                       "total_bytes": total})
    worst = max(stages, key=lambda x: x["total_bytes"])
    return {"worst_stage": worst, "stages": stages if lay.pp <= 16 else None}
