"""Pre-launch checks for DLRM-DCNv2 on the typed run config: each error names the field."""
from __future__ import annotations

import os

import psutil

from pinchpoint.errors import ConfigError, one_of, positive_int, require
from pinchpoint.parallel.dims import ParallelDims
from pinchpoint.workloads.dlrm_dcnv2 import plan as dlrm_plan


def validate(run) -> None:
    m = run.model
    one_of(m.scale, "model.scale", ["proxy", "full", "smoke"])
    require(m.impl, "model.impl", lambda v: v == "native",
            "native (the torchrec implementation is not included)")
    s, arch = f"model.{m.scale}", getattr(m, m.scale)
    tables = len(arch.num_embeddings_per_feature)
    require(arch.num_embeddings_per_feature, f"{s}.num_embeddings_per_feature",
            lambda v: len(v) > 0 and min(v) > 0, "positive row counts")
    require(arch.multi_hot_sizes, f"{s}.multi_hot_sizes",
            lambda v: len(v) == tables and min(v) > 0, f"{tables} positive sizes, one per table")
    positive_int(arch.embedding_dim, f"{s}.embedding_dim")
    require(arch.bottom_mlp, f"{s}.bottom_mlp", lambda v: len(v) > 0 and v[-1] == arch.embedding_dim,
            f"widths ending at embedding_dim={arch.embedding_dim}")
    require(arch.top_mlp, f"{s}.top_mlp", lambda v: len(v) > 0 and v[-1] == 1,
            "widths ending at 1 (one logit)")
    require(arch.learning_rate, f"{s}.learning_rate", lambda v: v > 0, "a learning rate > 0")
    dims = ParallelDims.from_config(run.parallel)
    validate_dataset(run, dims)
    validate_parallel(run, dims, tables)
    if not run.plan_only:
        need = dlrm_plan.training_bytes(arch)["total_bytes"]
        have = psutil.virtual_memory().available
        if need > have:
            raise ConfigError("model.scale", m.scale,
                              f"a scale that fits: it needs {need / 2**30:.1f} GiB for weights, "
                              f"gradients and Adagrad state, {have / 2**30:.1f} GiB is free here "
                              "(plan it with plan_only=true, or use proxy)")


def validate_parallel(run, dims: ParallelDims, tables: int) -> None:
    """DLRM = dense part data parallel (DDP) over every rank + embedding tables either
    replicated (ep=1) or sharded table-wise over every rank (ep=world_size)."""
    p = run.parallel
    for key in ("tp", "pp", "cp"):
        require(getattr(p, key), f"parallel.{key}", lambda v: v == 1,
                "1 for DLRM (no tensor/pipeline/context parallelism in DLRM-DCNv2; use "
                "parallel=ddpN or epN)")
    require(p.dp_shard, "parallel.dp_shard", lambda v: v == 1,
            "1 for DLRM: its dense part is replicated (DDP over parallel.dp_replicate); shard "
            "the embedding tables with parallel.ep instead")
    require(p.ep, "parallel.ep", lambda v: v in (1, dims.world_size),
            f"1 (tables replicated) or the world size {dims.world_size} (tables sharded over "
            "every rank)")
    if p.ep > tables:
        options = [n for n in (2, 4, 8, 16) if n <= tables]
        raise ConfigError("parallel.ep", p.ep,
                          f"at most {tables}, the number of embedding tables, with table-wise "
                          f"sharding (e.g. ep{options[-1]}); beyond that every rank would not "
                          "own a table")


def validate_dataset(run, dims: ParallelDims) -> None:
    d = run.dataset
    require(d.name, "dataset.name", lambda v: hasattr(d, "samples_per_day"),
            "a Criteo multi-hot dataset (synthetic_criteo or criteo_multihot) for DLRM")
    for key in ("batch_size", "eval_batch_size", "samples_per_day"):
        positive_int(getattr(d, key), f"dataset.{key}")
    require(d.num_days, "dataset.num_days", lambda v: isinstance(v, int) and v >= 2,
            "an integer >= 2 (the last day holds validation)")
    world = dims.world_size
    require(d.batch_size, "dataset.batch_size", lambda v: v % world == 0,
            f"a multiple of the world size {world} (global batch = ranks x per-rank)")
    require(d.num_workers, "dataset.num_workers", lambda v: v >= 0, "an integer >= 0")
    require(d.prefetch, "dataset.prefetch", lambda v: v >= (1 if d.num_workers > 0 else 0),
            "an integer >= 0 (>= 1 when dataset.num_workers > 0)")
    train = (d.num_days - 1) * d.samples_per_day
    require(d.batch_size, "dataset.batch_size", lambda v: v <= train,
            f"at most the {train} training samples")
    if d.synthetic:
        require(d.target_margin, "dataset.target_margin", lambda v: 0 < v < 0.5,
                "a margin in (0, 0.5)")
        t = d.teacher
        positive_int(t.embedding_dim, "dataset.teacher.embedding_dim")
        require(t.logit_std, "dataset.teacher.logit_std", lambda v: v > 0, "a number > 0")
        require(t.id_skew, "dataset.teacher.id_skew", lambda v: v >= 1,
                "a number >= 1 (1 = uniform ids)")
    elif not d.path or not os.path.isdir(str(d.path)):
        raise ConfigError("dataset.path", d.path, "a folder holding day_N_dense.npy, "
                          "day_N_labels.npy and day_N_sparse_multi_hot.npz "
                          "(or set PINCHPOINT_CRITEO_PATH)")
    if d.target_auroc is not None and not 0.5 < d.target_auroc <= 1.0:
        raise ConfigError("dataset.target_auroc", d.target_auroc, "an AUROC in (0.5, 1]")
