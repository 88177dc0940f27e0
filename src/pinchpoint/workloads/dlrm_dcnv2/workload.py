"""DLRM-DCNv2 behind the Workload protocol: Criteo multi-hot data, Adagrad, AUROC target."""
from __future__ import annotations

import os
from typing import Any, Iterator

import numpy as np
import psutil
import torch
from omegaconf import OmegaConf

from pinchpoint.config.validate import ConfigError, get, positive_int, require
from pinchpoint.data import criteo, synthetic_criteo
from pinchpoint.data.loader import BatchStream
from pinchpoint.workloads.base import Quality, RunInputs, Sizes, Workload
from pinchpoint.workloads.dlrm_dcnv2 import plan as dlrm_plan
from pinchpoint.workloads.dlrm_dcnv2.checkpoint import (canonical_parameters, gather_state,
                                                        load_state)
from pinchpoint.workloads.dlrm_dcnv2.model import DLRMDCNv2
from pinchpoint.workloads.dlrm_dcnv2.parallelize import ShardedDLRM, wrap_ddp


class DLRMWorkload(Workload):
    mlperf_benchmark = "dlrm_dcnv2"

    def __init__(self, inputs: RunInputs):
        super().__init__(inputs)
        self.cfg_model, self.cfg_data = inputs.model, inputs.dataset
        self.arch = getattr(self.cfg_model, self.cfg_model.scale)
        self.ctx = inputs.ctx
        self.folder: str = ""
        self.manifest: dict = {}
        self.stream = None
        self._val_cache = None

    # --- pre-flight --------------------------------------------------------------------------
    @classmethod
    def validate(cls, cfg) -> None:
        require(cfg, "model.scale", lambda v: v in ("proxy", "full"), "one of proxy, full")
        require(cfg, "model.impl", lambda v: v in ("native",),
                "native (the torchrec implementation is not included)")
        scale = f"model.{cfg.model.scale}"
        arch = cfg.model[cfg.model.scale]
        require(cfg, f"{scale}.multi_hot_sizes",
                lambda v: len(v) == len(arch.num_embeddings_per_feature) and min(v) > 0,
                f"{len(arch.num_embeddings_per_feature)} positive sizes, one per table")
        require(cfg, f"{scale}.num_embeddings_per_feature", lambda v: len(v) > 0 and min(v) > 0,
                "positive row counts")
        positive_int(f"{scale}.embedding_dim", cfg)
        require(cfg, f"{scale}.bottom_mlp", lambda v: len(v) > 0 and v[-1] == arch.embedding_dim,
                f"widths ending at embedding_dim={arch.embedding_dim}")
        require(cfg, f"{scale}.top_mlp", lambda v: len(v) > 0 and v[-1] == 1,
                "widths ending at 1 (one logit)")
        require(cfg, f"{scale}.learning_rate", lambda v: v > 0, "a learning rate > 0")
        cls._validate_dataset(cfg)
        cls._validate_parallel(cfg, len(arch.num_embeddings_per_feature))
        if not cfg.plan_only:
            need = dlrm_plan.training_bytes(arch)["total_bytes"]
            have = psutil.virtual_memory().available
            if need > have:
                raise ConfigError("model.scale", cfg.model.scale,
                                  f"a scale that fits: it needs {need / 2**30:.1f} GiB for "
                                  f"weights, gradients and Adagrad state, {have / 2**30:.1f} GiB "
                                  "is free here (plan it with plan_only=true, or use proxy)")

    @staticmethod
    def _validate_parallel(cfg, tables: int) -> None:
        """DLRM parallelism = dense data-parallel over every rank + embedding tables either
        replicated (ep=1) or sharded over every rank (ep=world_size)."""
        p = cfg.parallel
        for key in ("tp", "pp", "cp"):
            require(cfg, f"parallel.{key}", lambda v: v == 1,
                    "1 for DLRM (no tensor/pipeline/context parallelism in DLRM-DCNv2; use "
                    "parallel=ddpN or epN)")
        require(cfg, "parallel.dp", lambda v: v == p.world_size,
                f"parallel.world_size={p.world_size}: DLRM's dense part is data parallel over "
                "every rank")
        require(cfg, "parallel.ep", lambda v: v in (1, p.world_size),
                f"1 (tables replicated) or parallel.world_size={p.world_size} (tables sharded "
                "over every rank)")
        if p.ep > tables:
            options = [n for n in (2, 4, 8, 16) if n <= tables]
            raise ConfigError("parallel.ep", p.ep,
                              f"at most {tables}, the number of embedding tables, with table-wise "
                              f"sharding (e.g. ep{options[-1]}); beyond that every rank would "
                              "not own a table")
        require(cfg, "parallel.embedding_sharding", lambda v: v == "table_wise",
                "table_wise (the native DLRM shards whole tables; row-wise sharding is "
                "not implemented)")

    @staticmethod
    def _validate_dataset(cfg) -> None:
        for key in ("batch_size", "eval_batch_size", "samples_per_day"):
            positive_int(f"dataset.{key}", cfg)
        require(cfg, "dataset.num_days", lambda v: isinstance(v, int) and v >= 2,
                "an integer >= 2 (the last day holds validation)")
        world = cfg.parallel.world_size
        require(cfg, "dataset.batch_size", lambda v: v % world == 0,
                f"a multiple of parallel.world_size={world} (global batch = ranks x per-rank)")
        require(cfg, "dataset.num_workers", lambda v: v >= 0, "an integer >= 0")
        require(cfg, "dataset.prefetch",
                lambda v: v >= (1 if cfg.dataset.num_workers > 0 else 0),
                "an integer >= 0 (>= 1 when dataset.num_workers > 0)")
        train = (cfg.dataset.num_days - 1) * cfg.dataset.samples_per_day
        require(cfg, "dataset.batch_size", lambda v: v <= train,
                f"at most the {train} training samples")
        if cfg.dataset.synthetic:
            require(cfg, "dataset.target_margin", lambda v: 0 < v < 0.5, "a margin in (0, 0.5)")
            t = "dataset.teacher"
            for key in ("embedding_dim",):
                positive_int(f"{t}.{key}", cfg)
            require(cfg, f"{t}.logit_std", lambda v: v > 0, "a number > 0")
            require(cfg, f"{t}.id_skew", lambda v: v >= 1, "a number >= 1 (1 = uniform ids)")
        else:
            path = get(cfg, "dataset.path")
            if not path or not os.path.isdir(str(path)):
                raise ConfigError("dataset.path", path, "a folder holding day_N_dense.npy, "
                                  "day_N_labels.npy and day_N_sparse_multi_hot.npz "
                                  "(or set PINCHPOINT_CRITEO_PATH)")
        target = get(cfg, "dataset.target_auroc")
        if target is not None and not 0.5 < target <= 1.0:
            raise ConfigError("dataset.target_auroc", target, "an AUROC in (0.5, 1]")

    @classmethod
    def plan(cls, cfg) -> dict[str, Any]:
        return dlrm_plan.describe(OmegaConf.to_object(cfg.model))

    # --- init ----------------------------------------------------------------------------------
    def _generator_params(self) -> dict:
        d = self.cfg_data
        return {"num_embeddings_per_feature": list(self.arch.num_embeddings_per_feature),
                "multi_hot_sizes": list(self.arch.multi_hot_sizes),
                "num_days": d.num_days, "samples_per_day": d.samples_per_day,
                "teacher": OmegaConf.to_container(OmegaConf.structured(d.teacher))}

    def prepare_data(self) -> list[str]:
        d = self.cfg_data
        if d.synthetic:
            self.folder, self.manifest = synthetic_criteo.ensure(
                self.inputs.tier.datasets_dir(), self._generator_params(), d.verify_checksums)
        else:
            self.folder = os.path.abspath(d.path)
        # Header/size checks of every file now, so a bad file fails before training starts.
        self.layouts = [criteo.inspect_day(self.folder, day, self.arch.multi_hot_sizes)
                        for day in range(d.num_days)]
        return [loc.path for lay in self.layouts for loc in (lay.dense, lay.labels, lay.sparse[0])]

    @property
    def mode(self) -> str:
        """single (one process), ddp (tables replicated) or ep (tables sharded, dense DDP)."""
        if self.ctx.world_size == 1:
            return "single"
        return "ep" if self.inputs.parallel.ep > 1 else "ddp"

    def build(self) -> None:
        a, seed, profile = self.arch, self.inputs.seed, self.inputs.collectives
        num_dense = self.cfg_model.num_dense_features
        if self.mode == "ep":
            self.model = ShardedDLRM(a, num_dense, seed, self.ctx.rank, self.ctx.world_size,
                                     profile).to(self.ctx.device)
        else:
            model = DLRMDCNv2(a.num_embeddings_per_feature, a.embedding_dim, a.bottom_mlp,
                              a.dcn_num_layers, a.dcn_low_rank_dim, a.top_mlp, num_dense,
                              seed=seed).to(self.ctx.device)
            self.model = wrap_ddp(model, profile) if self.mode == "ddp" else model
        self.optimizer = torch.optim.Adagrad(self.model.parameters(), lr=a.learning_rate,
                                             eps=self.cfg_model.adagrad_epsilon)
        self.loss_fn = torch.nn.BCEWithLogitsLoss()
        self.params = canonical_parameters(self.model)
        self.inputs.measurements["model_parameters_local"] = sum(
            p.numel() for p in self.model.parameters())
        if self.mode == "ep":
            self.inputs.measurements["embedding_tables_local"] = len(
                self.model.sparse.tables_of[self.ctx.rank])

    def sizes(self) -> Sizes:
        d = self.cfg_data
        train = (d.num_days - 1) * d.samples_per_day
        return Sizes(global_batch_size=d.batch_size, steps_per_epoch=train // d.batch_size,
                     train_samples=train, eval_samples=d.samples_per_day // 2)

    def quality(self) -> Quality:
        d = self.cfg_data
        best = self.manifest.get("best_auroc")
        if d.target_auroc is not None:
            target = d.target_auroc
        elif best is not None:
            target = round(best - d.target_margin, 5)
        else:
            target = 0.80275
        return Quality("auroc", target, higher_is_better=True, best_reachable=best)

    def mlperf_hyperparameters(self) -> dict[str, Any]:
        s = self.sizes()
        return {"global_batch_size": s.global_batch_size, "opt_name": "adagrad",
                "opt_base_learning_rate": self.arch.learning_rate,
                "opt_adagrad_learning_rate_decay": 0, "opt_weight_decay": 0,
                "opt_adagrad_initial_accumulator_value": 0,
                "opt_adagrad_epsilon": self.cfg_model.adagrad_epsilon,
                "opt_learning_rate_warmup_steps": 0, "opt_learning_rate_decay_start_step": 0,
                "opt_learning_rate_decay_steps": 0, "gradient_accumulation_steps": 1,
                "train_samples": s.train_samples, "eval_samples": s.eval_samples}

    # --- timed ---------------------------------------------------------------------------------
    def open_data(self) -> None:
        d = self.cfg_data
        self.train, self.val = criteo.open_splits(self.folder, d.num_days,
                                                  self.arch.multi_hot_sizes, d.mmap,
                                                  self.inputs.tier, self.layouts)
        self.per_rank_batch = d.batch_size // self.ctx.world_size
        self.rows = np.asarray(self.arch.num_embeddings_per_feature, dtype=np.int64)
        self.needs_modulo = not d.synthetic  # real ids index the full tables; fold onto proxy

    def _read_step(self, step: int):
        """This rank's batch of ``step``: global batch g = step*W + rank (round-robin)."""
        g = step * self.ctx.world_size + self.ctx.rank
        batch = self.train.read(g * self.per_rank_batch, self.per_rank_batch)
        return self._to_tensors(batch)

    def _to_tensors(self, batch: criteo.Batch):
        sparse = batch.sparse
        if self.needs_modulo:
            sparse = [np.remainder(s, r).astype(np.int32) for s, r in zip(sparse, self.rows)]
        return (torch.from_numpy(batch.dense), [torch.from_numpy(s) for s in sparse],
                torch.from_numpy(batch.labels[:, 0].astype(np.float32)), batch.io)

    def batches(self, start_step: int) -> Iterator[Any]:
        d = self.cfg_data
        self.close()
        stop = self.sizes().steps_per_epoch
        self.stream = BatchStream(self._read_step, start_step, stop, d.num_workers, d.prefetch,
                                  d.pin_memory)
        device, tier = self.ctx.device, self.inputs.tier
        for dense, sparse, labels, io in self.stream:
            if io is not None:
                tier.account(io)
            nb = device.type == "cuda"
            yield (dense.to(device, non_blocking=nb), [s.to(device, non_blocking=nb)
                                                       for s in sparse],
                   labels.to(device, non_blocking=nb))

    def forward_backward(self, batch) -> torch.Tensor:
        dense, sparse, labels = batch
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.model(dense, sparse), labels)
        loss.backward()
        return loss.detach()

    def optimizer_step(self) -> None:
        self.optimizer.step()

    def evaluate(self) -> float:
        with self.inputs.collectives.evaluating():
            return self._evaluate()

    @torch.no_grad()
    def _evaluate(self) -> float:
        """AUROC on the validation half-day. With W ranks each scores an equal shard (the last
        len % W samples are dropped) and the scores are all-gathered, so every rank agrees."""
        from sklearn.metrics import roc_auc_score

        if self._val_cache is None:  # validation is read from storage once, then kept in RAM
            world, rank = self.ctx.world_size, self.ctx.rank
            shard = len(self.val) // world
            self._val_cache = self.val.read(rank * shard, shard)
            if self._val_cache.io is not None:
                self.inputs.tier.account(self._val_cache.io)
        val = self._val_cache
        self.model.eval()
        scores = []
        step = max(1, self.cfg_data.eval_batch_size // self.ctx.world_size)
        for lo in range(0, len(val.dense), step):
            dense = torch.from_numpy(val.dense[lo:lo + step]).to(self.ctx.device)
            sparse = [torch.from_numpy(s[lo:lo + step]).to(self.ctx.device) for s in val.sparse]
            if self.needs_modulo:
                sparse = [s.remainder(int(r)) for s, r in zip(sparse, self.rows)]
            scores.append(torch.sigmoid(self.model(dense, sparse)).float())
        self.model.train()
        scores = torch.cat(scores)
        labels = torch.from_numpy(val.labels[:, 0].astype(np.float32)).to(scores.device)
        if self.ctx.world_size > 1:
            scores, labels = self._gather(scores), self._gather(labels)
        return float(roc_auc_score(labels.cpu().numpy(), scores.cpu().numpy()))

    def _gather(self, tensor: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(tensor) for _ in range(self.ctx.world_size)]
        self.inputs.collectives.all_gather(parts, tensor)
        return torch.cat(parts)

    def state_dict(self) -> dict[str, Any]:
        """Layout-independent: full tables and dense weights with their Adagrad state under
        single-process names, so a checkpoint resumes into any world size or sharding."""
        return gather_state(self.params, self.optimizer, self.model, self.ctx)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_state(self.params, self.optimizer, state)

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None
