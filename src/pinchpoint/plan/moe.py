"""Pre-flight plan for a MoE decoder (GPT-OSS, DeepSeek V3) x layout x GPU: total and active
parameters, memory per device, all-to-all and other communication per step, first-order step
time. Arithmetic only; nothing is allocated. Each model's plan.py describes its layers as a
``MoEShape`` (parameters per layer split into replicated and routed-expert parts, per-token
activation widths); this module does the layout arithmetic.

Layout model (the runner's plan: workloads/common/moe_tp.py and each model's parallelize.py):
- tensor parallelism (Megatron-style, sequence parallel) splits attention by heads, the
  embedding, the output head and dense FFNs over tp; it leaves whole the norms, row-parallel
  biases, DeepSeek's MLA down projections and the whole MoE block (router, routed and shared
  experts), which runs on the rank's sequence shard (seq_len / tp tokens);
- non-expert weights are sharded by FSDP over dp_shard;
- routed-expert weights are split by ep, and further sharded over the dp_shard ranks that hold
  the same experts (dp_shard / ep, when dp_shard > ep);
- bytes per parameter: plan/memory.py's (the dense planner's): fp32 4 + 4 + 8; bf16 mixed 2
  bf16 weights + 4 fp32 grads + 12 fp32 master/m/v;
- pipeline stages: the runtime's balanced split (parallel/pipeline.py split_layers, which
  plan/pipeline.py layers_per_chunk reproduces: the first n_layers % pp stages take one more;
  DeepSeek's 61 layers at pp=16 are 13 x 4 then 3 x 3), honouring plan.virtual_stages,
  embedding_as_layer, loss_as_layer and layers_per_chunk.
Activations saved per layer and micro-batch (first order): the block input and norm outputs,
q/k/v and attention output at their real widths, and for a MoE layer the router logits (fp32),
for each of a token's k routed copies the received row, the experts' gate/up output, its
activation and the weighted output; full recompute keeps only each block's input.
TP: per layer and micro-batch, attention gathers its input and reduce-scatters its output
forward, and backward mirrors both (DeepSeek's MLA instead all-reduces the gradient of its
replicated low-rank activations); a dense FFN does the same again, a MoE block nothing; once a
step the MoE parameters' gradients (local tokens' share) are all-reduced over tp.
All-to-all: every MoE layer sends each routed (token, choice) row whose expert lives on another
rank, (ep - 1) / ep of them under uniform routing, once to dispatch and once to combine, and
backward mirrors both; ``bytes`` here is what leaves the device (the figure the links carry).
Seconds: every collective is timed by plan/network.py on its group of the two-level network
(hierarchical algorithms, the communicator's plan.nccl_max_ctas cap, ``gpus_per_nic``, gloo);
``Layout.spans`` ('ep', 'dp_shard', 'dp_replicate', 'expert_replicate', 'tp') places groups
other than the mesh order does.

Step time (``step_terms``), per micro-batch and rank, for each layer on the rank, as plan/llm.py
does for a dense decoder: the matmuls (6 x parameters x tokens: attention split over tp on the
whole sequence, what TP leaves whole on the whole sequence, the MoE block's router and shared
experts on the rank's seq_len / tp tokens, the routed experts at top_k rows per token, the same
on every EP rank under uniform routing) at the precision's calibrated achieved rate; causal
attention (sliding-window layers: window keys per query); memory-bound kernels; the
all-to-all (4 per MoE layer: dispatch and combine forward and backward) over the ep group,
inside the NVLink domain or across it (exposed but for ``Layout.overlap['expert_parallel']``,
default 0: no calibrated overlap); TP collectives (hidden as the dense planner's). Per step:
micro-batches x the slowest stage's micro-batch, the pipeline bubble ((pp - 1) / vp of it), the
data-parallel traffic (FSDP gathers and reduce-scatters of the non-expert parameters over
dp_shard, of the expert parameters over the ranks holding the same experts, HSDP all-reduces)
less what compute hides (calibrated data_parallel overlap), and the optimizer update.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pinchpoint.plan import network, pipeline
from pinchpoint.plan.compute import attention_s, layer_overhead_s, matmul_s, memory_s
from pinchpoint.plan.hardware import System, system_from
from pinchpoint.plan.llm import (ACT, LOW_PRECISION_BYTES, OPTIMIZER_BYTES_PER_PARAM, Layout,
                                 _exposed, attention_precision_of, wire_bytes)
from pinchpoint.plan.memory import _in_flight, bytes_per_param

if TYPE_CHECKING:
    from pinchpoint.plan.result import PlanResult
    from pinchpoint.plan.rules import MLPerfRules

GIB = 2 ** 30


@dataclass
class MoEShape:
    """One model's per-layer parameter split and per-token widths (elements)."""
    name: str
    vocab_size: int
    dim: int
    num_experts: int
    top_k: int
    expert_dim: int
    replicated_per_layer: list[int]      # attention, norms, router, shared/dense FFN
    experts_per_layer: list[int]         # routed experts (0 on dense layers)
    attention_widths: int                # q + k + v + attention-output widths per token
    attention_flops_dim: int             # sum over heads of (qk + v) head widths, for scores
    attention_heads: int = 1             # query heads (scores per key: one per head)
    dense_ffn_dims: list[int] = field(default_factory=list)   # dense/shared FFN hidden per layer
    final_norm: int = 0
    # Parts of replicated_per_layer that TP leaves whole on every rank: the MoE block's router
    # and shared experts (their gradients summed over tp each step, as the routed experts'),
    # and the rest (norms, row-parallel biases, MLA down projections). Empty: none.
    moe_block_per_layer: list[int] = field(default_factory=list)
    tp_replicated_per_layer: list[int] = field(default_factory=list)
    # MLA: per-token widths of attention_widths computed whole on every TP rank (the low-rank
    # latents), and the widths whose gradient backward all-reduces over tp (latents + rope key).
    attention_replicated_widths: int = 0
    attention_grad_all_reduce_widths: int = 0
    sequence_balance: bool = False       # balancing loss per sequence (router sums per sequence)
    # keys a query sees on each layer: 0 = causal over the whole sequence, w = sliding window w
    window_per_layer: list[int] = field(default_factory=list)

    @property
    def n_layers(self) -> int:
        return len(self.replicated_per_layer)

    def is_moe(self, layer: int) -> bool:
        return bool(self.experts_per_layer[layer])

    def moe_block(self, layer: int) -> int:
        return self.moe_block_per_layer[layer] if self.moe_block_per_layer else 0

    def tp_local(self, layer: int, tp: int) -> float:
        """Layer's non-routed parameters on one TP rank: the split part / tp + the whole rest."""
        whole = self.moe_block(layer) + \
            (self.tp_replicated_per_layer[layer] if self.tp_replicated_per_layer else 0)
        return (self.replicated_per_layer[layer] - whole) / tp + whole

    def counts(self) -> dict[str, int]:
        embedding = output = self.vocab_size * self.dim
        experts = sum(self.experts_per_layer)
        replicated = sum(self.replicated_per_layer)
        total = embedding + output + self.final_norm + replicated + experts
        active_experts = experts * self.top_k // self.num_experts
        active = total - experts + active_experts
        return {"embedding": embedding, "output": output, "final_norm": self.final_norm,
                "replicated_layers": replicated, "routed_experts": experts, "total": total,
                "active": active, "active_without_embedding": active - embedding,
                "moe_layers": sum(1 for e in self.experts_per_layer if e)}


