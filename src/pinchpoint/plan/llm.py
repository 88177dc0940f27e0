"""Step time of a dense decoder LLM (Llama 3.1) on a layout and a system (memory: memory.py).
Arithmetic only; nothing is allocated.

Per micro-batch and GPU, for each transformer layer on the rank (tokens = micro_batch x
seq_len / cp, every matmul split tp ways):
- matmuls: 6 x linear parameters x tokens (forward + two backward GEMMs) at the precision's
  achieved peak; attention: 6 x seq_len x tokens x heads x head_dim (causal half of QK^T and
  PV, forward + backward) at the attention precision, each pass at least as long as softmax's
  exponentials on the SFUs (compute.attention_s);
- memory-bound kernels: norms, residual adds, RoPE, SwiGLU, read and written in BF16 forward
  and twice that backward;
- TP (sequence parallel): 4 all-gathers / reduce-scatters of the layer input forward and 4
  backward on the tp group; CP (ring attention): K and V passed cp - 1 times forward, K, V and
  their gradients backward; PP: activations and their gradients to the next stage;
- full recompute adds one more forward (matmuls, attention, memory, TP collectives);
- a fixed overhead per layer (calibration.LAYER_OVERHEAD_S: what does not shrink with tokens).
Per step: micro_batches x the slowest rank's micro-batch time, plus the pipeline bubble
((pp - 1) / virtual_stages of it), plus what the data-parallel gradient reduce-scatter and
parameter all-gather (once per step, over dp x cp) leave exposed, plus the optimizer update.

``Layout.stack`` says whose collectives these are: "megatron" (the default: NeMo / Megatron-LM,
what the published results ran, as above) or "fsdp2" (this repository's runner: FSDP2 units
re-gathered per micro-batch, HSDP, TP's ends, see ``_fsdp2_s`` and ``_tp_ends_s``).
``Layout.spans`` places groups other than the mesh order does (parallel/placement.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from pinchpoint.errors import ConfigError
from pinchpoint.plan import calibration, network, pipeline
from pinchpoint.plan.compute import (attention_precision, attention_s, layer_overhead_s,
                                     matmul_s, memory_s)
from pinchpoint.plan.hardware import System
from pinchpoint.plan.rules import STACKS

GIB = 2 ** 30
ACT = 2          # BF16 activations and gradients on the wire
OPTIMIZER_BYTES_PER_PARAM = 30   # AdamW step: fp32 master, m, v read+write, fp32 grad, bf16 out
# Bytes per value of a low-precision GEMM operand, scales included (NVFP4: one FP8 scale per
# 16 values; MXFP4: one E8M0 scale per 32).
LOW_PRECISION_BYTES = {"fp8": 1.0, "mxfp8": 1 + 1 / 32, "nvfp4": 0.5 + 1 / 16,
                       "mxfp4": 0.5 + 1 / 32}
FP32 = 4


@dataclass(frozen=True)
class DecoderShape:
    n_layers: int
    dim: int
    n_heads: int
    n_kv_heads: int
    ffn_dim: int
    vocab_size: int

    @classmethod
    def of(cls, a: Any) -> "DecoderShape":
        return cls(a.n_layers, a.dim, a.n_heads, a.n_kv_heads, a.ffn_dim, a.vocab_size)

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


@dataclass
class Layout:
    """Degrees (as ParallelDims names them), batch, and the planner-only schedule knobs."""
    dp_replicate: int = 1
    dp_shard: int = 1
    tp: int = 1
    pp: int = 1
    cp: int = 1
    micro_batch: int = 1
    global_batch: int = 1
    seq_len: int = 8192
    recompute: bool = False
    precision: str = "bf16"
    schedule: str = "1f1b"
    virtual_stages: int = 1
    embedding_as_layer: bool = False
    loss_as_layer: bool = False
    layers_per_chunk: Optional[list] = None
    overlap: dict = field(default_factory=dict)   # {'data_parallel': 0.9}; missing = calibrated
    nccl_max_ctas: dict = field(default_factory=dict)   # {'dp': 8, 'tp': 8}; missing = uncapped
    # Attention in FP8 (True), BF16 (False), or None: FP8 when the matmuls run in FP8 / 4-bit.
    fp8_attention: Optional[bool] = None
    # The data-parallel parameter all-gather moves FP8 weights (1 byte, not 2): precision fp8.
    fp8_param_gather: bool = False
    stack: str = "megatron"                        # whose collectives: megatron | fsdp2
    # network.Span per group placed against the mesh order ('tp', 'dp' = dp x cp, 'dp_shard',
    # 'dp_replicate'); missing = where the mesh order puts it (network.span)
    spans: dict = field(default_factory=dict)

    def group(self, name: str, size: int, stride: int, domain: int) -> "network.Span":
        return self.spans.get(name) or network.span(size, stride, domain)

    @property
    def dp(self) -> int:
        return self.dp_replicate * self.dp_shard

    @property
    def world(self) -> int:
        return self.dp * self.tp * self.pp * self.cp

    @property
    def micro_batches(self) -> int:
        return max(1, self.global_batch // (self.micro_batch * self.dp))

    accumulation = micro_batches

    def overlap_of(self, kind: str) -> float:
        return overlap_or_calibrated(kind, self.overlap.get(kind))

    def chunks(self, n_layers: int) -> list[int]:
        return pipeline.layers_per_chunk(n_layers, self.pp, self.virtual_stages,
                                         self.embedding_as_layer, self.loss_as_layer,
                                         self.layers_per_chunk)


# --- counts ------------------------------------------------------------------------------------
def parameter_counts(a) -> dict[str, int]:
    s = a if isinstance(a, DecoderShape) else DecoderShape.of(a)
    hd = s.head_dim
    attention = s.dim * s.n_heads * hd * 2 + s.dim * s.n_kv_heads * hd * 2
    mlp = 3 * s.dim * s.ffn_dim
    layer = attention + mlp + 2 * s.dim
    counts = {"embedding": s.vocab_size * s.dim, "output": s.vocab_size * s.dim,
              "final_norm": s.dim, "per_layer": layer, "attention_per_layer": attention,
              "mlp_per_layer": mlp, "layers": layer * s.n_layers}
    counts["total"] = counts["embedding"] + counts["output"] + counts["final_norm"] + \
        counts["layers"]
    return counts


def model_flops_per_sequence(a, seq_len: int) -> float:
    """Training FLOPs of one sequence as MLPerf's NeMo logs them (MODEL_TFLOP_PER_SAMPLE):
    6 x non-embedding parameters x tokens + causal attention, no recompute."""
    s = a if isinstance(a, DecoderShape) else DecoderShape.of(a)
    c = parameter_counts(s)
    return 6 * (c["total"] - c["embedding"]) * seq_len + \
        6 * s.n_layers * seq_len * seq_len * s.n_heads * s.head_dim


def validate_layout(s: DecoderShape, lay: Layout) -> None:
    if s.n_heads % lay.tp or s.ffn_dim % lay.tp:
        raise ConfigError("parallel.tp", lay.tp, f"a divisor of n_heads={s.n_heads} and "
                          f"ffn_dim={s.ffn_dim} (each rank takes whole heads)")
    if lay.seq_len % (lay.tp * lay.cp * (2 if lay.cp > 1 else 1)):
        raise ConfigError("parallel.cp", lay.cp, f"a degree with tp x cp (x2 for load-balanced "
                          f"ring attention) dividing seq_len={lay.seq_len}")
    if lay.global_batch % (lay.micro_batch * lay.dp):
        raise ConfigError("global_batch_size", lay.global_batch,
                          f"a multiple of micro_batch_size x dp = {lay.micro_batch} x {lay.dp}")
    pipeline.check_interleaving(lay.micro_batches, lay.pp, lay.virtual_stages)
    if lay.fp8_param_gather and (lay.precision not in ("fp8", "mxfp8") or
                                 lay.stack != "megatron"):
        raise ConfigError("plan.fp8_param_gather", True,
                          f"false with precision={lay.precision} and stack={lay.stack} (FP8 "
                          "parameters to gather need precision fp8 and the megatron stack)")
    if lay.stack not in STACKS:
        raise ConfigError("plan.stack", lay.stack, " or ".join(STACKS))


def attention_precision_of(lay: Layout, system: System) -> str:
    """The attention kernels' precision for a layout (compute.attention_precision)."""
    return attention_precision(system, lay.precision, lay.fp8_attention)


