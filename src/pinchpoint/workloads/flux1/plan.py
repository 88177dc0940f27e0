"""FLUX.1 planner: arithmetic only (no torch, nothing allocated).

Parameters of the MMDiT from its shape (checked against the real module on the meta device in
tests), memory per device for DDP / FSDP2 / HSDP, the data-parallel collectives' seconds per
step on a two-level network (plan/network.py), and the bytes each pipeline reads from storage
per step: the preprocessed columns' exact row size (np.save headers included) against the raw
image + caption bytes per sample.

Step time (``step_terms``) per GPU, on the shared planner parts (plan/compute.py at the
calibrated achieved rates, plan/network.py): the MMDiT's training FLOPs from its shape (each
double block's image and text sides on their own tokens, single blocks on both, joint
non-causal attention; 3x forward, 4x with the reference's full recompute) at the achieved
fraction times calibration.MMDIT_EFFICIENCY (what FLUX.1's logged steps say the MMDiT reaches
against the LLMs); on the raw pipeline the frozen encoders' forward in the loop (T5-XXL on 256
tokens, CLIP-L on 77, the VAE encoder's convolutions at each resolution); attention's passes
at least as long as softmax's exponentials (compute.attention_s), in FP8 only where
plan.fp8_attention says so; memory-bound kernels, with the low-precision casts of every GEMM
input; a fixed overhead per block (calibration.LAYER_OVERHEAD_S); the data-parallel
collectives above, exposed as the dense planner's (calibrated overlap, at most what compute
covers); the AdamW update; and the storage read per step where a read bandwidth is known (the
run's ``storage.emulation.read_mb_per_s`` when emulation is on: per rank, prefetched, so only
what compute does not cover), otherwise no read term.
"""
from __future__ import annotations

import os
from typing import Any

from pinchpoint.errors import ConfigError
from pinchpoint.plan.result import PlanResult, from_parts
from pinchpoint.workloads.registry import spec
from pinchpoint.parallel.dims import ParallelDims
from pinchpoint.plan import calibration, network
from pinchpoint.plan.compute import (achieved_fraction, at_efficiency, attention_precision,
                                     attention_s, layer_overhead_s, matmul_s, memory_s)
from pinchpoint.plan.llm import (ACT, LOW_PRECISION_BYTES, OPTIMIZER_BYTES_PER_PARAM, _exposed,
                                 overlap_or_calibrated)

NPY_HEADER = 128            # np.save header of a small-rank array (format 1.0, padded to 64)
BF16 = 2
# Raw bytes per CC12M sample when no real shard is at hand: the reference README's ~1 TB for
# the cc12m-wds download of ~10.9 M samples (jpg + txt + json in tar).
CC12M_RAW_BYTES_PER_SAMPLE = 1.0e12 / 10.9e6


def mmdit_parameters(s) -> int:
    """Parameter count of FluxMMDiT for shape ``s`` (an MMDiTShape or a scale config)."""
    h = s.hidden_size
    embed = (s.in_channels * h + h) + (256 * h + h + h * h + h) \
        + (s.vec_in_dim * h + h + h * h + h) + (s.context_in_dim * h + h)
    double, single = block_parameters(s)
    final = (h * s.in_channels + s.in_channels) + (h * 2 * h + 2 * h)
    return embed + s.depth * double + s.depth_single_blocks * single + final


def block_parameters(s) -> tuple[int, int]:
    """Parameters of one double-stream block (its image and text sides) and one single one."""
    h = s.hidden_size
    m = int(h * s.mlp_ratio)
    head = h // s.num_heads
    qkv_bias = 3 * h if s.qkv_bias else 0
    side = (6 * h * h + 6 * h) + (3 * h * h + qkv_bias) + 2 * head + (h * h + h) \
        + (h * m + m + m * h + h)
    single = (h * (3 * h + m) + 3 * h + m) + ((h + m) * h + h) + 2 * head + (3 * h * h + 3 * h)
    return 2 * side, single