@dataclass
class MoELayout(Layout):
    """The dense planner's layout plus the expert-parallel degree. Built by hand it plans the
    runner's FSDP2; layout_from gives a full-scale run its reference's stack (megatron)."""
    seq_len: int = 4096
    ep: int = 1
    stack: str = "fsdp2"
    expert_load_imbalance: float = 1.0     # busiest EP rank's routed rows / the mean
    # Megatron's selective recompute (recompute_modules): "mlp" runs each MoE block's forward
    # again in backward, "core_attn" the attention kernel's; full recompute is ``recompute``.
    recompute_modules: tuple = ()

    @property
    def routed_load(self) -> float:
        """The critical rank's routed rows relative to uniform routing (1 without EP)."""
        return self.expert_load_imbalance if self.ep > 1 else 1.0

    @property
    def expert_shards(self) -> int:
        return max(self.ep, self.dp_shard)


def stage_layers(shape: MoEShape, lay: MoELayout, stage: int) -> list[int]:
    """Layers on pipeline rank ``stage``: the chunks of plan/pipeline.py (the runtime's
    balanced split; chunk c on rank c % pp), in schedule order."""
    chunks = lay.chunks(shape.n_layers)
    out, start = [], 0
    for c, n in enumerate(chunks):
        if c % lay.pp == stage:
            out.extend(range(start, start + n))
        start += n
    return out


def last_stage(shape: MoEShape, lay: MoELayout) -> int:
    return (len(lay.chunks(shape.n_layers)) - 1) % lay.pp


