"""Pre-flight arithmetic for DLRM-DCNv2: parameters and bytes, and a step-time model at full
scale, allocating nothing.

Step model per GPU (n GPUs; tables sharded over ``parallel.ep`` of them, MLPs data-parallel,
as HugeCTR and torchrec run it):
- embeddings (memory-bandwidth bound): every id of every sample gathers one fp32 row forward;
  the sparse Adagrad update reads and writes the row and its accumulator backward: 5 row
  transfers per lookup, spread over the ep table shards;
- all-to-all over the ep group: the ids to the table owners, the pooled embeddings back (fp16),
  their gradients the other way, on the two-level network (plan/network.py);
- dense: 6 x MLP/DCN parameters FLOPs per sample at the calibrated bf16 rate, plus the
  activations (every layer width) read and written in fp16 forward and backward;
- data parallel: one all-reduce of the fp16 dense gradients, overlapped as calibrated;
- a fixed per-step overhead (calibrated: launches and host synchronisation of a ~ms step).
Eval: a forward pass (gathers, one all-to-all, dense forward) over the validation half-day,
``train.evals_per_epoch`` times per epoch.
"""
from __future__ import annotations

from typing import Any, Sequence

from pinchpoint.errors import ConfigError
from pinchpoint.plan import calibration, network
from pinchpoint.plan import config_access as access
from pinchpoint.plan.compute import matmul_s, memory_s
from pinchpoint.plan.hardware import system_from
from pinchpoint.plan.result import PlanResult, from_parts
from pinchpoint.plan.time_to_train import assemble, dominant, pinch
from pinchpoint.workloads.registry import spec

GIB = 2 ** 30
FP16 = 2
# The dense part's matmul precision: mixed FP16 as the HugeCTR submissions run it (AMP; every
# DLRM-DCNv2 row of benchmarks/data/published_results.md), at the BF16 = FP16 dense peak.
PRECISION = "fp16"


def mlp_params(in_dim: int, widths: Sequence[int]) -> int:
    total = 0
    for width in widths:
        total += in_dim * width + width
        in_dim = width
    return total


def parameter_counts(arch, num_dense: int = 13) -> dict[str, int]:
    d = arch.embedding_dim
    tables = len(arch.num_embeddings_per_feature)
    interaction = (tables + 1) * d
    cross = arch.dcn_num_layers * (2 * interaction * arch.dcn_low_rank_dim + interaction)
    counts = {
        "embedding": sum(arch.num_embeddings_per_feature) * d,
        "bottom_mlp": mlp_params(num_dense, arch.bottom_mlp),
        "dcn": cross,
        "top_mlp": mlp_params(interaction, arch.top_mlp),
    }
    counts["dense"] = counts["bottom_mlp"] + counts["dcn"] + counts["top_mlp"]
    counts["total"] = counts["embedding"] + counts["dense"]
    return counts


def training_bytes(arch, bytes_per_value: int = 4) -> dict[str, int]:
    """Weights + gradients + Adagrad accumulator, fp32, everything resident (no sharding)."""
    params = parameter_counts(arch)["total"]
    return {"weights_bytes": params * bytes_per_value,
            "gradients_bytes": params * bytes_per_value,
            "optimizer_bytes": params * bytes_per_value,
            "total_bytes": 3 * params * bytes_per_value}


def describe(model_cfg) -> dict:
    out = {}
    for scale in ("proxy", "full"):
        arch = getattr(model_cfg, scale)
        counts = parameter_counts(arch, getattr(model_cfg, "num_dense_features", 13))
        out[scale] = {"parameters": counts, **training_bytes(arch),
                      "embedding_rows": sum(arch.num_embeddings_per_feature),
                      "ids_per_sample": sum(arch.multi_hot_sizes)}
    return out


def activation_elements(arch, num_dense: int = 13) -> int:
    """Values one sample writes through the dense part (inputs and every layer's output)."""
    interaction = (len(arch.num_embeddings_per_feature) + 1) * arch.embedding_dim
    dcn = arch.dcn_num_layers * (2 * interaction + arch.dcn_low_rank_dim)
    return num_dense + sum(arch.bottom_mlp) + interaction + dcn + sum(arch.top_mlp)


