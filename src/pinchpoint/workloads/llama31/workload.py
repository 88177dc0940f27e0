"""Llama 3.1 (8B / 405B) behind the Workload protocol: Megatron-format C4 tokens, AdamW with
cosine schedule, log-perplexity target, PP x FSDP2 x TP, sharded (DCP) checkpoints."""
from __future__ import annotations

import math
import os
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from omegaconf import OmegaConf

from pinchpoint.data import megatron, synthetic_c4
from pinchpoint.data.loader import BatchStream
from pinchpoint.workloads.base import Quality, RunInputs, Sizes, Workload
from pinchpoint.workloads.llama31 import validation
from pinchpoint.workloads.llama31.model import Llama, LlamaArgs, count_parameters
from pinchpoint.workloads.llama31.parallelize import clip_grad_norm, parallelize


def llama_args(arch) -> LlamaArgs:
    return LlamaArgs(dim=arch.dim, n_layers=arch.n_layers, n_heads=arch.n_heads,
                     n_kv_heads=arch.n_kv_heads, ffn_dim=arch.ffn_dim, vocab_size=arch.vocab_size,
                     max_seq_len=arch.max_seq_len, rope_theta=arch.rope_theta)


def lr_at(step: int, arch, min_ratio: float) -> float:
    """Linear warmup to lr, cosine to min_ratio x lr at decay_samples, flat after (Megatron's
    WarmupCosine). Steps are optimizer steps; the schedule is set in samples (batch-size free)."""
    gbs = arch.global_batch_size
    warmup = max(1, math.ceil(arch.warmup_samples / gbs))
    decay = max(warmup + 1, math.ceil(arch.decay_samples / gbs))
    if step < warmup:
        return arch.learning_rate * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / (decay - warmup))
    low = min_ratio * arch.learning_rate
    return low + 0.5 * (arch.learning_rate - low) * (1 + math.cos(math.pi * progress))


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(0, 1))