def overlap_or_calibrated(kind: str, value: Optional[float] = None) -> float:
    """A collective's hidden fraction: ``value`` (a plan.overlap_* input) or the calibrated one."""
    return calibration.OVERLAP[kind] if value is None else float(value)


def tp_layer_s(row_bytes: float, group: "network.Span", system: System,
               max_ctas: Optional[dict], recompute: bool) -> float:
    """Sequence parallelism's collectives of one layer for one micro-batch: attention and MLP
    each gather their input and reduce-scatter their output forward, backward the reverse (4 of
    each, + 2 recomputed), of a ``row_bytes`` buffer on the tp ``group``."""
    capped = network.capped(system, max_ctas, "tp")
    passes = 4 + (2 if recompute else 0)
    return passes * network.all_gather_s(row_bytes, group, capped) + \
        passes * network.reduce_scatter_s(row_bytes, group, capped)


def cp_ring_layer_s(kv_bytes: float, group: "network.Span", system: System,
                    max_ctas: Optional[dict], recompute: bool) -> float:
    """Ring attention's passes of one layer for one micro-batch: K and V (``kv_bytes``) cp - 1
    times forward, K, V and their gradients backward (+ the recomputed forward's)."""
    hops = 3 * (group.size - 1) * (1 + (1 / 3 if recompute else 0))
    return hops * network.send_recv_s(kv_bytes, group.outside > 1,
                                      network.capped(system, max_ctas, "cp"))


