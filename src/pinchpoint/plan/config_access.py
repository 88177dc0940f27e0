"""Reading a run config the same way whether it is a DictConfig, the typed dataclasses, or plain
namespaces (the benchmarks build them from a run's config_resolved.yaml or a published row):
attribute access everywhere."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from pinchpoint.config.schema import PlanConfig
from pinchpoint.parallel.dims import ParallelDims


def scale(cfg) -> Any:
    return getattr(cfg.model, cfg.model.scale)


def plan_settings(cfg) -> Any:
    return getattr(cfg, "plan", None) or PlanConfig()


def ruleset(cfg) -> str:
    mlperf = getattr(cfg, "mlperf", None)
    return getattr(mlperf, "ruleset", None) or "6.0.0"


def degrees(parallel) -> ParallelDims:
    return ParallelDims.from_config(parallel)


def stack(cfg, reference: str) -> str:
    """plan.stack, or ``reference`` (the workload's MLPerfRules.reference_stack) when null;
    refused when neither megatron nor fsdp2."""
    from pinchpoint.errors import ConfigError
    from pinchpoint.plan.rules import STACKS
    value = getattr(plan_settings(cfg), "stack", None) or reference
    if value not in STACKS:
        raise ConfigError("plan.stack", value, " or ".join(STACKS))
    return value


def below_smallest_rcp(cfg) -> bool:
    """Plan a batch below every RCP at the smallest one's samples: asked for
    (plan.below_smallest_rcp), or a proxy / smoke scale (their batches are nobody's
    submission); a full-scale plan below them is refused (plan/rcp.py)."""
    return bool(getattr(plan_settings(cfg), "below_smallest_rcp", False)) or \
        cfg.model.scale != "full"


def full_scale_stack(cfg, reference: str) -> str:
    """``stack`` at the full scale; a run the runner executes (proxy, smoke) is planned as the
    runner shards it: fsdp2."""
    return stack(cfg, reference) if cfg.model.scale == "full" else "fsdp2"


def layout_settings(p) -> dict:
    """The ``plan.*`` settings every planner's layout takes (pipeline chunks, overlap, caps)."""
    return dict(virtual_stages=p.virtual_stages, embedding_as_layer=p.embedding_as_layer,
                loss_as_layer=p.loss_as_layer,
                layers_per_chunk=list(p.layers_per_chunk) if p.layers_per_chunk else None,
                overlap={"data_parallel": p.overlap_data_parallel,
                         "tensor_parallel": p.overlap_tensor_parallel,
                         "context_parallel": p.overlap_context_parallel,
                         "pipeline": p.overlap_pipeline,
                         "expert_parallel": getattr(p, "overlap_expert_parallel", None)},
                nccl_max_ctas=mapping(p.nccl_max_ctas))


def mapping(value: Any) -> dict:
    """A dict from a config mapping (DictConfig, dict, or a namespace()); None -> {}."""
    if value is None:
        return {}
    if isinstance(value, SimpleNamespace):
        return dict(vars(value))
    return dict(value.items())


def namespace(value: Any) -> Any:
    """Nested dicts -> attribute-access namespaces (lists stay lists)."""
    if isinstance(value, dict):
        return SimpleNamespace(**{k: namespace(v) for k, v in value.items()})
    if isinstance(value, list):
        return [namespace(v) for v in value]
    return value