def activation_bytes(shape: MoEShape, lay: MoELayout, layer: int) -> float:
    e = bytes_per_param(lay.precision)["activation"]
    tokens = lay.micro_batch * lay.seq_len / lay.cp
    t = lay.tp
    if lay.recompute:
        return tokens * shape.dim * e / t
    # Block input, attention output sum and the MoE block's normed input are sequence shards;
    # the column-parallel projections save the gathered (whole-sequence) normed input: once
    # for attention, once more for a dense FFN. 4 dim-wide tensors at tp = 1.
    width = shape.dim * (2 / t + 1 + (1 / t if shape.is_moe(layer) else 1))
    whole = shape.attention_replicated_widths                # MLA latents: every rank
    width += (shape.attention_widths - whole) / t + whole
    if shape.is_moe(layer):
        k, h = shape.top_k, shape.expert_dim
        routed = shape.num_experts * 4 / e                 # fp32 router logits
        # per routed copy: the received row and the weighted output (dim each), the gate/up
        # output (2h) and the activation (h) that backward reads
        routed += k * (2 * shape.dim + 3 * h)
        width += routed / t                                # the rank's seq_len / tp tokens
    # dense FFN split by columns; shared experts whole on seq_len / tp tokens: / tp either way
    ffn = shape.dense_ffn_dims[layer] if shape.dense_ffn_dims else 0
    width += 4 * ffn / t
    return tokens * width * e


def memory_per_device(shape: MoEShape, lay: MoELayout) -> dict[str, Any]:
    b = bytes_per_param(lay.precision)
    c = shape.counts()
    stages = []
    for stage in range(lay.pp):
        layers = stage_layers(shape, lay, stage)
        first, last = stage == 0, stage == last_stage(shape, lay)
        replicated = sum(shape.tp_local(i, lay.tp) for i in layers) + \
            (first * c["embedding"] + last * c["output"]) / lay.tp + last * c["final_norm"]
        experts = sum(shape.experts_per_layer[i] for i in layers)
        local = replicated / lay.dp_shard + experts / lay.expert_shards
        state = {k: local * b[k] for k in ("weights", "gradients", "optimizer")}
        biggest = max((shape.tp_local(i, lay.tp) +
                       shape.experts_per_layer[i] / lay.ep for i in layers), default=0)
        gather = 2 * biggest * b["weights"] if lay.dp_shard > 1 else 0.0
        if lay.stack == "megatron":
            # distributed optimizer: weights and the BF16 gradient buffer (NeMo's
            # grad_reduce_in_fp32=False) whole on every dp rank, only the optimizer state (with
            # its fp32 master copy) sharded over dp (the experts' over their expert-dp ranks)
            whole = replicated + experts / lay.ep
            state["weights"] = whole * b["weights"]
            state["gradients"] = whole * wire_bytes(lay)
            gather = 0.0
        in_flight = _in_flight(lay, stage, lay.virtual_stages)
        acts = sum(activation_bytes(shape, lay, i) for i in layers) * in_flight
        if lay.recompute and len(layers):
            full = MoELayout(**{**lay.__dict__, "recompute": False})
            acts += max(activation_bytes(shape, full, i) for i in layers)
        # The head is column-parallel but gathers whole logits (output_layouts=Replicate, no
        # loss parallel): every TP rank holds them, and cross-entropy's fp32 copies.
        tokens = lay.micro_batch * lay.seq_len / lay.cp
        logits = tokens * shape.vocab_size * (b["activation"] + 8) if last else 0.0
        total = sum(state.values()) + gather + acts + logits
        stages.append({"stage": stage, "layers": len(layers), "parameters_per_device": local,
                       "expert_parameters_per_device": experts / lay.expert_shards,
                       **{f"{k}_bytes": v for k, v in state.items()},
                       "fsdp_gather_bytes": gather, "activation_bytes": acts,
                       "logits_bytes": logits, "micro_batches_in_flight": in_flight,
                       "total_bytes": total})
    worst = max(stages, key=lambda s: s["total_bytes"])
    return {"worst_stage": worst, "stages": stages if lay.pp <= 16 else None}


# Which plan.nccl_max_ctas communicator caps each group (ep has no NeMo communicator cap).
_CAPPED_BY = {"dp_shard": "dp", "expert_shard": "dp", "dp_replicate": "dp",
              "expert_replicate": "dp", "tp": "tp", "ep": None}