def communication_per_step(scale, dp_replicate: int, dp_shard: int, system,
                           spans: dict | None = None, value_bytes: int = 4) -> dict[str, float]:
    """Seconds per step of each data-parallel collective kind, as parallel/fsdp.py shards the
    MMDiT: one FSDP2 unit per double and single block, then the root (embedders, final layer).
    Forward gathers every unit and backward each block again (the root stays gathered); every
    unit's gradients are reduce-scattered over dp_shard, then each shard all-reduced over
    dp_replicate (HSDP; replication alone all-reduces whole gradients). ``value_bytes``: 4, the
    runner's FSDP2 has no mixed-precision policy. ``spans``: network.Span of 'dp_shard' /
    'dp_replicate' where a placement differs from the mesh order (shard inside a node)."""
    shape = _shape(scale)
    spans = spans or {}
    domain = system.nvlink_domain
    shard = spans.get("dp_shard") or network.span(dp_shard, 1, domain)
    replicas = spans.get("dp_replicate") or network.span(dp_replicate, dp_shard, domain)
    double, single = block_parameters(shape)
    blocks = [double] * scale.depth + [single] * scale.depth_single_blocks
    root = mmdit_parameters(shape) - sum(blocks)
    out = {"all_gather": 0.0, "reduce_scatter": 0.0, "all_reduce": 0.0}
    for params, gathers in [(b, 2) for b in blocks] + [(root, 1)]:
        nbytes = params * value_bytes
        out["all_gather"] += gathers * network.all_gather_s(nbytes, shard, system)
        out["reduce_scatter"] += network.reduce_scatter_s(nbytes, shard, system)
        out["all_reduce"] += network.all_reduce_s(nbytes / shard.size, replicas, system)
    return out


def latent_side(scale) -> int:
    return scale.image_size // 2 ** (len(scale.vae.block_out_channels) - 1)


