"""Building what a workload receives from a composed config: the one place that turns Hydra's
DictConfig into typed inputs (the session and the test harness both use it)."""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from pinchpoint.parallel.collectives import CollectiveProfile
from pinchpoint.parallel.context import RankContext
from pinchpoint.parallel.dims import ParallelDims
from pinchpoint.parallel.traffic import NodeMap, Traffic
from pinchpoint.storage import make_tier
from pinchpoint.storage.tier import StorageTier
from pinchpoint.telemetry.phases import PhaseTimer
from pinchpoint.workloads import workload_class
from pinchpoint.workloads.base import RunInputs, Workload


def build_inputs(cfg: DictConfig, ctx: RankContext, phases: PhaseTimer,
                 tier: StorageTier | None = None) -> RunInputs:
    return RunInputs(model=OmegaConf.to_object(cfg.model),
                     dataset=OmegaConf.to_object(cfg.dataset),
                     parallel=OmegaConf.to_object(cfg.parallel),
                     dims=ParallelDims.from_config(cfg.parallel, nodes=ctx.nodes),
                     seed=cfg.seed, ctx=ctx,
                     tier=tier or make_tier(cfg.storage), phases=phases,
                     collectives=CollectiveProfile(phases, traffic=traffic(ctx)),
                     compile=bool(cfg.train.compile))


def traffic(ctx: RankContext) -> Traffic | None:
    """The intra/inter-node split of this rank's collectives (a multi-rank run)."""
    if not ctx.distributed:
        return None
    return Traffic(NodeMap(ctx.hosts), ctx.rank, ctx.backend)


def build_workload(cfg: DictConfig, inputs: RunInputs) -> Workload:
    return workload_class(cfg.model.name)(inputs)