def wire_bytes(lay: Layout) -> int:
    """Bytes per activation or gradient value in the collectives: BF16, or FP32 where the
    run computes in FP32 (the CPU proxies)."""
    return FP32 if lay.precision == "fp32" else ACT


# --- per layer, per micro-batch, per GPU -------------------------------------------------------
def layer_flops(s: DecoderShape, lay: Layout) -> dict[str, float]:
    """Training FLOPs (forward + backward) of one transformer layer for one micro-batch on one
    GPU: "gemm", 6 x linear parameters x tokens, and "attention", the causal half of QK^T and
    PV (6 x seq_len x tokens x heads x head_dim), each split tp ways. A non-causal kernel's
    count (torch's FlopCounterMode on scaled_dot_product_attention) is twice "attention"."""
    tokens = lay.micro_batch * lay.seq_len / lay.cp
    linear = parameter_counts(s)["per_layer"] - 2 * s.dim
    return {"gemm": 6 * linear * tokens / lay.tp,
            "attention": 6 * lay.seq_len * tokens * s.n_heads * s.head_dim / lay.tp}


def layer_seconds(a, lay: Layout, system: System) -> dict[str, float]:
    """One layer's terms for one micro-batch on one GPU, before overlap: "compute" (matmuls
    and attention at the achieved fraction of the peak, recompute included), "attention" (its
    share), "memory" (memory-bound kernels), "tp" and "cp" (their collectives)."""
    return _layer_work(a if isinstance(a, DecoderShape) else DecoderShape.of(a), lay, system)


def _layer_work(s: DecoderShape, lay: Layout, system: System) -> dict[str, float]:
    tokens = lay.micro_batch * lay.seq_len / lay.cp
    hd = s.head_dim
    flops = layer_flops(s, lay)
    gemm, attention = flops["gemm"], flops["attention"]
    elements = 10 * s.dim + 2 * (s.n_heads + s.n_kv_heads) * hd + 3 * s.ffn_dim
    mem_bytes = 3 * ACT * elements * tokens / lay.tp + cast_bytes_per_token(s, lay.precision, lay.tp) * tokens
    redo = 1 / 3 if lay.recompute else 0.0
    attn = attention_precision_of(lay, system)
    core = attention_s(attention, system, attn, 4 * hd)
    t = {"compute": matmul_s(gemm, system, lay.precision) * (1 + redo)
         + attention_s(attention, system, attn, 4 * hd, 2 if lay.recompute else 1),
         "attention": core,
         "memory": memory_s(mem_bytes, system) * (1 + redo)}
    t["tp"], t["cp"] = 0.0, 0.0
    if lay.tp > 1:      # gloo's reduce-scatter costs more (network.py)
        t["tp"] = tp_layer_s(tokens * s.dim * wire_bytes(lay),
                             lay.group("tp", lay.tp, 1, system.nvlink_domain), system,
                             lay.nccl_max_ctas, lay.recompute)
    if lay.cp > 1:
        kv = tokens * 2 * s.n_kv_heads * hd * ACT / min(lay.tp, s.n_kv_heads)
        t["cp"] = cp_ring_layer_s(kv, network.span(lay.cp, lay.tp, system.nvlink_domain),
                                  system, lay.nccl_max_ctas, lay.recompute)
    return t