def step_terms(arch, global_batch: int, gpus: int, ep: int, system,
               num_dense: int = 13, overlap_dp: float | None = None,
               wire_bytes: int = FP16, precision: str = PRECISION,
               max_ctas: dict | None = None,
               batch_field: str = "dataset.batch_size") -> dict[str, Any]:
    """``wire_bytes``: bytes per pooled embedding, its gradient and each dense gradient in the
    collectives (HugeCTR's fp16; this repository's runner moves fp32)."""
    if global_batch % gpus:
        raise ConfigError(batch_field, global_batch,
                          f"a multiple of the {gpus} GPUs (per-rank batch x ranks)")
    counts = parameter_counts(arch, num_dense)
    local = global_batch / gpus
    d, tables = arch.embedding_dim, len(arch.num_embeddings_per_feature)
    lookups = global_batch * sum(arch.multi_hot_sizes) / ep      # rows this GPU serves
    embedding_fwd = memory_s(lookups * d * 4, system)
    embedding = embedding_fwd * 5
    # A global NCCL CTA cap (plan.nccl_max_ctas.all, NCCL_MAX_CTAS) slows both collectives.
    net = network.capped(system, {"all": (max_ctas or {}).get("all")}, "ep")
    group = network.span(ep, 1, system.nvlink_domain)
    ids = local * sum(arch.multi_hot_sizes) * 4
    pooled = local * tables * d * wire_bytes
    a2a_fwd = network.all_to_all_s(ids, group, net) + network.all_to_all_s(pooled, group, net)
    a2a = a2a_fwd + network.all_to_all_s(pooled, group, net)
    dense_flops = 6 * counts["dense"] * local
    dense = matmul_s(dense_flops, system, precision)
    activations = memory_s(local * activation_elements(arch, num_dense) * FP16 * 6, system)
    dp_group = network.span(gpus, 1, system.nvlink_domain)
    dp_comm = network.all_reduce_s(counts["dense"] * wire_bytes, dp_group, net)
    overlap = calibration.OVERLAP["data_parallel"] if overlap_dp is None else overlap_dp
    dp = max(dp_comm * (1 - overlap), dp_comm - dense)
    terms = {"compute": dense, "memory": embedding + activations, "ep": a2a,
             "data_parallel": dp, "overhead": calibration.DLRM_STEP_OVERHEAD_S}
    forward = embedding_fwd + a2a_fwd + dense / 3 + activations / 3
    return {"step_s": sum(terms.values()), "terms_s": terms, "forward_s": forward,
            "communication_s": {"ep": a2a, "data_parallel": dp_comm}}


def memory_bytes(arch, global_batch: int, gpus: int, ep: int, num_dense: int = 13) -> dict:
    counts = parameter_counts(arch, num_dense)
    tables = counts["embedding"] * 4 * 2 / ep              # fp32 rows + Adagrad accumulator
    dense = counts["dense"] * 4 * 3                        # weights, grads, accumulator
    acts = global_batch / gpus * activation_elements(arch, num_dense) * FP16 * 2
    lookups = global_batch / gpus * sum(arch.multi_hot_sizes) * arch.embedding_dim * 4
    return {"embedding_bytes": tables, "dense_bytes": dense, "activation_bytes": acts,
            "lookup_buffer_bytes": lookups, "total_bytes": tables + dense + acts + lookups}


def plan_run(cfg) -> PlanResult:
    arch = access.scale(cfg)
    dims = access.degrees(cfg.parallel)
    system = system_from(cfg.gpu)
    settings = access.plan_settings(cfg)
    # The scale's own global batch (the full scale's is the reference's), else the runner's.
    scale_gbs = getattr(arch, "global_batch_size", None)
    gbs = scale_gbs or cfg.dataset.batch_size
    field = f"model.{cfg.model.scale}.global_batch_size" if scale_gbs else "dataset.batch_size"
    n, ep = dims.world_size, dims.ep
    precision = getattr(settings, "precision", None) or PRECISION
    num_dense = getattr(cfg.model, "num_dense_features", 13)
    step = step_terms(arch, gbs, n, ep, system, num_dense, settings.overlap_data_parallel,
                      precision=precision,
                      max_ctas=access.mapping(getattr(settings, "nccl_max_ctas", None)),
                      batch_field=field)
    mem = memory_bytes(arch, gbs, n, ep, num_dense)
    rules = spec("dlrm_dcnv2").rules
    eval_each = rules.constants["validation_samples"] / gbs * step["forward_s"]
    ttt = assemble(rules, gbs, access.ruleset(cfg), step["step_s"], eval_each,
                   rules.eval_every_samples(cfg), settings.init_in_clock_s, field,
                   access.below_smallest_rcp(cfg))
    out = {"gpu": system.name, "world_size": n,
           "global_batch": gbs, "precision": precision,
           "layout": {"gpus": n, "ep": ep, "global_batch": gbs, "local_batch": gbs / n},
           "parameters": parameter_counts(arch, num_dense),
           "memory_per_device": mem, "memory_needed_gib": mem["total_bytes"] / GIB,
           "memory_usable_gib": system.usable_bytes / GIB,
           "fits": mem["total_bytes"] <= system.usable_bytes,
           "step_s": step["step_s"], "terms_s": step["terms_s"],
           "dominant": dominant(step["terms_s"]), "pinch": pinch(step["terms_s"]),
           "communication_s": step["communication_s"],
           "time_to_train": ttt, "scales": describe(cfg.model)}
    return from_parts(out, mem, model=cfg.model.name, scale=cfg.model.scale)
