"""Pre-launch checks the MoE decoders share, on the typed run config; each error names the
dotted field and what would work. Model-specific checks (sliding window, MLA ranks, routing
groups) live with each model's workload."""
from __future__ import annotations

from pinchpoint.errors import one_of, positive_int, require
from pinchpoint.parallel.dims import ParallelDims
from pinchpoint.workloads.common import validation as llm


def validate_moe(run, model_checks, shape) -> ParallelDims:
    """Architecture (shared, then ``model_checks(prefix, scale)``), layout, memory fit of
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
    if not run.plan_only:
        require(dims.tp, "parallel.tp", lambda v: v == 1,
                f"1 for {m.name} runs (tensor parallelism of the MoE models is planned with "
                "plan_only=true but has no plan to run here; use parallel.ep / dp_shard / pp)")
        from pinchpoint.plan.moe import check_fits
        check_fits(shape(a), run)
    llm.validate_recipe(run, dims)
    return dims
