"""Pre-launch checks the MoE decoders share, on the typed run config; each error names the
dotted field and what would work. Model-specific checks (sliding window, MLA ranks, routing
groups) live with each model's workload."""
from __future__ import annotations

import math

from pinchpoint.errors import one_of, positive_int, require
from pinchpoint.parallel.dims import ParallelDims
from pinchpoint.workloads.common import validation as llm


def validate_moe(run, model_checks, shape, tp_splits=None) -> ParallelDims:
    """Architecture (shared, then ``model_checks(prefix, scale)``), layout (``tp_splits(scale)``:
    the model's widths tensor parallelism splits, {field: why}), memory fit of
    ``shape(scale)`` (not with plan_only, which prints the plan instead), then the recipe and
    data, so a full-scale point is refused for memory before anything about its dataset."""
    m = run.model
    one_of(m.scale, "model.scale", ["proxy", "full", "smoke"])
    s, a = f"model.{m.scale}", getattr(m, m.scale)
    for key in ("n_layers", "dim", "n_heads", "num_experts", "top_k", "expert_dim"):
        positive_int(getattr(a, key), f"{s}.{key}")
    require(a.top_k, f"{s}.top_k", lambda v: v <= a.num_experts,
            f"at most num_experts={a.num_experts} (each token picks top_k distinct experts)")
    if a.capacity_factor is not None:
        require(a.capacity_factor, f"{s}.capacity_factor", lambda v: v > 0,
                "a factor > 0 (capacity = factor x tokens x top_k / experts per expert), or "
                "null for no token dropping")
    require(a.aux_loss_coeff, f"{s}.aux_loss_coeff", lambda v: v >= 0, "a coefficient >= 0")
    llm.validate_rope_scaling(s, a)
    model_checks(s, a)
    dims = ParallelDims.from_config(run.parallel)     # degrees x ... = world_size, ep | world/pp
    require(dims.ep, "parallel.ep", lambda v: a.num_experts % v == 0,
            f"a divisor of {s}.num_experts={a.num_experts} (every EP rank holds the same number "
            "of experts): one of " + ", ".join(
                str(d) for d in range(1, a.num_experts + 1) if a.num_experts % d == 0))
    require(dims.ep, "parallel.ep", lambda v: dims.dp % v == 0,
            f"a divisor of the data-parallel degree dp_replicate x dp_shard = {dims.dp} (expert "
            "parallelism splits the experts over data-parallel ranks, whose tokens it exchanges)")
    require(dims.pp, "parallel.pp", lambda v: v <= a.n_layers,
            f"at most n_layers={a.n_layers} ({s}): every stage holds at least one layer")
    _validate_tensor_parallel(s, a, dims.tp, tp_splits(a) if tp_splits else {})
    if not run.plan_only:
        from pinchpoint.plan.moe import check_fits
        check_fits(shape(a), run)
    llm.validate_recipe(run, dims)
    return dims


def _validate_tensor_parallel(s: str, a, tp: int, splits: dict[str, str]) -> None:
    """Each TP rank takes an equal share of every split width (sequence parallel's seq_len is
    checked with the recipe, validation.validate_layout)."""
    splits = {**splits, "vocab_size": "the embedding and head split the vocabulary"}
    common = math.gcd(*(getattr(a, key) for key in splits))
    works = ", ".join(str(d) for d in range(1, common + 1) if common % d == 0)
    for key, why in splits.items():
        value = getattr(a, key)
        require(tp, "parallel.tp", lambda v: value % v == 0,
                f"a divisor of {s}.{key}={value} ({why}); one that divides every width tensor "
                f"parallelism splits: {works}")
