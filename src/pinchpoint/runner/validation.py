"""Pre-launch validation of a whole run: every check, in order, before any data, process or job
exists; the first problem raises a ConfigError naming the field, the value and what is allowed.

config/ is a leaf that only knows the schemas; each part checks its own group beside its code,
and this module is the one place that runs them all (the runner before a run, the sweepers'
pre-flight on every point): the degrees (parallel/validation.py), the groups nothing else drives
(config/validate.py), the storage tier (storage/validation.py), the MLPerf fields and the tracking
store (config/validate.py), the Slurm request and the fabric (cluster/), and the model and
dataset (the workload's own ``validate(run)``, on the typed config).
"""
from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from pinchpoint.cluster.fabric import validate_fabric
from pinchpoint.cluster.request import validate_cluster
from pinchpoint.config.validate import (check_known_keys, typed, validate_common,
                                        validate_mlperf, validate_tracking)
from pinchpoint.errors import ConfigError
from pinchpoint.parallel.validation import validate_parallel
from pinchpoint.storage.validation import validate_storage
from pinchpoint.workloads import workload_class


def validate(cfg: DictConfig) -> Any:
    """Validate a composed run config; raises ConfigError on the first problem. Returns the
    typed run config (with ``parallel.world_size`` derived)."""
    check_known_keys(cfg)
    validate_parallel(cfg)
    return validate_typed(typed(cfg))


def validate_typed(run: Any) -> Any:
    """The checks on the typed run config (what the sweepers' pre-flight calls on its typed
    copies, sweepers/preflight.py); derives ``parallel.world_size`` on it too."""
    validate_parallel(run)
    validate_common(run)
    validate_storage(run.storage)
    validate_mlperf(run)
    validate_tracking(run.tracking)
    validate_cluster(run)
    validate_fabric(run)
    workload = workload_class(run.model.name)
    workload.validate(run)
    validate_compile(run, workload)
    return run


COMPILED = "llama31_8b, llama2_70b_lora and flux1"


def validate_compile(run: Any, workload: Any) -> None:
    """train.compile=true where blocks are compiled (workloads/common/compile.py) and the
    layout runs them."""
    if not run.train.compile:
        return
    if not workload.compiles_blocks:
        raise ConfigError("train.compile", True, f"false for {run.model.name} (train.compile="
                          f"true compiles each transformer block of {COMPILED}; a MoE block's "
                          "data-dependent routing and DLRM's lack of blocks are not compiled)")
    if run.parallel.tp > 1:
        # torch 2.13: the backward of a compiled block hands the eager redistribution before it
        # a plain tensor where a DTensor is due ('Tensor' object has no attribute
        # '_local_tensor'). Checked on CPU: FSDP2 and pipelining train as eager.
        raise ConfigError("train.compile", True, f"false with parallel.tp={run.parallel.tp} "
                          "(compiled blocks under tensor parallelism fail in backward on this "
                          "torch; use parallel.tp=1)")