def _tp_ends_s(s: DecoderShape, lay: Layout, system: System,
               tokens: float) -> tuple[float, float]:
    """TP's collectives at the stack's ends as workloads/common/tp.py runs them, per
    micro-batch: (the embedding's, the head's). The embedding is row-parallel into sequence
    shards (a reduce-scatter forward, its gradient gathered back); the head gathers its input
    (its gradient reduce-scattered) and its logits, whole on every rank (no vocab-parallel
    loss)."""
    if lay.tp <= 1:
        return 0.0, 0.0
    group = lay.group("tp", lay.tp, 1, system.nvlink_domain)
    capped = network.capped(system, lay.nccl_max_ctas, "tp")
    row = tokens * s.dim * wire_bytes(lay)
    gather = network.all_gather_s(row, group, capped)
    scatter = network.reduce_scatter_s(row, group, capped)
    logits = network.all_gather_s(tokens * s.vocab_size * wire_bytes(lay), group, capped)
    return gather + scatter, gather + scatter + logits


def _fsdp2_s(counts: dict, layers: int, lay: Layout, system: System) -> float:
    """Data-parallel seconds per step of FSDP2 as parallel/fsdp.py applies it: one unit per
    block, then the root (embedding, final norm, head). Every micro-batch gathers each unit
    forward and each block again backward (the root stays gathered), and reduce-scatters each
    unit's gradients over dp_shard x cp; HSDP then all-reduces each reduced shard over the
    replicas (replication alone: the whole gradient). Weights and gradients move in FP32:
    the runner's FSDP2 has no mixed-precision policy (BF16 is autocast's, in compute)."""
    if lay.pp > 1:
        raise ConfigError("plan.stack", lay.stack, "megatron with pp > 1 (fsdp2 plans pp=1)")
    capped = network.capped(system, lay.nccl_max_ctas, "dp")
    domain = system.nvlink_domain
    shard = lay.group("dp_shard", lay.dp_shard * lay.cp, lay.tp, domain)
    replicas = lay.group("dp_replicate", lay.dp_replicate, lay.tp * lay.cp * lay.dp_shard,
                         domain)
    block = counts["per_layer"] / lay.tp * FP32
    root = (counts["embedding"] + counts["output"] + counts["final_norm"]) / lay.tp * FP32
    t = 0.0
    for nbytes, gathers in [(block, 2)] * layers + [(root, 1)]:
        t += gathers * network.all_gather_s(nbytes, shard, capped) + \
            network.reduce_scatter_s(nbytes, shard, capped) + \
            network.all_reduce_s(nbytes / shard.size, replicas, capped)
    return lay.micro_batches * t


def cast_bytes_per_token(s: DecoderShape, precision: str, tp: int, copies: int = 2) -> float:
    """FP8/4-bit GEMMs read every BF16 input (activations forward, their gradients backward)
    once and write low-precision copies of it: row- and column-wise (Transformer Engine's cast
    + transpose), or one row-wise copy where no weight gradient needs the other (a frozen
    base: ``copies=1``). (2 + copies x q) bytes per input element, for both sides of each of
    the four projections. Memory-bound work that a lower precision does not shrink."""
    q = LOW_PRECISION_BYTES.get(precision)
    if q is None:
        return 0.0
    hd = s.head_dim
    inputs = 4 * s.dim + ((2 * s.n_heads + 2 * s.n_kv_heads) * hd + 3 * s.ffn_dim) / tp
    return inputs * (ACT + copies * q)


def _exposed(comm: float, overlap: float, hideable: float) -> float:
    """What a collective leaves on the critical path: at least (1 - overlap) of it, and all of
    what the compute it overlaps with cannot cover."""
    return max(comm * (1 - overlap), comm - hideable)