def communication_per_step(shape: MoEShape, lay: MoELayout, gpu,
                           stage: int = 0) -> dict[str, dict[str, float]]:
    """Bytes leaving each device per optimizer step, per collective, and seconds on its group
    of the two-level network (plan/network.py; mesh order pp, dp_replicate, dp_shard, cp, tp:
    tp innermost; ep borrows dp_shard ranks), for pipeline rank ``stage``."""
    system = system_from(gpu)
    b = bytes_per_param(lay.precision)
    e = wire_bytes(lay)
    m = lay.accumulation
    layers = stage_layers(shape, lay, stage)
    last = stage == last_stage(shape, lay)
    out: dict[str, dict[str, float]] = {}
    groups = _groups(lay, system)

    def add(name: str, nbytes: float, *parts) -> None:
        """``parts``: (kind, buffer per rank, group) of the collectives that move ``nbytes``."""
        seconds = sum(network.collective_s(kind, buffer, groups[group],
                                           network.capped(system, lay.nccl_max_ctas,
                                                          _CAPPED_BY[group])
                                           if _CAPPED_BY[group] else system)
                      for kind, buffer, group in parts)
        out[name] = {"bytes": nbytes, "seconds": seconds}

    moe_layers = sum(1 for i in layers if shape.experts_per_layer[i])
    if lay.ep > 1 and moe_layers:
        tokens = lay.micro_batch * lay.seq_len / lay.cp / lay.tp
        rows_off = tokens * shape.top_k * (lay.ep - 1) / lay.ep
        one_way = rows_off * shape.dim * e * moe_layers * m
        one_way *= lay.routed_load
        handed = tokens * shape.top_k * shape.dim * e * lay.routed_load  # buffer per rank
        # forward dispatch + backward of combine go one way, combine + backward of dispatch back
        one = network.all_to_all_s(handed, groups["ep"], system)
        for name in ("all_to_all_dispatch", "all_to_all_combine"):
            out[name] = {"bytes": 2 * one_way, "seconds": 2 * moe_layers * m * one}
    c = shape.counts()
    blocks = sum(shape.tp_local(i, lay.tp) for i in layers)
    # the root FSDP unit (parallel/fsdp.py): the embedding, and without PP the head and norm
    first = stage == 0
    root = (first * c["embedding"] + (c["output"] if lay.pp == 1 else 0)) / lay.tp + \
        (c["final_norm"] if lay.pp == 1 else 0)
    if lay.pp > 1 and last:
        blocks += c["output"] / lay.tp + c["final_norm"]
    replicated = blocks + root
    experts = sum(shape.experts_per_layer[i] for i in layers) / lay.ep
    # FSDP2 as the runner applies it: without PP every micro-batch re-gathers each block for
    # forward and backward (the root once: it stays gathered) and reduce-scatters its
    # gradients; with PP the gathered weights stay for the step (reshard_after_forward=False):
    # one gather and one reduce-scatter per step. Megatron's distributed optimizer: one
    # reduce-scatter of the BF16 gradients and one all-gather of the updated parameters per
    # step (FP8 ones with fp8_param_gather), as the dense planner charges it.
    once = lay.pp > 1 or lay.stack == "megatron"
    gathers, scatters = (1, 1) if once else (2 * m, m)
    if lay.stack == "megatron":
        b = {**b, "weights": LOW_PRECISION_BYTES["fp8"] if lay.fp8_param_gather else e,
             "gradients": e}
    if lay.dp_shard > 1:
        ring = (lay.dp_shard - 1) / lay.dp_shard
        gathered = (gathers * blocks + scatters * root) * b["weights"] if not once else \
            replicated * b["weights"]
        scattered = scatters * replicated * b["gradients"]
        add("fsdp_all_gather", gathered * ring, ("all_gather", gathered, "dp_shard"))
        add("fsdp_reduce_scatter", scattered * ring, ("reduce_scatter", scattered, "dp_shard"))
    replicas = lay.dp_shard // lay.ep if lay.dp_shard > lay.ep else 1
    if replicas > 1:
        ring = (replicas - 1) / replicas
        gathered, scattered = gathers * experts * b["weights"], scatters * experts * \
            b["gradients"]
        add("expert_fsdp_all_gather", gathered * ring, ("all_gather", gathered, "expert_shard"))
        add("expert_fsdp_reduce_scatter", scattered * ring,
            ("reduce_scatter", scattered, "expert_shard"))
    if lay.dp_replicate > 1:
        dense, routed = replicated / lay.dp_shard, experts / max(1, replicas)
        shard = dense + routed
        # the experts' replicas are the ranks holding the same experts: the replicate group
        # unless EP is placed across it (then they may share a node)
        add("ddp_all_reduce", 2 * shard * b["gradients"] * (lay.dp_replicate - 1) /
            lay.dp_replicate, ("all_reduce", dense * b["gradients"], "dp_replicate"),
            ("all_reduce", routed * b["gradients"], "expert_replicate"))
    if lay.tp > 1:
        ring = (lay.tp - 1) / lay.tp
        for name, nbytes in tp_activation_bytes(shape, lay, layers, head=last,
                                                embedding=first).items():
            kind = name.removeprefix("tp_").removeprefix("router_stats_")
            handed = m * nbytes / (2 * ring if kind == "all_reduce" else ring)
            add(name, m * nbytes, (kind, handed, "tp"))
        # Once a step (moe_llm.clip_gradients): the MoE blocks ran on sequence shards, so
        # their gradients (FSDP or EP shards) hold one shard's share: summed in one all-reduce.
        ring = 2 * (lay.tp - 1) / lay.tp
        grads = moe_parameters_per_device(shape, lay, layers) * b["gradients"]
        add("tp_moe_gradient_all_reduce", grads * ring, ("all_reduce", grads, "tp"))
    if lay.pp > 1:
        act = lay.micro_batch * lay.seq_len / lay.cp * shape.dim * e / lay.tp
        crosses = network.span(lay.pp, lay.world // lay.pp, system.nvlink_domain).outside > 1
        one = network.send_recv_s(act, crosses, network.capped(system, lay.nccl_max_ctas, "pp"))
        hops = 2 * lay.virtual_stages * m      # activations forward, their gradients back
        out["pp_send_recv"] = {"bytes": 2 * m * act, "seconds": hops * one}
    return out


def _groups(lay: MoELayout, system: System) -> dict[str, "network.Span"]:
    """Each communicator's group on the NVLink domains, in mesh order (tp innermost, ep
    borrowing consecutive dp_shard ranks) unless ``lay.spans`` places it."""
    domain = system.nvlink_domain
    inner = lay.tp * lay.cp
    replicas = lay.dp_shard // lay.ep if lay.dp_shard > lay.ep else 1
    sizes = {"tp": (lay.tp, 1), "ep": (lay.ep, inner), "dp_shard": (lay.dp_shard, inner),
             "expert_shard": (replicas, inner * lay.ep),
             "dp_replicate": (lay.dp_replicate, inner * lay.dp_shard)}
    out = {name: lay.group(name, size, stride, domain) for name, (size, stride) in sizes.items()}
    out["expert_replicate"] = lay.spans.get("expert_replicate") or out["dp_replicate"]
    return out


def moe_parameters_per_device(shape: MoEShape, lay: MoELayout, layers) -> float:
    """Parameters of the MoE blocks (router, shared and routed experts) in ``layers`` that one
    rank holds: router and shared experts FSDP-sharded, routed experts split by EP (+ FSDP)."""
    return sum(shape.moe_block(i) / lay.dp_shard + shape.experts_per_layer[i] /
               lay.expert_shards for i in layers)


def tp_activation_bytes(shape: MoEShape, lay: MoELayout, layers, head: bool,
                        embedding: bool = True) -> dict[str, float]:
    """Bytes one rank sends per micro-batch in the TP group's activation collectives for
    ``layers`` (+ the embedding, + the output head if ``head``): forward, backward, and the
    forward again under full recompute. A gather or reduce-scatter of a whole-sequence buffer
    sends (tp - 1) / tp of it, an all-reduce twice that (ring)."""
    e = wire_bytes(lay)
    tokens = lay.micro_batch * lay.seq_len / lay.cp
    ring = (lay.tp - 1) / lay.tp
    row = tokens * shape.dim * e * ring          # one gather or scatter of the residual stream
    fwd = 2 if lay.recompute else 1
    gather, scatter, reduce = 0.0, 0.0, 0.0
    for i in layers:
        # attention: gather in, reduce-scatter out; backward gathers wo's output gradient and
        # reduce-scatters the input's, or (MLA) all-reduces its latents' and rope key's
        gather += (fwd + 1) * row
        scatter += fwd * row
        if shape.attention_grad_all_reduce_widths:
            reduce += 2 * ring * tokens * shape.attention_grad_all_reduce_widths * e
        else:
            scatter += row
        if not shape.is_moe(i):                  # a dense FFN: the same again
            gather += (fwd + 1) * row
            scatter += (fwd + 1) * row
    # embedding: row-parallel into shards (reduce-scatter), its gradient gathered back
    if embedding:
        gather, scatter = gather + row, scatter + row
    if head:   # gathers its input and its logits (whole on every rank); input grad scattered
        gather += row + tokens * shape.vocab_size * e * ring
        scatter += row
    moe = sum(1 for i in layers if shape.is_moe(i))
    # router statistics: per-expert loads and probability sums (per sequence, or per
    # micro-batch) + entropy and drops, fp32, summed over the shards each MoE forward
    groups = lay.micro_batch if shape.sequence_balance else 1
    stats = fwd * moe * 2 * ring * (2 * shape.num_experts * groups + 2) * 4
    return {"tp_all_gather": gather, "tp_reduce_scatter": scatter, "tp_all_reduce": reduce,
            "tp_router_stats_all_reduce": stats}


def layer_flops(shape: MoEShape, lay: MoELayout, layer: int) -> dict[str, float]:
    """Training FLOPs (forward + backward, no recompute) of one layer for one micro-batch on
    one rank: "gemm" (attention's projections split over tp on the whole sequence, what TP
    leaves whole on the whole sequence, the router and shared experts on seq_len / tp tokens,
    the routed experts at top_k rows per token: the same on every EP rank under uniform
    routing) and "attention" (causal, or the sliding window's keys)."""
    tokens = lay.micro_batch * lay.seq_len / lay.cp
    t = lay.tp
    block = shape.moe_block(layer)
    whole = shape.tp_replicated_per_layer[layer] if shape.tp_replicated_per_layer else 0
    split = shape.replicated_per_layer[layer] - block - whole
    routed = shape.experts_per_layer[layer] / shape.num_experts * shape.top_k * lay.routed_load
    gemm = 6 * tokens * (split / t + whole + (block + routed) / t)
    mlp = 6 * tokens * (block + routed) / t
    window = shape.window_per_layer[layer] if shape.window_per_layer else 0
    keys = min(window, lay.seq_len / 2) if window else lay.seq_len / 2
    # causal half of QK^T and PV forward + backward: 12 x keys x (qk + v widths) / 2 per token
    attention = 6 * keys * tokens * shape.attention_flops_dim / t
    return {"gemm": gemm, "attention": attention, "mlp": mlp}


def _layer_seconds(shape: MoEShape, lay: MoELayout, system: System,
                   layer: int) -> dict[str, float]:
    tokens = lay.micro_batch * lay.seq_len / lay.cp
    f = layer_flops(shape, lay, layer)
    redo = 1 / 3 if lay.recompute else 0.0
    att_prec = attention_precision_of(lay, system)
    ffn = shape.dense_ffn_dims[layer] if shape.dense_ffn_dims else 0
    routed = shape.top_k * (2 * shape.dim + 3 * shape.expert_dim) * lay.routed_load \
        if shape.is_moe(layer) else 0
    # read and written BF16 forward, twice that backward: norms, residuals, activations,
    # the routed rows' permute/unpermute and SwiGLU
    elements = 10 * shape.dim + shape.attention_widths + 3 * ffn + routed
    mem = 3 * ACT * elements * tokens / lay.tp
    q = LOW_PRECISION_BYTES.get(lay.precision)
    if q is not None:   # casts of every GEMM input (Transformer Engine's cast + transpose)
        inputs = 4 * shape.dim + (shape.attention_widths + 3 * ffn + routed) / lay.tp
        mem += inputs * (ACT + 2 * q) * tokens
    score = 2 * shape.attention_flops_dim / shape.attention_heads    # forward FLOPs per score
    # full recompute, or selective recompute of core_attn: one more attention forward
    attention_again = lay.recompute or "core_attn" in lay.recompute_modules
    compute = matmul_s(f["gemm"], system, lay.precision) * (1 + redo) + \
        attention_s(f["attention"], system, att_prec, score, 2 if attention_again else 1)
    flops = (f["gemm"] + f["attention"]) * (1 + redo)
    if not lay.recompute:          # selective: one more forward (a third) of the modules named
        if "mlp" in lay.recompute_modules:
            compute += matmul_s(f["mlp"] / 3, system, lay.precision)
            mem += 3 * ACT * routed * tokens / lay.tp / 3
            flops += f["mlp"] / 3
        if "core_attn" in lay.recompute_modules:    # its time: attention_again above
            flops += f["attention"] / 3
    return {"compute": compute, "memory": memory_s(mem, system) * (1 + redo), "flops": flops}


def step_terms(shape: MoEShape, lay: MoELayout, gpu) -> dict[str, Any]:
    """Seconds per optimizer step by term on the slowest pipeline rank (see the module
    docstring): compute, memory, all_to_all, tp, pp, overhead (per layer, an MoE layer's
    more: calibration.LAYER_OVERHEAD_S, MOE_LAYER_OVERHEAD_S), bubble, data_parallel."""
    system = system_from(gpu)
    pipeline.check_interleaving(lay.accumulation, lay.pp, lay.virtual_stages)
    m = lay.accumulation
    tokens = lay.micro_batch * lay.seq_len / lay.cp
    c = shape.counts()
    ep_overlap = float(lay.overlap.get("expert_parallel") or 0.0)
    per_layer = [_layer_seconds(shape, lay, system, i) for i in range(shape.n_layers)]
    ranks = []
    for r in range(lay.pp):
        layers = stage_layers(shape, lay, r)
        last = r == last_stage(shape, lay)
        comm = communication_per_step(shape, lay, system, r)
        compute = sum(per_layer[i]["compute"] for i in layers)
        memory = sum(per_layer[i]["memory"] for i in layers)
        if last:   # output layer + loss
            compute += matmul_s(6 * c["output"] * tokens / lay.tp, system, lay.precision)
            memory += memory_s(4 * 4 * shape.vocab_size * tokens / lay.tp, system)
        a2a = sum(v["seconds"] for k, v in comm.items() if k.startswith("all_to_all"))
        tp = sum(v["seconds"] for k, v in comm.items()
                 if k.startswith("tp_") and k != "tp_moe_gradient_all_reduce")
        pp = comm.get("pp_send_recv", {}).get("seconds", 0.0)
        terms = {"compute": m * compute, "memory": m * memory,
                 "all_to_all": _exposed(a2a, ep_overlap, m * compute),
                 "tp": _exposed(tp, lay.overlap_of("tensor_parallel"), m * compute),
                 "pp": _exposed(pp, lay.overlap_of("pipeline"), m * compute),
                 "overhead": m * layer_overhead_s(len(layers),
                                                  sum(shape.is_moe(i) for i in layers))}
        per_mb = sum(terms.values()) / m
        terms["bubble"] = pipeline.bubble_time(per_mb, lay.pp, lay.virtual_stages)
        dp = sum(v["seconds"] for k, v in comm.items() if k.startswith(("fsdp", "expert_fsdp",
                                                                         "ddp", "tp_moe")))
        # without PP FSDP2 re-gathers under every micro-batch; with PP (and Megatron's
        # distributed optimizer) once a step, under the first micro-batch's forward and the
        # last one's backward
        hideable = m * compute if lay.pp == 1 and lay.stack == "fsdp2" else compute
        terms["data_parallel"] = _exposed(dp, lay.overlap_of("data_parallel"), hideable)
        ranks.append((terms, comm, per_mb))
    slowest = max(range(lay.pp), key=lambda r: sum(ranks[r][0].values()))
    terms, comm, per_mb = ranks[slowest]
    mem = memory_per_device(shape, lay)
    stages = mem["stages"] or [mem["worst_stage"]]
    params = max(st["parameters_per_device"] for st in stages)
    terms["memory"] += memory_s(params * OPTIMIZER_BYTES_PER_PARAM, system)
    step = sum(terms.values())
    flops = model_flops_per_step(shape, lay)
    return {"step_s": step, "terms_s": terms, "per_micro_batch_s": per_mb,
            "micro_batches": m, "slowest_rank": slowest,
            "layers_per_chunk": lay.chunks(shape.n_layers),
            "layers_per_rank": [len(stage_layers(shape, lay, r)) for r in range(lay.pp)],
            "communication_per_step": comm,
            "all_to_all_s": sum(v["seconds"] for k, v in comm.items()
                                if k.startswith("all_to_all")),
            "model_flops_per_step": flops,
            "model_tflops_per_gpu": flops / step / lay.world / 1e12}


def model_flops_per_step(shape: MoEShape, lay: MoELayout) -> float:
    """6 x active non-embedding parameters x tokens + causal attention (windows honoured), no
    recompute, as MLPerf counts model FLOPs."""
    c = shape.counts()
    tokens = lay.global_batch * lay.seq_len
    attention = 0.0
    for i in range(shape.n_layers):
        window = shape.window_per_layer[i] if shape.window_per_layer else 0
        keys = min(window, lay.seq_len / 2) if window else lay.seq_len / 2
        attention += 6 * keys * tokens * shape.attention_flops_dim
    return 6 * c["active_without_embedding"] * tokens + attention


def eval_seconds(step: dict, lay: MoELayout, eval_samples: int) -> float:
    """One evaluation: a forward pass (a third of forward + backward) over eval_samples spread
    like a training batch, plus one pipeline fill (as plan/llm.py's planners)."""
    t = step["terms_s"]
    forward = sum(t[k] for k in ("compute", "memory", "tp", "pp", "all_to_all", "overhead")) / 3
    return eval_samples / lay.global_batch * forward + t["bubble"] / 3


def plan(shape: MoEShape, lay: MoELayout, gpu, rules: "MLPerfRules | None" = None,
         ruleset: str = "6.0.0", eval_every: float | None = None, eval_samples: int = 0,
         init_s: float = 0.0, below_smallest_rcp: bool = False) -> dict[str, Any]:
    """Parameters, memory per device, communication and step time by term; with ``rules``
    (the workload's MLPerfRules: its RCP file's name, eval skip) also time-to-train."""
    from pinchpoint.plan.time_to_train import assemble, dominant, pinch
    system = system_from(gpu)
    mem = memory_per_device(shape, lay)
    step = step_terms(shape, lay, system)
    need = mem["worst_stage"]["total_bytes"]
    out = {"gpu": system.name, "world_size": lay.world, "global_batch": lay.global_batch,
           "precision": lay.precision, "parameters": shape.counts(),
           "layout": dict(lay.__dict__, world=lay.world, accumulation=lay.accumulation),
           "memory_per_device": mem, "memory_needed_gib": need / GIB,
           "memory_usable_gib": system.usable_bytes / GIB, "fits": need <= system.usable_bytes,
           "communication_per_step": step["communication_per_step"],
           "step_s": step["step_s"], "terms_s": step["terms_s"],
           "dominant": dominant(step["terms_s"]), "pinch": pinch(step["terms_s"]),
           "step": step, "layers_per_chunk": step["layers_per_chunk"],
           "model_tflops_per_gpu": step["model_tflops_per_gpu"]}
    if rules is not None:
        out["time_to_train"] = assemble(rules, lay.global_batch, ruleset, step["step_s"],
                                        eval_seconds(step, lay, eval_samples),
                                        eval_every or lay.global_batch, init_s,
                                        "model.full.global_batch_size", below_smallest_rcp)
    return out


def not_fitting_message(p: dict, gpu) -> str:
    reserved = system_from(gpu).reserved_gib
    w = p["memory_per_device"]["worst_stage"]
    parts = ", ".join(f"{k.removesuffix('_bytes')} {w[k] / GIB:.1f}" for k in
                      ("weights_bytes", "gradients_bytes", "optimizer_bytes",
                       "fsdp_gather_bytes", "activation_bytes", "logits_bytes"))
    return (f"at least {p['memory_needed_gib'] + reserved:.1f} GiB per device "
            f"(GiB: {parts}; +{reserved} reserved): raise parallel.ep/pp/"
            "dp_shard, set recompute=true or lower micro_batch_size")


# --- from a run config ---------------------------------------------------------------------------
def layout_from(run, reference_stack: str = "megatron") -> MoELayout:
    """The layout of a run config, honouring the ``plan`` settings (precision, virtual stages,
    layer split, overlaps, NCCL CTA caps, stack) as the dense planner does. A run the runner
    executes (not the full scale) is planned as the runner shards it: fsdp2."""
    from pinchpoint.plan import config_access as access
    a = access.scale(run)
    d = access.degrees(run.parallel)
    p = access.plan_settings(run)
    return MoELayout(dp_replicate=d.dp_replicate, dp_shard=d.dp_shard, tp=d.tp, pp=d.pp,
                     cp=d.cp, ep=d.ep, micro_batch=a.micro_batch_size,
                     global_batch=a.global_batch_size, seq_len=a.seq_len,
                     recompute=getattr(a, "recompute", False),
                     precision=p.precision or getattr(a, "precision", "bf16"),
                     schedule=getattr(run.model, "pipeline_schedule", "1f1b"),
                     **access.layout_settings(p),
                     fp8_attention=getattr(p, "fp8_attention", None),
                     fp8_param_gather=bool(getattr(p, "fp8_param_gather", False)),
                     stack=access.full_scale_stack(run, reference_stack),
                     expert_load_imbalance=_imbalance(p),
                     recompute_modules=_recompute_modules(p))


RECOMPUTE_MODULES = ("mlp", "core_attn")


def _recompute_modules(p) -> tuple:
    from pinchpoint.errors import ConfigError
    names = tuple(getattr(p, "recompute_modules", None) or ())
    for name in names:
        if name not in RECOMPUTE_MODULES:
            raise ConfigError("plan.recompute_modules", list(names),
                              f"a list of {' and '.join(RECOMPUTE_MODULES)} (Megatron's "
                              "selective recompute; model.<scale>.recompute is the full one)")
    return names


def _imbalance(p) -> float:
    from pinchpoint.errors import ConfigError
    value = getattr(p, "expert_load_imbalance", None)
    value = 1.0 if value is None else float(value)      # 0 is refused, not read as 1
    if value < 1.0:
        raise ConfigError("plan.expert_load_imbalance", value, "at least 1 (the busiest EP "
                          "rank's routed rows over the mean)")
    return value


def describe(shape: MoEShape, run, rules: "MLPerfRules",
             extra: dict | None = None) -> "PlanResult":
    """The full-scale plan of a run config; ``rules``: its workload's MLPerfRules."""
    from pinchpoint.plan import config_access as access
    from pinchpoint.plan.result import from_parts
    a = access.scale(run)
    out = {**(extra or {}),
           **plan(shape, layout_from(run, rules.reference_stack), run.gpu, rules,
                  access.ruleset(run),
                  rules.eval_every_samples(run), a.eval_samples,
                  access.plan_settings(run).init_in_clock_s, access.below_smallest_rcp(run))}
    return from_parts(out, out["memory_per_device"]["worst_stage"], model=run.model.name,
                      scale=run.model.scale)


def check_fits(shape: MoEShape, run) -> None:
    """A full-scale or GPU run must fit the configured GPU; a CPU proxy this host's free memory
    (fp32, all ranks together). Raises ConfigError with the memory it needs."""
    from pinchpoint.errors import ConfigError
    lay = layout_from(run)
    if run.model.scale == "full" or run.train.device == "cuda":
        p = plan(shape, lay, run.gpu)
        if not p["fits"]:
            raise ConfigError("gpu.memory_gib", run.gpu.memory_gib,
                              not_fitting_message(p, run.gpu))
        return
    import psutil
    lay.precision = "fp32"
    need = memory_per_device(shape, lay)["worst_stage"]["total_bytes"] * lay.world
    have = psutil.virtual_memory().available
    if need > have:
        raise ConfigError("model.scale", run.model.scale,
                          f"a scale that fits here: {need / GIB:.1f} GiB across {lay.world} "
                          f"ranks, {have / GIB:.1f} GiB free (plan it with plan_only=true)")
