"""FLUX.1 behind the Workload protocol: the MMDiT trained with the rectified-flow objective from
either pipeline.

dataset=flux_preprocessed reads the reference's columns (T5/CLIP encodings, VAE mean/logvar);
dataset=flux_raw reads tar shards, decodes the images and runs the frozen encoders. Both make
the same step inputs, and both do that work inside ``batches()``: it is what the training step
waits for, so data_wait holds storage reads + CPU decode (+ encoders for raw), and the run
records each part (data_read_seconds, data_decode_seconds, data_encode_seconds) to split it.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from typing import Any, Iterator

import numpy as np
import torch

from pinchpoint.data.loader import BatchStream
from pinchpoint.parallel.clip import clip_grad_norm
from pinchpoint.parallel.fsdp import shard_model
from pinchpoint.workloads.common.compile import compile_blocks
from pinchpoint.storage.tier import IOCharge
from pinchpoint.workloads.base import Quality, RunInputs, Sizes, Workload
from pinchpoint.workloads.flux1 import model as M
from pinchpoint.workloads.flux1 import synthetic, validation
from pinchpoint.workloads.flux1.data_preprocessed import PreprocessedBatches
from pinchpoint.workloads.flux1.data_raw import RawFluxDataset, collate
from pinchpoint.workloads.flux1.splits import open_split
from pinchpoint.storage.checkpoint import load_training_state, training_state

TIMERS = ("read", "decode", "encode")


def mmdit_shape(a) -> M.MMDiTShape:
    return M.MMDiTShape(in_channels=a.vae.latent_channels * M.PATCH ** 2,
                        vec_in_dim=a.clip.hidden_size, context_in_dim=a.t5.d_model,
                        hidden_size=a.hidden_size, num_heads=a.num_heads, depth=a.depth,
                        depth_single_blocks=a.depth_single_blocks, mlp_ratio=a.mlp_ratio,
                        axes_dim=tuple(a.axes_dim), theta=a.theta, qkv_bias=a.qkv_bias)


class FluxWorkload(Workload):
    compiles_blocks = True

    def __init__(self, inputs: RunInputs):
        super().__init__(inputs)
        self.cfg_model, self.cfg_data, self.dims = inputs.model, inputs.dataset, inputs.dims
        self.arch = getattr(self.cfg_model, self.cfg_model.scale)
        self.ctx = inputs.ctx
        self.raw = self.cfg_data.pipeline == "raw"
        self.manifest: dict = {}
        self.stream = None
        self.step = 0
        self.totals = dict.fromkeys(TIMERS, 0.0)

    # --- pre-flight ----------------------------------------------------------------------------
    @classmethod
    def validate(cls, run) -> None:
        validation.validate(run)

    # --- init ----------------------------------------------------------------------------------
    def prepare_data(self) -> list[str]:
        d = self.cfg_data
        if d.synthetic:
            self.folder, self.manifest = synthetic.ensure(
                self.inputs.tier.datasets_dir(), synthetic.params(self.arch, d))
        else:
            self.folder = os.path.abspath(d.path)
        self.encoders_path = d.encoders_path or os.path.join(self.folder, "encoders")
        # Index / open every shard now: a broken shard fails before run_start.
        self.train, self.val = self._open_split("train", False), self._open_split("val", True)
        m = self.inputs.measurements
        on_tier = self.train.bytes_on_disk() + self.val.bytes_on_disk()
        m["dataset_bytes_on_tier"] = float(on_tier)
        m["dataset_bytes_per_sample"] = self.train.bytes_on_disk() / len(self.train)
        return list(self.train.paths) + list(self.val.paths)

    def _open_split(self, split: str, val: bool):
        return open_split(self.cfg_data, self.arch, self.folder, split, val, self.inputs.tier)

    def build(self) -> None:
        torch.manual_seed(self.inputs.seed)
        model = M.FluxMMDiT(mmdit_shape(self.arch))
        model.init_weights()
        model.recompute = self.arch.recompute
        self.inputs.measurements["model_parameters"] = sum(p.numel() for p in model.parameters())
        self.dp_rank = 0
        if self.inputs.compile:   # each block, before FSDP2 wraps it (torchtitan's order)
            model = model.to(self.ctx.device)
            compile_blocks(model.double_blocks, model.single_blocks)
        if self.dims.distributed:
            mesh = self.dims.build_mesh(self.ctx.device.type)
            self.dp_rank = self.dims.dp_rank(mesh)
            model = model.to(self.ctx.device)
            shard_model(model, [*model.double_blocks, *model.single_blocks], mesh, self.dims)
        self.model = model.to(self.ctx.device)
        m = self.cfg_model
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.arch.learning_rate,
                                           betas=(m.adam_beta1, m.adam_beta2),
                                           eps=m.adam_epsilon, weight_decay=m.weight_decay)
        self.encoders = self._load_encoders() if self.raw else None
        self.empty_t5, self.empty_clip = self._empty_encodings()

    def _load_encoders(self):
        from pinchpoint.workloads.flux1 import encoders
        enc = encoders.load(self.encoders_path, self.arch, self.ctx.device)
        if self.ctx.device.type == "cuda":
            for part in (enc.t5, enc.clip, enc.vae):
                part.to(torch.bfloat16)
        return enc

    def _empty_encodings(self):
        """The empty caption's encodings (classifier-free-guidance dropout)."""
        if self.raw:
            t5, clip = self.encoders.encode_text(*self.encoders.tokenize([""]))
            return t5[0].float().cpu(), clip[0].float().cpu()
        folder = os.path.join(self.folder, "preprocessed", "empty_encodings")
        return (torch.from_numpy(np.load(os.path.join(folder, "t5_empty.npy")))[0].float(),
                torch.from_numpy(np.load(os.path.join(folder, "clip_empty.npy")))[0].float())

    def sizes(self) -> Sizes:
        a = self.arch
        gbs = a.batch_size * self.dims.dp
        train = len(self.train) if hasattr(self, "train") else a.train_samples
        return Sizes(global_batch_size=gbs, steps_per_epoch=train // gbs, train_samples=train,
                     eval_samples=a.eval_samples,
                     eval_every_steps=max(1, math.ceil(a.eval_every_samples / gbs)))

    def quality(self) -> Quality:
        best = self.manifest.get("best_reachable_val_loss")
        target = self.arch.target_val_loss + (self.cfg_data.target_margin
                                              if self.cfg_data.synthetic else 0.0)
        return Quality("averaged_validation_loss", round(target, 5), higher_is_better=False,
                       best_reachable=best)

    def mlperf_hyperparameters(self) -> dict[str, Any]:
        a, m, s = self.arch, self.cfg_model, self.sizes()
        return {"global_batch_size": s.global_batch_size, "opt_name": "adamw",
                "opt_base_learning_rate": a.learning_rate, "opt_learning_rate_warmup_steps": 0,
                "opt_adamw_beta_1": m.adam_beta1, "opt_adamw_beta_2": m.adam_beta2,
                "opt_adamw_epsilon": m.adam_epsilon, "opt_adamw_weight_decay": m.weight_decay,
                "opt_gradient_clip_norm": m.grad_clip, "gradient_accumulation_steps": 1,
                "evaluation_frequency": a.eval_every_samples,
                "train_samples": s.train_samples, "eval_samples": s.eval_samples}

    # --- timed: data ---------------------------------------------------------------------------
    def open_data(self) -> None:
        self.local = self.arch.batch_size
        self.order = np.random.default_rng(self.inputs.seed).permutation(len(self.train))
        if self.raw:
            self.train_items = RawFluxDataset(self.train, self.arch.image_size, self.inputs.seed)
            self.val_items = RawFluxDataset(self.val, self.arch.image_size, 0)
        else:
            self.train_items = PreprocessedBatches(self.train)
            self.val_items = PreprocessedBatches(self.val)

    def read_step(self, step: int) -> dict:
        """This replica's share of global step ``step``: shuffled samples
        [step*GBS + r*local, +local) (wrapping into the next epoch's order)."""
        gbs = self.local * self.dims.dp
        first = step * gbs + self.dp_rank * self.local
        idx = [int(self.order[i % len(self.order)]) for i in range(first, first + self.local)]
        return self._load(self.train_items, idx)

    def _load(self, items, idx: list[int]) -> dict:
        if self.raw:
            return collate([items[i] for i in idx])
        return items.batch(idx)

    def batches(self, start_step: int) -> Iterator[Any]:
        d = self.cfg_data
        self.close()
        self.stream = BatchStream(self.read_step, start_step, self.sizes().steps_per_epoch,
                                  d.num_workers, d.prefetch, False)
        step = start_step
        for batch in self.stream:
            yield self._step_inputs(batch, step)
            step += 1

    def _step_inputs(self, batch: dict, step: int) -> dict:
        """Latents + text encodings on the device; the encoders run here for raw data."""
        self._account(batch)
        first = step * self.local * self.dims.dp + self.dp_rank * self.local
        gens = [torch.Generator().manual_seed(self.inputs.seed * 1_000_003 + first + i)
                for i in range(self.local)]
        if self.raw:
            began = time.perf_counter()
            t5, clip, mean, logvar = self._encode(batch)
            self.ctx.synchronize()
            self.totals["encode"] += time.perf_counter() - began
        else:
            t5, clip = batch["t5_encodings"], batch["clip_encodings"]
            mean, logvar = batch["mean"], batch["logvar"]
        dev = self.ctx.device
        t5, clip = t5.float().cpu(), clip.float().cpu()
        # Randomness per sample (its global position), so any layout draws the same numbers;
        # distinct per rank as the reference requires.
        drop = torch.cat([torch.rand(1, generator=g) for g in gens]) < self.arch.cfg_dropout
        t5[drop], clip[drop] = self.empty_t5, self.empty_clip
        latents, noise = self._noised(mean, logvar, gens)
        timesteps = torch.cat([M.sample_train_timesteps(1, g) for g in gens])
        return {"latents": latents.to(dev), "t5": t5.to(dev), "clip": clip.to(dev),
                "timesteps": timesteps.to(dev), "noise": noise.to(dev)}

    def _noised(self, mean, logvar, gens):
        """VAE posterior samples (normalised) and flow noise, one generator per sample."""
        a = self.arch
        lat = [M.latent_from_mean_logvar(m[None].cpu(), v[None].cpu(), a.vae.shift,
                                         a.vae.scale, g) for m, v, g in zip(mean, logvar, gens)]
        lat = torch.cat(lat)
        noise = torch.cat([torch.randn(1, *lat.shape[1:], generator=g) for g in gens])
        return lat, noise

    def _encode(self, batch: dict):
        enc = self.encoders
        dtype = next(enc.vae.parameters()).dtype
        t5, clip = enc.encode_text(*enc.tokenize(batch["caption"]))
        mean, logvar = enc.encode_images(batch["image"].to(dtype))
        return t5, clip, mean, logvar

    def _account(self, batch: dict, training: bool = True) -> None:
        if training:   # the data_wait split counts training batches (eval has its own phase)
            self.totals["read"] += batch["read_s"]
            self.totals["decode"] += batch["decode_s"]
        # The readers throttled (maybe in a loader worker); the counters live here.
        self.inputs.tier.account(IOCharge(batch["read_bytes"], batch["read_requests"],
                                          batch["read_s"], batch["read_delay_s"]))

    # --- timed: step ---------------------------------------------------------------------------
    def _autocast(self):
        if self.arch.precision == "bf16" and self.ctx.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def forward_backward(self, batch: dict) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            loss = M.flow_loss(self.model, batch["latents"], batch["t5"], batch["clip"],
                               batch["timesteps"], batch["noise"]).mean()
        loss.backward()
        return self._global_mean(loss.detach())

    def _global_mean(self, value: torch.Tensor) -> torch.Tensor:
        if not self.ctx.distributed:
            return value
        out = self.inputs.collectives.all_reduce(value.float().clone())
        return out / self.dims.dp

    def optimizer_step(self) -> None:
        norm = clip_grad_norm(list(self.model.parameters()), self.cfg_model.grad_clip)
        self.inputs.measurements["last_grad_norm"] = float(norm)
        self.optimizer.step()
        self.step += 1
        self._record()

    def _record(self) -> None:
        m, n = self.inputs.measurements, max(self.step, 1)
        for name in TIMERS:
            m[f"data_{name}_seconds"] = self.totals[name]
            m[f"data_{name}_seconds_per_step"] = self.totals[name] / n

    # --- eval ------------------------------------------------------------------------------------
    def evaluate(self) -> float:
        with self.inputs.collectives.evaluating():
            return self._evaluate()

    @torch.no_grad()
    def _evaluate(self) -> float:
        """Mean over the 8 timesteps of the per-timestep mean loss (the reference's algorithm);
        each replica takes an equal share, fixed noise per sample so every layout agrees."""
        n = self.arch.eval_samples
        share = n // self.dims.dp
        lo = self.dp_rank * share
        sums = torch.zeros(M.VALIDATION_TIMESTEPS, dtype=torch.float64)
        counts = torch.zeros(M.VALIDATION_TIMESTEPS, dtype=torch.float64)
        self.model.eval()
        for start in range(lo, lo + share, self.local):
            idx = list(range(start, min(start + self.local, lo + share)))
            losses, steps = self._eval_batch(idx)
            sums.index_add_(0, steps, losses.double())
            counts.index_add_(0, steps, torch.ones_like(losses, dtype=torch.float64))
        self.model.train()
        if self.ctx.distributed:
            both = self.inputs.collectives.all_reduce(torch.cat([sums, counts]))
            sums, counts = both[:8], both[8:]
        return float((sums / counts.clamp_min(1)).mean())

    def _eval_batch(self, idx: list[int]):
        batch = self._load(self.val_items, idx)
        self._account(batch, training=False)
        if self.raw:
            t5, clip, mean, logvar = self._encode(batch)
        else:
            t5, clip = batch["t5_encodings"], batch["clip_encodings"]
            mean, logvar = batch["mean"], batch["logvar"]
        gens = [torch.Generator().manual_seed(10_007 + i) for i in idx]   # fixed per sample
        latents, noise = self._noised(mean, logvar, gens)
        steps = batch["timestep"].long()
        dev = self.ctx.device
        with self._autocast():
            losses = M.flow_loss(self.model, latents.to(dev), t5.float().to(dev),
                                 clip.float().to(dev), M.validation_timesteps(steps).to(dev),
                                 noise.to(dev))
        return losses.float().cpu(), steps

    # --- checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return training_state(self.model, self.optimizer, self.step)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = load_training_state(self.model, self.optimizer, state)

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None