def step_terms(a, lay: Layout, system: System) -> dict[str, Any]:
    s = a if isinstance(a, DecoderShape) else DecoderShape.of(a)
    validate_layout(s, lay)
    counts = parameter_counts(s)
    work = _layer_work(s, lay, system)
    tokens = lay.micro_batch * lay.seq_len / lay.cp
    layer = {"compute": work["compute"], "memory": work["memory"],
             "tp": _exposed(work["tp"], lay.overlap_of("tensor_parallel"), work["compute"]),
             "cp": _exposed(work["cp"], lay.overlap_of("context_parallel"), work["attention"]),
             "overhead": layer_overhead_s(1)}
    chunks = lay.chunks(s.n_layers)
    per_rank = pipeline.layers_per_rank(chunks, lay.pp)
    # The output layer + loss on the last chunk's rank, the embedding on rank 0.
    head = {"compute": matmul_s(6 * s.vocab_size * s.dim * tokens / lay.tp, system,
                                lay.precision),
            "memory": memory_s(4 * 4 * s.vocab_size * tokens / lay.tp, system)}
    pp_link = 0.0
    if lay.pp > 1:
        stride = lay.tp * lay.cp * lay.dp
        crosses = network.span(lay.pp, stride, system.nvlink_domain).outside > 1
        one = network.send_recv_s(tokens * s.dim * ACT / lay.tp, crosses,
                                  network.capped(system, lay.nccl_max_ctas, "pp"))
        pp_link = _exposed(2 * lay.virtual_stages * one, lay.overlap_of("pipeline"),
                           layer["compute"])
    ranks = []
    ends_tp = _tp_ends_s(s, lay, system, tokens) if lay.stack == "fsdp2" else (0.0, 0.0)
    rank_tp = []
    for r, n in enumerate(per_rank):
        terms = {k: n * v for k, v in layer.items()}
        last = r == (len(chunks) - 1) % lay.pp
        if last:
            terms["compute"] += head["compute"]
            terms["memory"] += head["memory"]
        terms["pp"] = pp_link
        ends = (ends_tp[0] if r == 0 else 0.0) + (ends_tp[1] if last else 0.0)
        if ends:
            terms["tp"] += _exposed(ends, lay.overlap_of("tensor_parallel"), terms["compute"])
        rank_tp.append(n * work["tp"] + ends)
        ranks.append(terms)
    slowest = max(range(lay.pp), key=lambda r: sum(ranks[r].values()))
    mb = ranks[slowest]
    per_mb = sum(mb.values())
    m = lay.micro_batches
    out = {k: m * v for k, v in mb.items()}
    out["bubble"] = pipeline.bubble_time(per_mb, lay.pp, lay.virtual_stages)
    # Data parallel: one gradient reduce-scatter + one parameter all-gather per step (or one
    # all-reduce: the same bytes), over dp x cp (cp ranks hold the same weights).
    ends = counts["output"] + (counts["embedding"] if lay.pp == 1 else 0)
    rank_params = (max(per_rank) * counts["per_layer"] + ends) / lay.tp
    if lay.stack == "fsdp2":
        dp_comm = _fsdp2_s(counts, max(per_rank), lay, system)
    else:
        dp_group = lay.group("dp", lay.dp * lay.cp, lay.tp, system.nvlink_domain)
        capped = network.capped(system, lay.nccl_max_ctas, "dp")
        dp_bytes = rank_params * wire_bytes(lay)
        gather_bytes = rank_params * (LOW_PRECISION_BYTES["fp8"] if lay.fp8_param_gather
                                      else wire_bytes(lay))
        dp_comm = network.reduce_scatter_s(dp_bytes, dp_group, capped) + \
            network.all_gather_s(gather_bytes, dp_group, capped)
    # The reduce-scatter runs under the last micro-batch's backward and the all-gather under
    # the first one's forward (bucketed by layer): one micro-batch of compute can hide them.
    out["data_parallel"] = _exposed(dp_comm, lay.overlap_of("data_parallel"), mb["compute"])
    shard = lay.dp_shard * lay.cp if lay.dp_shard > 1 else 1
    out["memory"] += memory_s(rank_params / shard * OPTIMIZER_BYTES_PER_PARAM, system)
    q = LOW_PRECISION_BYTES.get(lay.precision)
    if q is not None:   # weights cast once per step, cached across micro-batches
        out["memory"] += memory_s(rank_params * (ACT + 2 * q), system)
    step = sum(out.values())
    return {"step_s": step, "terms_s": out, "per_micro_batch_s": per_mb,
            "micro_batches": m, "slowest_rank": slowest, "layers_per_chunk": chunks,
            "layers_per_rank": per_rank,
            "communication_s": {"tp": m * (rank_tp[slowest] if lay.stack == "fsdp2" else
                                           per_rank[slowest] * work["tp"]),
                                "cp": m * per_rank[slowest] * work["cp"],
                                "data_parallel": dp_comm},
            "model_flops_per_step": model_flops_per_sequence(s, lay.seq_len) * lay.global_batch}