def sequence_lengths(scale) -> tuple[int, int]:
    """(text tokens, image patches) per sample."""
    return scale.t5.max_tokens, (latent_side(scale) // 2) ** 2


def preprocessed_bytes_per_sample(scale) -> int:
    """One row of the reference's columns: t5, clip, mean, logvar (bf16, np.save'd)."""
    side = latent_side(scale)
    latent = scale.vae.latent_channels * side * side
    arrays = scale.t5.max_tokens * scale.t5.d_model + scale.clip.hidden_size + 2 * latent
    return arrays * BF16 + 4 * NPY_HEADER


def memory_per_device(scale, dp_replicate: int, dp_shard: int, pipeline: str) -> dict:
    """Bytes per device: fp32 master weights + grads + AdamW moments (16 B/param) sharded over
    dp_shard (replicated over dp_replicate), the largest block's gathered bf16 weights (FSDP),
    activations (per-block inputs kept, one block recomputed: the reference's full activation
    checkpointing when recompute, else every block's working set), and for the raw pipeline the
    frozen encoders in bf16 (sharded over dp_shard as the reference's parallelize_encoders)."""
    params = mmdit_parameters(_shape(scale))
    h = scale.hidden_size
    txt, img = sequence_lengths(scale)
    tokens = scale.batch_size * (txt + img)
    blocks = scale.depth + scale.depth_single_blocks
    per_block_live = tokens * h * BF16 * (10 + 2 * int(scale.mlp_ratio))  # qkv, attn, mlp x4 ...
    if scale.recompute:
        activations = blocks * tokens * h * BF16 + per_block_live
    else:
        activations = blocks * per_block_live
    block_params = 2 * (10 * h * h + 2 * h * int(h * scale.mlp_ratio))
    gathered = block_params * BF16 if dp_shard > 1 else 0
    out = {"parameters": params,
           "states_bytes": 16 * params / dp_shard,
           "gathered_block_bytes": gathered,
           "activation_bytes": activations}
    out["encoder_bytes"] = encoder_parameters(scale) * BF16 / dp_shard if pipeline == "raw" \
        else 0
    out["total_bytes"] = sum(v for k, v in out.items() if k.endswith("_bytes"))
    return out


def encoder_parameters(scale) -> int:
    """T5 encoder + CLIP text + VAE encoder (approximate: transformer blocks and embeddings)."""
    t5 = scale.t5
    t5_block = 4 * t5.d_model * t5.num_heads * t5.d_kv + 3 * t5.d_model * t5.d_ff + 2 * t5.d_model
    t5_total = t5.num_layers * t5_block + t5.vocab_size * t5.d_model
    c = scale.clip
    clip_block = 4 * c.hidden_size ** 2 + 2 * c.hidden_size * c.intermediate_size
    clip_total = c.num_layers * clip_block + (c.vocab_size + c.max_tokens) * c.hidden_size
    ch = list(scale.vae.block_out_channels)
    # each level: layers_per_block resnets of two 3x3 convs, plus a strided downsampling conv
    vae = sum(scale.vae.layers_per_block * 2 * 9 * c_ * c_ + 9 * c_ * c_ for c_ in ch)
    return t5_total + clip_total + vae


def bytes_read_per_step(scale, global_batch: int, raw_bytes_per_sample: float) -> dict:
    return {"preprocessed": global_batch * preprocessed_bytes_per_sample(scale),
            "raw": global_batch * raw_bytes_per_sample}


def _shape(scale):
    from types import SimpleNamespace
    return SimpleNamespace(
        hidden_size=scale.hidden_size, num_heads=scale.num_heads, depth=scale.depth,
        depth_single_blocks=scale.depth_single_blocks, mlp_ratio=scale.mlp_ratio,
        qkv_bias=scale.qkv_bias, in_channels=scale.vae.latent_channels * 4,
        vec_in_dim=scale.clip.hidden_size, context_in_dim=scale.t5.d_model)


def mmdit_forward_flops_per_sample(scale) -> float:
    """Forward FLOPs of the MMDiT on one sample: 2 x the parameters each token passes through
    (a double block's image side on the image tokens, its text side on the text tokens, a
    single block on both; the embedders and the final layer on their tokens; adaLN modulation
    once per sample), plus joint attention over all tokens (QK^T and PV: 4 x S^2 x hidden)."""
    h = scale.hidden_size
    m = int(h * scale.mlp_ratio)
    txt, img = sequence_lengths(scale)
    tokens = txt + img
    shape = _shape(scale)
    side = 3 * h * h + h * h + 2 * h * m                 # qkv, proj, mlp (per token)
    single = h * (3 * h + m) + (h + m) * h               # linear1, linear2
    modulation = scale.depth * 2 * 6 * h * h + scale.depth_single_blocks * 3 * h * h + 2 * h * h
    per_token = scale.depth * side + scale.depth_single_blocks * single
    embed = img * (shape.in_channels * h + h * shape.in_channels) + \
        txt * scale.t5.d_model * h
    return 2 * (tokens * per_token + embed + modulation) + \
        joint_attention_forward_flops_per_sample(scale)


def cast_elements_per_token(scale) -> float:
    """GEMM inputs per token over the blocks that a low-precision recipe casts (averaged over
    the blocks' tokens): forward the activations, backward the output gradients. A double
    block's side: qkv, proj, fc1 (h each) and fc2 (m) forward, their outputs' gradients
    (3h, h, m, h) backward; a single block: linear1 (h) and linear2 (h + m) forward, (3h + m)
    and h backward."""
    h = scale.hidden_size
    m = int(h * scale.mlp_ratio)
    double = (3 * h + m) + (5 * h + m)
    single = (2 * h + m) + (4 * h + m)
    return scale.depth * double + scale.depth_single_blocks * single


def joint_attention_forward_flops_per_sample(scale) -> float:
    """The attention part of mmdit_forward_flops_per_sample: QK^T and PV over all tokens in
    every block."""
    txt, img = sequence_lengths(scale)
    blocks = scale.depth + scale.depth_single_blocks
    return blocks * 4 * (txt + img) ** 2 * scale.hidden_size


def encoder_forward_flops_per_sample(scale) -> dict[str, float]:
    """Forward FLOPs of the frozen encoders on one sample (raw pipeline): T5 and CLIP blocks
    (2 x parameters per token + attention), the VAE encoder's 3x3 convolutions at each level's
    resolution (2 x 9 x c_in x c_out per output pixel)."""
    t5 = scale.t5
    inner = t5.num_heads * t5.d_kv
    t5_block = 4 * t5.d_model * inner + 3 * t5.d_model * t5.d_ff
    n = t5.max_tokens
    t5_flops = t5.num_layers * (2 * t5_block * n + 4 * n * n * inner)
    c = scale.clip
    clip_block = 4 * c.hidden_size ** 2 + 2 * c.hidden_size * c.intermediate_size
    k = c.max_tokens
    clip_flops = c.num_layers * (2 * clip_block * k + 4 * k * k * c.hidden_size)
    ch = list(scale.vae.block_out_channels)
    side = scale.image_size
    macs = 9 * 3 * ch[0] * side * side                              # conv_in
    prev = ch[0]
    for level, width in enumerate(ch):
        pixels = side * side
        for r in range(scale.vae.layers_per_block):
            macs += 9 * (prev * width + width * width) * pixels     # a resnet's two convs
            prev = width
        if level < len(ch) - 1:                                     # strided downsampling
            side //= 2
            macs += 9 * width * width * side * side
    pixels = side * side
    macs += 2 * 2 * 9 * prev * prev * pixels + 4 * prev * prev * pixels + 2 * pixels ** 2 * prev
    macs += 9 * prev * 2 * scale.vae.latent_channels * pixels      # conv_out (mean, logvar)
    return {"t5": t5_flops, "clip": clip_flops, "vae": 2 * macs}


def step_terms(scale, dp_replicate: int, dp_shard: int, system, pipeline: str,
               precision: str = "bf16", read_bytes_per_s: float | None = None,
               raw_bytes_per_sample: float = CC12M_RAW_BYTES_PER_SAMPLE,
               overlap: float | None = None, max_ctas: dict | None = None,
               stack: str = "fsdp2", fp8_attention: bool | None = None) -> dict:
    """Seconds per step by term on one GPU (see the module docstring). ``stack``: fsdp2 (the
    runner's and the reference's FSDP2 units, communication_per_step) or megatron (NeMo's
    distributed optimizer: one reduce-scatter of the BF16 gradients and one all-gather of the
    parameters per step over all data-parallel ranks). ``fp8_attention``: plan.fp8_attention
    (compute.attention_precision: null follows the matmuls' precision)."""
    b = scale.batch_size
    forward = mmdit_forward_flops_per_sample(scale)
    attention = joint_attention_forward_flops_per_sample(scale)
    passes = 4 if scale.recompute else 3
    blocks = scale.depth + scale.depth_single_blocks
    mmdit = at_efficiency(system, calibration.MMDIT_EFFICIENCY)
    compute = matmul_s(b * (forward - attention) * passes, mmdit, precision) + \
        attention_s(b * 3 * attention, mmdit, attention_precision(system, precision, fp8_attention),
                    4 * scale.hidden_size // scale.num_heads, passes - 2)
    terms = {"compute": compute, "overhead": layer_overhead_s(blocks)}
    encoders = encoder_forward_flops_per_sample(scale)
    if pipeline == "raw":
        terms["encoders"] = matmul_s(b * sum(encoders.values()), system, "bf16")
    h = scale.hidden_size
    m = int(h * scale.mlp_ratio)
    txt, img = sequence_lengths(scale)
    elements = 10 * h + 3 * h + 2 * m
    nbytes = 3 * ACT * elements * blocks
    q = LOW_PRECISION_BYTES.get(precision)
    if q is not None:   # casts of every GEMM input, as plan/llm.py cast_bytes_per_token
        nbytes += cast_elements_per_token(scale) * (ACT + 2 * q)
    terms["memory"] = memory_s(nbytes * b * (txt + img) * (4 / 3 if scale.recompute else 1),
                               system)
    capped = network.capped(system, max_ctas or {}, "dp")
    if stack == "megatron":
        group = network.span(dp_replicate * dp_shard, 1, system.nvlink_domain)
        nbytes = mmdit_parameters(_shape(scale)) * ACT
        comm = {"reduce_scatter": network.reduce_scatter_s(nbytes, group, capped),
                "all_gather": network.all_gather_s(nbytes, group, capped)}
    else:
        comm = communication_per_step(scale, dp_replicate, dp_shard, capped)
    terms["data_parallel"] = _exposed(sum(comm.values()),
                                      overlap_or_calibrated("data_parallel", overlap), compute)
    params = mmdit_parameters(_shape(scale))
    shards = dp_replicate * dp_shard if stack == "megatron" else dp_shard
    terms["optimizer"] = memory_s(params / shards * OPTIMIZER_BYTES_PER_PARAM, system)
    per_sample = preprocessed_bytes_per_sample(scale) if pipeline != "raw" \
        else raw_bytes_per_sample
    read = b * per_sample / read_bytes_per_s if read_bytes_per_s else None
    if read is not None:
        terms["data_read"] = max(0.0, read - sum(terms.values()))
    return {"step_s": sum(terms.values()), "terms_s": terms,
            "mmdit_forward_flops_per_sample": forward,
            "encoder_forward_flops_per_sample": encoders,
            "communication_s": comm, "read_s": read,
            "forward_s_per_sample": matmul_s(forward, mmdit, precision),
            "mmdit_efficiency": achieved_fraction(mmdit, precision)
            / achieved_fraction(system, precision)}


def plan(scale, dp_replicate: int, dp_shard: int, raw_bytes_per_sample: float) -> dict:
    dp = dp_replicate * dp_shard
    gbs = scale.batch_size * dp
    reads = bytes_read_per_step(scale, gbs, raw_bytes_per_sample)
    out = {"parameters": mmdit_parameters(_shape(scale)),
           "encoder_parameters": encoder_parameters(scale),
           "global_batch_size": gbs,
           "preprocessed_bytes_per_sample": preprocessed_bytes_per_sample(scale),
           "raw_bytes_per_sample": raw_bytes_per_sample,
           "preprocessed_bytes_per_step": reads["preprocessed"],
           "raw_bytes_per_step": reads["raw"],
           "preprocessed_dataset_bytes": scale.train_samples
           * preprocessed_bytes_per_sample(scale),
           "raw_dataset_bytes": scale.train_samples * raw_bytes_per_sample}
    for pipeline in ("preprocessed", "raw"):
        mem = memory_per_device(scale, dp_replicate, dp_shard, pipeline)
        out[f"memory_per_device_gib_{pipeline}"] = mem["total_bytes"] / 2 ** 30
    return out


def plan_run(run) -> PlanResult:
    """Parameters, memory per device (this run's pipeline; both pipelines' in details), step
    time by term, time-to-train, bytes read per step for both pipelines."""
    m, d = run.model, run.dataset
    a = getattr(m, m.scale)
    dims = ParallelDims.from_config(run.parallel)
    for name in ("tp", "pp", "cp", "ep"):
        if getattr(dims, name) > 1:
            raise ConfigError(f"parallel.{name}", getattr(dims, name), "1: the FLUX.1 planner "
                              "plans data parallelism (dp_shard, dp_replicate) only")
    raw_per_sample = CC12M_RAW_BYTES_PER_SAMPLE
    source = "reference README (cc12m-wds ~1 TB / 10.9 M samples)"
    if not d.synthetic and d.path and os.path.isdir(os.path.join(d.path, "raw", "train")):
        from pinchpoint.workloads.flux1.data_raw import RawShards   # torch: only with real data
        shards = RawShards(os.path.join(d.path, "raw", "train"))
        raw_per_sample, source = shards.bytes_on_disk() / len(shards), "measured on dataset.path"
    out = plan(a, dims.dp_replicate, dims.dp_shard, raw_per_sample)
    out.update(pipeline=d.pipeline, layout=dims.describe(),
               world_size=dims.world_size, raw_bytes_per_sample_source=source)
    out.update(_time_to_train(run, a, dims, raw_per_sample))
    out["parameters"] = {"mmdit": out["parameters"], "encoders": out.pop("encoder_parameters")}
    return from_parts(out, out.pop("memory"), model=m.name, scale=m.scale)


def _time_to_train(run, a, dims, raw_per_sample: float) -> dict[str, Any]:
    """Step time by term and time-to-train from the flux1 RCPs (plan/rcp.py)."""
    from pinchpoint.plan import config_access as access
    from pinchpoint.plan.hardware import system_from
    from pinchpoint.plan.time_to_train import assemble, dominant, pinch
    p = access.plan_settings(run)
    system = system_from(run.gpu)
    precision = p.precision or getattr(a, "precision", "bf16")
    emulation = getattr(getattr(run, "storage", None), "emulation", None)
    read_bw = emulation.read_mb_per_s * 1e6 if emulation is not None and \
        getattr(emulation, "enabled", False) else None
    pipeline = run.dataset.pipeline
    rules = spec(run.model.name).rules
    step = step_terms(a, dims.dp_replicate, dims.dp_shard, system, pipeline, precision, read_bw,
                      raw_per_sample, p.overlap_data_parallel, access.mapping(p.nccl_max_ctas),
                      access.full_scale_stack(run, rules.reference_stack),
                      getattr(p, "fp8_attention", None))
    gbs = a.batch_size * dims.dp_replicate * dims.dp_shard
    # evaluation: the MMDiT's forward over the validation samples, spread over the ranks
    eval_each = a.eval_samples / (dims.dp_replicate * dims.dp_shard) * \
        step["forward_s_per_sample"]
    ttt = assemble(rules, gbs, access.ruleset(run), step["step_s"], eval_each,
                   rules.eval_every_samples(run), p.init_in_clock_s, "model.full.batch_size",
                   access.below_smallest_rcp(run))
    mem = memory_per_device(a, dims.dp_replicate, dims.dp_shard, pipeline)
    usable = system.usable_bytes
    return {"gpu": system.name, "precision": precision, "global_batch": gbs,
            "step_s": step["step_s"], "memory": mem,
            "terms_s": step["terms_s"], "dominant": dominant(step["terms_s"]),
            "pinch": pinch(step["terms_s"]), "step": step, "time_to_train": ttt,
            "read_term": "storage.emulation.read_mb_per_s" if read_bw else
            "none: no storage read bandwidth known (storage.emulation off)",
            "mmdit_efficiency": step["mmdit_efficiency"],
            "memory_needed_gib": mem["total_bytes"] / 2 ** 30,
            "memory_usable_gib": usable / 2 ** 30, "fits": mem["total_bytes"] <= usable}