class LlamaWorkload(Workload):
    mlperf_benchmark = "llama31_8b"

    def __init__(self, inputs: RunInputs):
        super().__init__(inputs)
        self.cfg_model, self.cfg_data, self.par = inputs.model, inputs.dataset, inputs.parallel
        self.arch = getattr(self.cfg_model, self.cfg_model.scale)
        self.ctx = inputs.ctx
        self.manifest: dict = {}
        self.stream = None
        self.step = 0
        accum = self.arch.global_batch_size // (self.par.dp * self.arch.micro_batch_size)
        self.grad_accumulation = accum

    # --- pre-flight --------------------------------------------------------------------------
    @classmethod
    def validate(cls, cfg) -> None:
        validation.validate(cfg)

    @classmethod
    def plan(cls, cfg) -> dict[str, Any]:
        from pinchpoint.plan import llama as llama_plan
        return llama_plan.describe(cfg)

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
        val_tokens = int(val.sizes.sum(dtype=np.int64))
        s = self.arch.seq_len
        if megatron.samples_in(val_tokens, s) < self.arch.eval_samples:
            from pinchpoint.config.validate import ConfigError
            raise ConfigError(f"model.{self.cfg_model.scale}.eval_samples",
                              self.arch.eval_samples, f"at most the "
                              f"{megatron.samples_in(val_tokens, s)} validation sequences of "
                              f"{s}+1 tokens in {self.val_prefix}")
        return [*train.files(), *val.files()]

    def build(self) -> None:
        torch.manual_seed(self.inputs.seed)
        a, m = self.arch, self.cfg_model
        model = Llama(llama_args(a))
        self.inputs.measurements["model_parameters"] = count_parameters(model)
        self.par_state = parallelize(model, self.par.dp, self.par.tp, self.par.pp,
                                     self.ctx.device, self.grad_accumulation, cross_entropy,
                                     m.pipeline_schedule, a.recompute)
        self.model = self.par_state.model
        params = [p for p in self.model.parameters() if p.requires_grad]
        # Megatron's param groups: no weight decay on 1-D tensors (norm weights).
        groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": m.weight_decay},
                  {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
        self.optimizer = torch.optim.AdamW(groups, lr=lr_at(0, a, m.min_lr_ratio),
                                           betas=(m.adam_beta1, m.adam_beta2),
                                           eps=m.adam_epsilon)
        self.params = params

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
        a, m, s, p = self.arch, self.cfg_model, self.sizes(), self.par
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
                "tensor_parallelism": p.tp, "pipeline_parallelism": p.pp,
                "context_parallelism": p.cp, "data_parallelism": p.dp,
                "train_samples": s.train_samples, "eval_samples": s.eval_samples}

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

    def _read_step(self, step: int):
        """This data-parallel replica's share of global step ``step`` (TP/PP peers read the same
        rows): sequences [step*GBS + r*local, +local) of the shuffled training samples."""
        local = self.arch.global_batch_size // self.par.dp
        start = step * self.arch.global_batch_size + self.par_state.dp_rank * local
        tokens = self.train.batch(range(start, start + local))
        return torch.from_numpy(tokens)

    def batches(self, start_step: int) -> Iterator[Any]:
        d = self.cfg_data
        self.close()
        self.stream = BatchStream(self._read_step, start_step, self.sizes().steps_per_epoch,
                                  d.num_workers, d.prefetch, False)
        for tokens in self.stream:
            yield tokens.to(self.ctx.device)

    def forward_backward(self, tokens: torch.Tensor) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        inputs, labels = tokens[:, :-1], tokens[:, 1:]
        ps = self.par_state
        with self._autocast():
            if ps.schedule is not None:
                losses: list = []
                ps.schedule.step(*([inputs] if ps.first_stage else []),
                                 target=labels if ps.last_stage else None, losses=losses)
                loss = torch.stack(losses).mean().detach() if losses else torch.zeros(())
            else:
                loss = torch.zeros(())
                mbs = self.arch.micro_batch_size
                for lo in range(0, len(inputs), mbs):
                    micro = cross_entropy(self.model(inputs[lo:lo + mbs]), labels[lo:lo + mbs])
                    (micro / self.grad_accumulation).backward()
                    loss += micro.detach() / self.grad_accumulation
        return self._global_mean(loss)

    def _global_mean(self, value: torch.Tensor) -> torch.Tensor:
        """The loss as every rank should report it: mean over data-parallel replicas, sent from
        the ranks that hold it (last pipeline stage, TP rank 0)."""
        if not self.ctx.distributed:
            return value
        out = value.detach().float().clone() if self.par_state.reports_loss else torch.zeros(())
        out = self._all_reduce(out.to(self.ctx.device))
        return out / self.par.dp

    def _all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Through the runner's collective profile when there is one (counted, carved out of
        the phase into communication). FSDP/TP/PP collectives run inside torch and stay in
        forward_backward; the planner gives their volume."""
        if self.inputs.collectives is not None:
            return self.inputs.collectives.all_reduce(tensor)
        dist.all_reduce(tensor)
        return tensor

    def _autocast(self):
        if self.arch.precision == "bf16" and self.ctx.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        import contextlib
        return contextlib.nullcontext()

    def optimizer_step(self) -> None:
        m = self.cfg_model
        norm = clip_grad_norm(self.params, m.grad_clip, self.par_state.pp_group)
        self.inputs.measurements["last_grad_norm"] = float(norm)
        self.optimizer.step()
        self.step += 1
        lr = lr_at(self.step, self.arch, m.min_lr_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean next-token NLL over the first eval_samples validation sequences (unshuffled);
        each data-parallel replica takes an equal share."""
        ps, a = self.par_state, self.arch
        share = a.eval_samples // self.par.dp
        lo = ps.dp_rank * share
        chunk = a.micro_batch_size * (self.grad_accumulation if ps.schedule is not None else 1)
        total = torch.zeros((), dtype=torch.float64)
        self.model.eval()
        with self._autocast():
            for start in range(lo, lo + share, chunk):
                tokens = torch.from_numpy(self.val.batch(range(start, start + chunk)))
                tokens = tokens.to(self.ctx.device)
                inputs, labels = tokens[:, :-1], tokens[:, 1:]
                if ps.schedule is not None:
                    losses: list = []
                    ps.schedule.eval(*([inputs] if ps.first_stage else []),
                                     target=labels if ps.last_stage else None, losses=losses)
                    if losses:
                        total += torch.stack(losses).double().sum().cpu() * (chunk // len(losses))
                else:
                    total += cross_entropy(self.model(inputs), labels).double().cpu() * chunk
        self.model.train()
        if self.ctx.distributed:
            total = total if ps.reports_loss else torch.zeros((), dtype=torch.float64)
            self._all_reduce(total)
        return float(total) / (share * self.par.dp)

    # --- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """What rank 0 saves with torch.save: the schedule position (model and optimizer go
        through distributed_state_dict on every rank)."""
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = state["step"]
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.step, self.arch, self.cfg_model.min_lr_ratio)

    def distributed_state_dict(self) -> dict[str, Any]:
        """Model + optimizer keyed by the full model's parameter names (DTensor shards under
        FSDP/TP, a stage's subset under PP), so DCP can reshard into another layout."""
        from torch.distributed.checkpoint.state_dict import get_state_dict
        model, optim = get_state_dict(self.model, self.optimizer)
        return {"model": model, "optimizer": optim}

    def load_distributed_state_dict(self, state: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import set_state_dict
        set_state_dict(self.model, self.optimizer, model_state_dict=state["model"],
                       optim_state_dict=state["optimizer"])

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None


class Llama31_8B(LlamaWorkload):
    mlperf_benchmark = "llama31_8b"


class Llama31_405B(LlamaWorkload):
    mlperf_benchmark = "llama31_405b"
