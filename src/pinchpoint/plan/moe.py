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
- bytes per parameter as for Llama: fp32 4 + 4 + 8; bf16 mixed 2 bf16 weights + 4 fp32 grads +
  12 fp32 master/m/v.
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
Seconds: bytes over the link of the span's level; where the System says how bytes reach the
wire (``gpus_per_nic``, ``collectives``) or the layout places groups (``Layout.spans``: 'ep',
'dp_shard', 'dp_replicate', 'expert_replicate', 'tp'), each collective is timed by
plan/network.py on its group instead.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pinchpoint.plan import network
from pinchpoint.plan.hardware import system_from
from pinchpoint.plan.llm import Layout

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
    """The dense planner's layout plus the expert-parallel degree."""
    seq_len: int = 4096
    ep: int = 1

    @property
    def expert_shards(self) -> int:
        return max(self.ep, self.dp_shard)


def bytes_per_param(precision: str) -> dict[str, int]:
    if precision == "fp32":
        return {"weights": 4, "gradients": 4, "optimizer": 8, "activation": 4}
    return {"weights": 2, "gradients": 4, "optimizer": 12, "activation": 2}


def stage_layers(shape: MoEShape, lay: MoELayout, stage: int) -> range:
    per = -(-shape.n_layers // lay.pp)
    return range(stage * per, min(shape.n_layers, (stage + 1) * per))


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
        first, last = stage == 0, stage == lay.pp - 1
        replicated = sum(shape.tp_local(i, lay.tp) for i in layers) + \
            (first * c["embedding"] + last * c["output"]) / lay.tp + last * c["final_norm"]
        experts = sum(shape.experts_per_layer[i] for i in layers)
        local = replicated / lay.dp_shard + experts / lay.expert_shards
        state = {k: local * b[k] for k in ("weights", "gradients", "optimizer")}
        biggest = max((shape.tp_local(i, lay.tp) +
                       shape.experts_per_layer[i] / lay.ep for i in layers), default=0)
        gather = 2 * biggest * b["weights"] if lay.dp_shard > 1 else 0.0
        in_flight = 1 if lay.pp == 1 else (lay.accumulation if lay.schedule == "gpipe"
                                            else min(lay.accumulation, lay.pp - stage))
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


def _link(span: int, gpu) -> float:
    """Bytes/s per device for a group of ``span`` consecutive ranks: NVLink inside the NVLink
    domain (8 on HGX, 72 on NVL72), the NIC beyond it."""
    per_node = _get(gpu, "nvlink_domain") or _get(gpu, "gpus_per_node")
    gbs = _get(gpu, "intra_node_gb_per_s") if span <= per_node else _get(gpu, "inter_node_gb_per_s")
    return gbs * 1e9


def _get(obj, key, default=None):
    return obj.get(key, default) if isinstance(obj, dict) else getattr(obj, key, default)


def achieved_fraction(gpu, precision: str) -> float:
    """``gpu.mfu`` if set, else the calibrated fraction of peak for the architecture
    (pinchpoint.plan.calibration), as the dense planners use."""
    from pinchpoint.plan.calibration import ACHIEVED_FRACTION
    if _get(gpu, "mfu"):
        return float(_get(gpu, "mfu"))
    kind = "bf16" if precision in ("bf16", "fp32") else precision
    arch = _get(gpu, "architecture", "hopper")
    return ACHIEVED_FRACTION.get((arch, kind), ACHIEVED_FRACTION[("hopper", "bf16")])


def communication_per_step(shape: MoEShape, lay: MoELayout, gpu) -> dict[str, dict[str, float]]:
    """Bytes leaving each device per optimizer step, per collective, and seconds on its link
    (mesh order pp, dp_replicate, dp_shard, cp, tp: tp innermost; ep borrows dp_shard ranks)."""
    b = bytes_per_param(lay.precision)
    e = b["activation"]
    m = lay.accumulation
    layers = stage_layers(shape, lay, 0)
    out: dict[str, dict[str, float]] = {}
    groups = _groups(lay, gpu)
    wire = system_from(gpu) if network.states_wire(gpu) or lay.spans else None

    def add(name: str, nbytes: float, span: int, *parts) -> None:
        """``parts``: (kind, buffer per rank, group) of the collectives that move ``nbytes``."""
        seconds = nbytes / _link(span, gpu) if nbytes else 0.0
        if wire is not None and parts:
            seconds = sum(network.collective_s(kind, buffer, groups[group], wire)
                          for kind, buffer, group in parts)
        out[name] = {"bytes": nbytes, "seconds": seconds}

    moe_layers = sum(1 for i in layers if shape.experts_per_layer[i])
    if lay.ep > 1 and moe_layers:
        tokens = lay.micro_batch * lay.seq_len / lay.cp / lay.tp
        rows_off = tokens * shape.top_k * (lay.ep - 1) / lay.ep
        one_way = rows_off * shape.dim * e * moe_layers * m
        handed = 2 * tokens * shape.top_k * shape.dim * e * moe_layers * m   # kept rows too
        # forward dispatch + backward of combine go one way, combine + backward of dispatch back
        for name in ("all_to_all_dispatch", "all_to_all_combine"):
            add(name, 2 * one_way, lay.ep * lay.cp * lay.tp, ("all_to_all", handed, "ep"))
    c = shape.counts()
    blocks = sum(shape.tp_local(i, lay.tp) for i in layers)
    # the root FSDP unit (parallel/fsdp.py): the embedding, and without PP the head and norm
    root = (c["embedding"] + (c["output"] if lay.pp == 1 else 0)) / lay.tp + \
        (c["final_norm"] if lay.pp == 1 else 0)
    replicated = blocks + root
    experts = sum(shape.experts_per_layer[i] for i in layers) / lay.ep
    # FSDP2 as the runner applies it: without PP every micro-batch re-gathers each block for
    # forward and backward (the root once: it stays gathered) and reduce-scatters its
    # gradients; with PP the gathered weights stay for the step (reshard_after_forward=False):
    # one gather and one reduce-scatter per step.
    gathers, scatters = (2 * m, m) if lay.pp == 1 else (1, 1)
    if lay.dp_shard > 1:
        ring = (lay.dp_shard - 1) / lay.dp_shard
        span = lay.tp * lay.cp * lay.dp_shard
        gathered = (gathers * blocks + scatters * root) * b["weights"] if lay.pp == 1 else \
            replicated * b["weights"]
        scattered = scatters * replicated * b["gradients"]
        add("fsdp_all_gather", gathered * ring, span, ("all_gather", gathered, "dp_shard"))
        add("fsdp_reduce_scatter", scattered * ring, span,
            ("reduce_scatter", scattered, "dp_shard"))
    replicas = lay.dp_shard // lay.ep if lay.dp_shard > lay.ep else 1
    if replicas > 1:
        ring = (replicas - 1) / replicas
        span = lay.tp * lay.cp * lay.dp_shard
        gathered, scattered = gathers * experts * b["weights"], scatters * experts * \
            b["gradients"]
        add("expert_fsdp_all_gather", gathered * ring, span,
            ("all_gather", gathered, "expert_shard"))
        add("expert_fsdp_reduce_scatter", scattered * ring, span,
            ("reduce_scatter", scattered, "expert_shard"))
    if lay.dp_replicate > 1:
        dense, routed = replicated / lay.dp_shard, experts / max(1, replicas)
        shard = dense + routed
        # the experts' replicas are the ranks holding the same experts: the replicate group
        # unless EP is placed across it (then they may share a node)
        add("ddp_all_reduce", 2 * shard * b["gradients"] * (lay.dp_replicate - 1) /
            lay.dp_replicate, lay.world, ("all_reduce", dense * b["gradients"], "dp_replicate"),
            ("all_reduce", routed * b["gradients"], "expert_replicate"))
    if lay.tp > 1:
        ring = (lay.tp - 1) / lay.tp
        for name, nbytes in tp_activation_bytes(shape, lay, layers, head=lay.pp == 1).items():
            kind = name.removeprefix("tp_").removeprefix("router_stats_")
            handed = m * nbytes / (2 * ring if kind == "all_reduce" else ring)
            add(name, m * nbytes, lay.tp, (kind, handed, "tp"))
        # Once a step (moe_llm.clip_gradients): the MoE blocks ran on sequence shards, so
        # their gradients (FSDP or EP shards) hold one shard's share: summed in one all-reduce.
        ring = 2 * (lay.tp - 1) / lay.tp
        grads = moe_parameters_per_device(shape, lay, layers) * b["gradients"]
        add("tp_moe_gradient_all_reduce", grads * ring, lay.tp, ("all_reduce", grads, "tp"))
    if lay.pp > 1:
        act = lay.micro_batch * lay.seq_len / lay.cp * shape.dim * e / lay.tp
        add("pp_send_recv", 2 * m * act, lay.world)
    return out


def _groups(lay: MoELayout, gpu) -> dict[str, "network.Span"]:
    """Each communicator's group on the NVLink domains, in mesh order (tp innermost, ep
    borrowing consecutive dp_shard ranks) unless ``lay.spans`` places it."""
    domain = _get(gpu, "nvlink_domain") or _get(gpu, "gpus_per_node")
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


def tp_activation_bytes(shape: MoEShape, lay: MoELayout, layers, head: bool) -> dict[str, float]:
    """Bytes one rank sends per micro-batch in the TP group's activation collectives for
    ``layers`` (+ the embedding, + the output head if ``head``): forward, backward, and the
    forward again under full recompute. A gather or reduce-scatter of a whole-sequence buffer
    sends (tp - 1) / tp of it, an all-reduce twice that (ring)."""
    e = bytes_per_param(lay.precision)["activation"]
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


def step_time(shape: MoEShape, lay: MoELayout, gpu, comm: dict) -> dict[str, float]:
    c = shape.counts()
    tokens = lay.global_batch * lay.seq_len
    dense = 6 * c["active_without_embedding"] * tokens
    attention = 6 * shape.n_layers * lay.global_batch * lay.seq_len ** 2 * \
        shape.attention_flops_dim / 2            # causal: half the score matrix
    flops = (dense + attention) * (4 / 3 if lay.recompute else 1)
    # What TP leaves whole outside the MoE block (MLA down projections, norms) every TP rank
    # computes on the whole sequence: tp - 1 redundant copies of its share.
    whole = sum(shape.tp_replicated_per_layer) if shape.tp_replicated_per_layer else 0
    redundant = 6 * whole * tokens * (lay.tp - 1) * (4 / 3 if lay.recompute else 1)
    mfu = achieved_fraction(gpu, lay.precision)
    compute = (flops + redundant) / lay.world / (_get(gpu, "peak_tflops") * 1e12 * mfu)
    bubble = (lay.pp - 1) / lay.accumulation if lay.pp > 1 else 0.0
    comm_s = sum(v["seconds"] for v in comm.values())
    a2a = sum(v["seconds"] for k, v in comm.items() if k.startswith("all_to_all"))
    exposed = compute * (1 + bubble) + comm_s
    return {"model_flops_per_step": flops, "tp_redundant_flops_per_step": redundant,
            "compute_seconds": compute,
            "pipeline_bubble_fraction": bubble, "communication_seconds": comm_s,
            "all_to_all_seconds": a2a, "step_seconds_no_overlap": exposed,
            "step_seconds_full_overlap": max(compute * (1 + bubble), comm_s),
            "tokens_per_second_no_overlap": tokens / exposed, "mfu_assumed": mfu}


def plan(shape: MoEShape, lay: MoELayout, gpu) -> dict[str, Any]:
    mem = memory_per_device(shape, lay)
    comm = communication_per_step(shape, lay, gpu)
    need = mem["worst_stage"]["total_bytes"]
    have = (_get(gpu, "memory_gib") - _get(gpu, "reserved_gib")) * GIB
    return {"gpu": _get(gpu, "name"), "parameters": shape.counts(),
            "layout": dict(lay.__dict__, world=lay.world, accumulation=lay.accumulation),
            "memory_per_device": mem, "memory_needed_gib": need / GIB,
            "memory_usable_gib": have / GIB, "fits": need <= have,
            "communication_per_step": comm, "step_time": step_time(shape, lay, gpu, comm)}


def not_fitting_message(p: dict, gpu) -> str:
    w = p["memory_per_device"]["worst_stage"]
    parts = ", ".join(f"{k.removesuffix('_bytes')} {w[k] / GIB:.1f}" for k in
                      ("weights_bytes", "gradients_bytes", "optimizer_bytes",
                       "fsdp_gather_bytes", "activation_bytes", "logits_bytes"))
    return (f"at least {p['memory_needed_gib'] + _get(gpu, 'reserved_gib'):.1f} GiB per device "
            f"(GiB: {parts}; +{_get(gpu, 'reserved_gib')} reserved): raise parallel.ep/pp/"
            "dp_shard, set recompute=true or lower micro_batch_size")


# --- from a run config ---------------------------------------------------------------------------
def layout_from(run) -> MoELayout:
    from pinchpoint.parallel.dims import ParallelDims
    a = getattr(run.model, run.model.scale)
    d = ParallelDims.from_config(run.parallel)
    return MoELayout(dp_replicate=d.dp_replicate, dp_shard=d.dp_shard, tp=d.tp, pp=d.pp,
                     cp=d.cp, ep=d.ep, micro_batch=a.micro_batch_size,
                     global_batch=a.global_batch_size, seq_len=a.seq_len,
                     recompute=a.recompute, precision=a.precision,
                     schedule=run.model.pipeline_schedule)


def describe(shape: MoEShape, run, extra: dict | None = None) -> dict[str, Any]:
    return {"model": run.model.name, "scale": run.model.scale, **(extra or {}),
            **plan(shape, layout_from(run), run.gpu)}


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
