"""Pre-flight arithmetic for DLRM-DCNv2: parameters and bytes, allocating nothing."""
from __future__ import annotations

from typing import Sequence


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
        counts = parameter_counts(arch, model_cfg.num_dense_features)
        out[scale] = {"parameters": counts, **training_bytes(arch),
                      "embedding_rows": sum(arch.num_embeddings_per_feature),
                      "ids_per_sample": sum(arch.multi_hot_sizes)}
    return out
