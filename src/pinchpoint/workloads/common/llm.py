"""The decoder-LLM training step every LLM workload shares: Megatron-format C4 tokens,
micro-batching with gradient accumulation, pipeline driving, the loss reduced over data-parallel
replicas, AdamW with Megatron's WarmupCosine schedule in samples, evaluation, and DCP state.

A subclass provides the model and how tensor parallelism applies to it:

    class Llama31_8B(DecoderLLMWorkload):
        def build_model(self): return Llama(llama_args(self.arch))
        def apply_tensor_parallel(self, stage, tp_mesh): apply_tp(stage, tp_mesh)

The model is a ``DecoderModel`` (common/decoder.py), checked when it is built, so pipelining and
FSDP need nothing model-specific. Public hooks adapt the step to MoE (auxiliary losses, experts
kept out of FSDP, router statistics) and LoRA (a frozen base, its own FSDP units, the reference's
eval loss): ``loss``, ``trainable_parameters``, ``before_sharding``, ``fsdp_units``,
``clip_gradients``, ``after_step``, ``eval_batches``, ``eval_loss``, ``extra_hyperparameters``.
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from pinchpoint.data import megatron, synthetic_c4
from pinchpoint.data.loader import BatchStream
from pinchpoint.errors import ConfigError
from pinchpoint.parallel.clip import clip_grad_norm
from pinchpoint.parallel.dims import local_rank
from pinchpoint.parallel.fsdp import shard_model
from pinchpoint.parallel.pipeline import build_schedule, split_layers
from pinchpoint.storage.checkpoint import load_training_state, training_state
from pinchpoint.workloads.base import Quality, RunInputs, Sizes, Workload
from pinchpoint.workloads.common.compile import compile_blocks
from pinchpoint.workloads.common.decoder import check_decoder_model


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(0, 1))


def lr_at(step: int, arch, min_ratio: float) -> float:
    """Linear warmup to lr, cosine to min_ratio x lr at decay_samples, flat after (Megatron's
    WarmupCosine). Steps are optimizer steps; the schedule is set in samples (batch-size free)."""
    gbs = arch.global_batch_size
    warmup = max(1, math.ceil(arch.warmup_samples / gbs)) if arch.warmup_samples else 0
    decay = max(warmup + 1, math.ceil(arch.decay_samples / gbs))
    if step < warmup:
        return arch.learning_rate * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / (decay - warmup))
    low = min_ratio * arch.learning_rate
    return low + 0.5 * (arch.learning_rate - low) * (1 + math.cos(math.pi * progress))


def decoder_stage(model: nn.Module, stages: int, stage: int) -> nn.Module:
    """A copy of ``model`` holding only ``stage``'s layers (names unchanged, so checkpoints
    stay layout-independent), the embedding on the first stage and norm + head on the last."""
    part = copy.deepcopy(model)
    keep = {str(i) for i in split_layers(len(model.layers), stages, stage)}
    for name in list(part.layers.keys()):
        if name not in keep:
            del part.layers[name]
    if stage != 0:
        part.tok_embeddings = None
    if stage != stages - 1:
        part.norm = None
        part.output = None
    return part


@dataclass
class Layout:
    """Where this rank sits and what it runs: the whole model or one pipeline stage."""
    model: nn.Module
    mesh: Any = None
    dp_rank: int = 0
    tp_rank: int = 0
    pp_rank: int = 0
    pp: int = 1
    schedule: Any = None               # pipeline schedule when pp > 1
    pp_group: Any = None

    @property
    def first_stage(self) -> bool:
        return self.pp_rank == 0

    @property
    def last_stage(self) -> bool:
        return self.pp_rank == self.pp - 1

    @property
    def reports_loss(self) -> bool:
        """One rank per data-parallel replica holds the loss (last stage, TP rank 0)."""
        return self.last_stage and self.tp_rank == 0


class DecoderLLMWorkload(Workload):
    compiles_blocks = True

    def __init__(self, inputs: RunInputs):
        super().__init__(inputs)
        self.cfg_model, self.cfg_data, self.dims = inputs.model, inputs.dataset, inputs.dims
        self.arch = getattr(self.cfg_model, self.cfg_model.scale)
        self.ctx = inputs.ctx
        self.manifest: dict = {}
        self.stream = None
        self.step = 0
        self.grad_accumulation = self.arch.global_batch_size // (
            self.dims.dp * self.arch.micro_batch_size)

    # --- what a model provides -----------------------------------------------------------------
    def build_model(self) -> nn.Module:
        """The full model (a ``DecoderModel``), on the CPU, from the run's seed (every rank
        builds the same one)."""
        raise NotImplementedError

    def apply_tensor_parallel(self, stage: nn.Module, tp_mesh) -> None:
        """The model's TP plan, applied in place to this rank's (stage) module."""
        raise ConfigError("parallel.tp", self.dims.tp, f"1 ({self.cfg_model.name} has no "
                          "tensor-parallel plan)")

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return cross_entropy(logits, labels)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def extra_hyperparameters(self) -> dict[str, Any]:
        return {}

    def after_step(self) -> None:
        """Called after every optimizer step (e.g. router statistics, expert-bias updates)."""

    def before_sharding(self, stage: nn.Module) -> set:
        """Called on this rank's stage after TP, before FSDP2: parameters FSDP must leave alone
        (e.g. experts already split over the expert-parallel group)."""
        return set()

    def fsdp_units(self, stage: nn.Module) -> list[nn.Module]:
        """The modules of this rank's stage that FSDP2 shards as units of their own, in order,
        before the stage's root takes the rest: one per block."""
        return list(stage.layers.values())

    def clip_gradients(self, max_norm: float) -> float:
        """The global gradient norm over every rank's parameters, clipped in place."""
        return float(clip_grad_norm(self.params, max_norm, self.layout.pp_group))

    # --- init ----------------------------------------------------------------------------------
    def _generator_params(self) -> dict:
        d = self.cfg_data
        return {"vocab_size": self.arch.vocab_size, "train_tokens": d.train_tokens,
                "validation_tokens": d.validation_tokens,
                "teacher": OmegaConf.to_container(OmegaConf.structured(d.teacher))}

    def prepare_data(self) -> list[str]:
        d = self.cfg_data
        if d.synthetic:
            self.folder, self.manifest = synthetic_c4.ensure(self.inputs.tier.datasets_dir(),
                                                             self._generator_params())
        else:
            self.folder = os.path.abspath(d.path)
        self.train_prefix = os.path.join(self.folder, d.train_prefix)
        self.val_prefix = os.path.join(self.folder, d.validation_prefix)
        # Headers now (a bad file fails before training starts); tokens are read after run_start.
        train, val = megatron.IndexedDataset(self.train_prefix), \
            megatron.IndexedDataset(self.val_prefix)
        self.train_tokens = int(train.sizes.sum(dtype=np.int64))
        available = megatron.samples_in(int(val.sizes.sum(dtype=np.int64)), self.arch.seq_len)
        if available < self.arch.eval_samples:
            raise ConfigError(f"model.{self.cfg_model.scale}.eval_samples",
                              self.arch.eval_samples, f"at most the {available} validation "
                              f"sequences of {self.arch.seq_len}+1 tokens in {self.val_prefix}")
        return [*train.files(), *val.files()]

    def build(self) -> None:
        torch.manual_seed(self.inputs.seed)
        model = self.build_model()
        check_decoder_model(model)
        self.inputs.measurements["model_parameters"] = sum(p.numel() for p in model.parameters())
        self.layout = self._parallelize(model)
        self.model = self.layout.model
        self.params = self.trainable_parameters()
        m = self.cfg_model
        # Megatron's param groups: no weight decay on 1-D tensors (norm weights, biases).
        groups = [{"params": [p for p in self.params if p.ndim >= 2],
                   "weight_decay": m.weight_decay},
                  {"params": [p for p in self.params if p.ndim < 2], "weight_decay": 0.0}]
        self.optimizer = torch.optim.AdamW(groups, lr=lr_at(0, self.arch, m.min_lr_ratio),
                                           betas=(m.adam_beta1, m.adam_beta2),
                                           eps=m.adam_epsilon)

    def _parallelize(self, model: nn.Module) -> Layout:
        """PP split first, then the model's TP plan on the stage, then activation
        checkpointing, then FSDP2/HSDP over the data-parallel dims (torchtitan's order)."""
        dims, device = self.dims, self.ctx.device
        model.recompute = self.arch.recompute
        if not dims.distributed:
            model = model.to(device)
            if self.inputs.compile:
                compile_blocks(model.layers)
            return Layout(model)
        mesh = dims.build_mesh(device.type)
        out = Layout(model, mesh, dp_rank=dims.dp_rank(mesh), tp_rank=local_rank(mesh, "tp"),
                     pp_rank=local_rank(mesh, "pp"), pp=dims.pp)
        part = decoder_stage(model, dims.pp, out.pp_rank) if dims.pp > 1 else model
        part = part.to(device)
        part.recompute = self.arch.recompute
        if dims.tp > 1:
            self.apply_tensor_parallel(part, mesh["tp"])
        if self.inputs.compile:   # each block, after TP and before FSDP2 (torchtitan's order)
            compile_blocks(part.layers)
        # Pipelining runs several micro-batches through a stage before backward: keep the
        # gathered parameters instead of re-gathering them for every micro-batch.
        ignored = self.before_sharding(part)
        shard_model(part, self.fsdp_units(part), mesh, dims, reshard_after_forward=dims.pp == 1,
                    ignored=ignored)
        out.model = part
        if dims.pp > 1:
            out.pp_group = mesh["pp"].get_group()
            out.schedule = build_schedule(part, out.pp_rank, dims.pp, device, out.pp_group,
                                          self.cfg_model.pipeline_schedule,
                                          self.grad_accumulation, self.loss)
        return out

    def sizes(self) -> Sizes:
        a = self.arch
        train = megatron.samples_in(self.train_tokens, a.seq_len)
        return Sizes(global_batch_size=a.global_batch_size,
                     steps_per_epoch=train // a.global_batch_size, train_samples=train,
                     eval_samples=a.eval_samples,
                     eval_every_steps=max(1, a.eval_every_samples // a.global_batch_size))

    def quality(self) -> Quality:
        d, a = self.cfg_data, self.arch
        if d.synthetic:
            best = synthetic_c4.best_log_perplexity(self.folder, a.seq_len, a.eval_samples)
            return Quality("log_perplexity", round(best + d.target_margin, 5),
                           higher_is_better=False, best_reachable=best)
        return Quality("log_perplexity", a.target_log_perplexity, higher_is_better=False)

    def mlperf_hyperparameters(self) -> dict[str, Any]:
        a, m, s, d = self.arch, self.cfg_model, self.sizes(), self.dims
        warmup = math.ceil(a.warmup_samples / a.global_batch_size)
        decay = math.ceil(a.decay_samples / a.global_batch_size)
        return {"global_batch_size": a.global_batch_size, "micro_batch_size": a.micro_batch_size,
                "gradient_accumulation_steps": self.grad_accumulation,
                "max_sequence_length": a.seq_len, "max_steps": decay,
                "opt_name": "adamw", "opt_base_learning_rate": a.learning_rate,
                "opt_end_learning_rate": a.learning_rate * m.min_lr_ratio,
                "opt_learning_rate_warmup_steps": warmup,
                "opt_learning_rate_decay_steps": decay - warmup,
                "opt_learning_rate_decay_schedule": "cosine with linear warmup",
                "opt_adamw_beta_1": m.adam_beta1, "opt_adamw_beta_2": m.adam_beta2,
                "opt_adamw_epsilon": m.adam_epsilon, "opt_adamw_weight_decay": m.weight_decay,
                "opt_gradient_clip_norm": m.grad_clip, "init_checkpoint_step": 0,
                "tensor_parallelism": d.tp, "pipeline_parallelism": d.pp,
                "context_parallelism": d.cp, "data_parallelism": d.dp,
                "train_samples": s.train_samples, "eval_samples": s.eval_samples,
                **self.extra_hyperparameters()}

    # --- timed ---------------------------------------------------------------------------------
    def open_data(self) -> None:
        a = self.arch
        cache = self.inputs.tier.path("cache", "megatron")
        os.makedirs(cache, exist_ok=True)
        self.train = megatron.GPTDataset(megatron.IndexedDataset(self.train_prefix), a.seq_len,
                                         0, self.inputs.seed, shuffle=True, cache_dir=cache)
        self.val = megatron.GPTDataset(megatron.IndexedDataset(self.val_prefix), a.seq_len,
                                       a.eval_samples, 0, shuffle=False)
        self.inputs.measurements["sample_index_build_seconds"] = self.train.build_seconds
        self.inputs.measurements["sample_index_cached"] = float(self.train.cached)

    def read_step(self, step: int) -> torch.Tensor:
        """This data-parallel replica's share of global step ``step`` (TP/PP peers read the same
        rows): sequences [step*GBS + r*local, +local) of the shuffled training samples."""
        local = self.arch.global_batch_size // self.dims.dp
        start = step * self.arch.global_batch_size + self.layout.dp_rank * local
        return torch.from_numpy(self.train.batch(range(start, start + local)))

    def validation_batch(self, start: int, count: int) -> torch.Tensor:
        return torch.from_numpy(self.val.batch(range(start, start + count)))

    def batches(self, start_step: int) -> Iterator[Any]:
        d = self.cfg_data
        self.close()
        self.stream = BatchStream(self.read_step, start_step, self.sizes().steps_per_epoch,
                                  d.num_workers, d.prefetch, False)
        for tokens in self.stream:
            yield tokens.to(self.ctx.device)

    def forward_backward(self, tokens: torch.Tensor) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        inputs, labels = tokens[:, :-1], tokens[:, 1:]
        lay = self.layout
        with self._autocast():
            if lay.schedule is not None:
                losses: list = []
                lay.schedule.step(*([inputs] if lay.first_stage else []),
                                  target=labels if lay.last_stage else None, losses=losses)
                loss = torch.stack(losses).mean().detach() if losses else \
                    torch.zeros((), device=self.ctx.device)
            else:
                loss = torch.zeros((), device=self.ctx.device)
                mbs = self.arch.micro_batch_size
                for lo in range(0, len(inputs), mbs):
                    micro = self.loss(self.model(inputs[lo:lo + mbs]), labels[lo:lo + mbs])
                    (micro / self.grad_accumulation).backward()
                    loss += micro.detach() / self.grad_accumulation
        return self._global_mean(loss)

    def _global_mean(self, value: torch.Tensor) -> torch.Tensor:
        """The loss as every rank should report it: mean over data-parallel replicas, sent from
        the ranks that hold it (last pipeline stage, TP rank 0)."""
        if not self.ctx.distributed:
            return value
        out = value.detach().float().clone() if self.layout.reports_loss else \
            torch.zeros((), device=self.ctx.device)
        out = self.inputs.collectives.all_reduce(out.to(self.ctx.device))
        return out / self.dims.dp

    def _autocast(self):
        if self.arch.precision == "bf16" and self.ctx.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def optimizer_step(self) -> None:
        m = self.cfg_model
        self.inputs.measurements["last_grad_norm"] = self.clip_gradients(m.grad_clip)
        self.optimizer.step()
        self.step += 1
        self._set_lr()
        self.after_step()

    def _set_lr(self) -> None:
        lr = lr_at(self.step, self.arch, self.cfg_model.min_lr_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def evaluate(self) -> float:
        with self.inputs.collectives.evaluating():
            return self._evaluate()

    @torch.no_grad()
    def _evaluate(self) -> float:
        """Summed loss over summed weight of every rank's ``eval_loss``, counted once per
        data-parallel replica."""
        sums = torch.zeros(2, dtype=torch.float64)
        self.model.eval()
        with self._autocast():
            for inputs, labels in self.eval_batches():
                sums += self.eval_loss(inputs, labels)
        self.model.train()
        if self.ctx.distributed:
            if not self.layout.reports_loss:
                sums.zero_()
            self.inputs.collectives.all_reduce(sums)
        return float(sums[0] / sums[1].clamp(min=1))

    def eval_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's validation (inputs, labels) on its device: its data-parallel replica's
        equal share of the first eval_samples sequences (unshuffled), a micro-batch at a time
        (a step's micro-batches at a time under pipelining)."""
        lay, a = self.layout, self.arch
        share = a.eval_samples // self.dims.dp
        lo = lay.dp_rank * share
        chunk = a.micro_batch_size * (self.grad_accumulation if lay.schedule is not None else 1)
        for start in range(lo, lo + share, chunk):
            tokens = self.validation_batch(start, chunk).to(self.ctx.device)
            yield tokens[:, :-1], tokens[:, 1:]

    def eval_loss(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(summed loss, weight) of one validation batch as float64 on the CPU; the evaluation
        is their ratio over all batches. Here: the mean next-token loss weighted by the batch's
        sequences (nothing on pipeline stages that hold no loss)."""
        lay, n = self.layout, len(inputs)
        if lay.schedule is None:
            return torch.tensor([float(cross_entropy(self.model(inputs), labels)) * n, n],
                                dtype=torch.float64)
        losses: list = []
        lay.schedule.eval(*([inputs] if lay.first_stage else []),
                          target=labels if lay.last_stage else None, losses=losses)
        if not losses:
            return torch.zeros(2, dtype=torch.float64)
        micro = n // len(losses)     # each loss is one micro-batch's mean
        return torch.tensor([float(torch.stack(losses).double().sum()) * micro, n],
                            dtype=torch.float64)

    # --- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Model + optimizer keyed by the full model's parameter names (DTensor shards under
        FSDP/TP, a stage's subset under PP), so DCP reshards into another layout; plus the
        schedule position."""
        return training_state(self.model, self.optimizer, self.step)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = load_training_state(self.model, self.optimizer, state)
        self._set_lr()

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None
