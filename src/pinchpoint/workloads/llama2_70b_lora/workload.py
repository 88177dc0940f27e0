"""Llama 2 70B LoRA (MLPerf llama2_70b_lora) on the shared decoder-LLM step: a frozen base loaded
from a Hugging Face safetensors checkpoint during init, LoRA adapters the only trainable
parameters, GovReport parquet rows (input ids + labels with -100), FSDP2 over the frozen base,
the reference's optimizer (AdamW, cosine from 4e-4 to 0, no warmup, clip 0.3), eval loss as the
quality metric, and checkpoints of adapters (+ their optimizer state) only by default."""
from __future__ import annotations

import math
import os
import time
from typing import Any, Iterator

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn

from pinchpoint.data.loader import BatchStream
from pinchpoint.storage.checkpoint import load_training_state, training_state
from pinchpoint.workloads.base import Quality, RunInputs, Sizes
from pinchpoint.workloads.common.llm import DecoderLLMWorkload
from pinchpoint.workloads.llama2_70b_lora import base, data, hf_checkpoint, synthetic, validation
from pinchpoint.workloads.llama2_70b_lora.lora import apply_lora, parameter_counts
from pinchpoint.workloads.llama2_70b_lora.model import (Llama2ForCausalLM, causal_lm_loss,
                                                        llama2_args)


def _plain(node) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(node))


class Llama2LoraWorkload(DecoderLLMWorkload):

    def __init__(self, inputs: RunInputs):
        super().__init__(inputs)
        # model.recompute is this workload's knob (the reference turns it on).
        self.arch = type(self.arch)(**{**self.arch.__dict__,
                                       "recompute": self.cfg_model.recompute})

    @classmethod
    def validate(cls, run) -> None:
        validation.validate(run)

    def describe(self) -> dict[str, Any]:
        lora = self.cfg_model.lora
        return {"model.lora.rank": lora.rank, "model.recompute": self.cfg_model.recompute}

    # --- data ------------------------------------------------------------------------------------
    def _dataset_params(self) -> dict:
        d = self.cfg_data
        return {"vocab_size": self.arch.vocab_size, "seq_len": self.arch.seq_len,
                "train_sequences": d.train_sequences,
                "validation_sequences": d.validation_sequences, "task": _plain(d.task)}

    def prepare_data(self) -> list[str]:
        d, a = self.cfg_data, self.arch
        if d.synthetic:
            self.folder, self.manifest = synthetic.ensure(self.inputs.tier.datasets_dir(),
                                                          self._dataset_params())
        else:
            self.folder = os.path.abspath(d.path)
        field = f"model.{self.cfg_model.scale}.seq_len"
        # Validation rows are few: read and check them now (the base's eval loss is measured
        # before the clock starts); training rows are read after run_start (open_data).
        self.val = data.read_split(self.folder, "validation", a.seq_len, a.vocab_size, field)
        if len(self.val) < a.eval_samples:
            from pinchpoint.errors import ConfigError
            raise ConfigError(f"model.{self.cfg_model.scale}.eval_samples", a.eval_samples,
                              f"at most the {len(self.val)} validation sequences in "
                              f"{self.folder}")
        self.train_files = data.split_files(self.folder, "train")
        data.check_seq_len(self.train_files[0], a.seq_len, field)
        import pyarrow.parquet as pq
        self.train_rows = sum(pq.ParquetFile(f).metadata.num_rows for f in self.train_files)
        return [*self.train_files, *self.val.files]

    def open_data(self) -> None:
        a = self.arch
        self.train = data.read_split(self.folder, "train", a.seq_len, a.vocab_size)
        # One fixed shuffle (seeded), as the reference's sampler for one epoch.
        self.order = np.random.default_rng(self.inputs.seed).permutation(len(self.train))

    def read_step(self, step: int) -> torch.Tensor:
        """This replica's rows of global step ``step``: (rows, 2, seq) of input ids and labels."""
        local = self.arch.global_batch_size // self.dims.dp
        start = step * self.arch.global_batch_size + self.layout.dp_rank * local
        rows = self.order[start:start + local]
        return torch.from_numpy(np.stack([self.train.input_ids[rows],
                                          self.train.labels[rows]], axis=1))

    def batches(self, start_step: int) -> Iterator[Any]:
        d = self.cfg_data
        self.close()
        self.stream = BatchStream(self.read_step, start_step, self.sizes().steps_per_epoch,
                                  d.num_workers, d.prefetch, False)
        for rows in self.stream:
            yield rows.to(self.ctx.device)

    def sizes(self) -> Sizes:
        """Evaluation every eval_every_samples; the reference's eval_delay (the first evaluation
        at floor(0.125 x GBS + 2) intervals) is the spec's MLPerfRules.eval_skip."""
        a = self.arch
        every = max(1, a.eval_every_samples // a.global_batch_size)
        return Sizes(global_batch_size=a.global_batch_size,
                     steps_per_epoch=self.train_rows // a.global_batch_size,
                     train_samples=self.train_rows, eval_samples=a.eval_samples,
                     eval_every_steps=every)

    def quality(self) -> Quality:
        d, a = self.cfg_data, self.arch
        if d.synthetic:
            best = self.manifest["best_eval_loss"]
            return Quality("eval_loss", round(best + d.target_margin, 5),
                           higher_is_better=False, best_reachable=best)
        return Quality("eval_loss", a.target_log_perplexity, higher_is_better=False)

    # --- model -----------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        args, m = llama2_args(self.arch), self.cfg_model
        model = Llama2ForCausalLM(args)
        folder = m.base_checkpoint
        if folder is None:
            folder, made = base.ensure(self.inputs.tier.datasets_dir(), args,
                                       _plain(self.cfg_data.task), _plain(m.base_pretrain))
            self.inputs.measurements["base_pretrain_held_out_loss"] = \
                made["pretrain_held_out_loss"]
        started = time.perf_counter()
        nbytes = hf_checkpoint.load_base(model, folder)
        self.inputs.measurements["base_checkpoint_bytes"] = float(nbytes)
        self.inputs.measurements["base_load_seconds"] = time.perf_counter() - started
        lora = m.lora
        torch.manual_seed(self.inputs.seed)  # adapters alike whether the base was made now or not
        apply_lora(model, lora.rank, lora.alpha, lora.dropout, list(lora.target_modules))
        if self._bf16_base:
            for name, p in model.named_parameters():
                if not p.requires_grad:  # the frozen base is stored in bf16 (as the reference)
                    p.data = p.data.to(torch.bfloat16)
        counts = parameter_counts(model)
        self.inputs.measurements.update({"trainable_parameters": float(counts["trainable"]),
                                         "base_parameters": float(counts["base"])})
        return model

    def fsdp_units(self, stage: nn.Module) -> list[nn.Module]:
        """FSDP2 (ZeRO-3, as the reference): one unit per decoder layer, the root for the rest.
        Under bf16 the adapters get their own units first: their fp32 weights cannot share an
        all-gather with the bf16 frozen base (FSDP2 gathers one dtype per unit)."""
        units = super().fsdp_units(stage)
        if self._bf16_base:
            units = [m for n, m in stage.named_modules() if n.endswith(("lora_A", "lora_B"))] \
                + units
        return units

    @property
    def _bf16_base(self) -> bool:
        return self.arch.precision == "bf16" and self.ctx.device.type == "cuda"

    def build(self) -> None:
        super().build()
        # The base's eval loss before fine-tuning (init, outside the clock): what the adapters
        # have to improve on.
        self.inputs.measurements["base_eval_loss"] = self.evaluate()

    def extra_hyperparameters(self) -> dict[str, Any]:
        lora, a = self.cfg_model.lora, self.arch
        return {"lora_rank": lora.rank, "lora_alpha": lora.alpha,
                "lora_dropout": lora.dropout,
                "opt_learning_rate_training_steps": math.ceil(a.decay_samples /
                                                              a.global_batch_size),
                "opt_learning_rate_warmup_factor": 0.0,
                "opt_learning_rate_decay_schedule": "cosine"}

    # --- step ------------------------------------------------------------------------------------
    def forward_backward(self, rows: torch.Tensor) -> torch.Tensor:
        """Hugging Face's causal-LM loss per micro-batch (mean over its scored tokens),
        accumulated over the replica's micro-batches."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = torch.zeros((), device=self.ctx.device)
        mbs = self.arch.micro_batch_size
        with self._autocast():
            for lo in range(0, len(rows), mbs):
                ids, labels = rows[lo:lo + mbs, 0], rows[lo:lo + mbs, 1]
                total, count = causal_lm_loss(self.model(ids), labels)
                micro = total / count.clamp(min=1)
                (micro / self.grad_accumulation).backward()
                loss += micro.detach() / self.grad_accumulation
        return self._global_mean(loss)

    def eval_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Rank r of dp takes validation sequences r, r + dp, ...; every rank runs the same
        number of forwards (FSDP gathers collectively): a rank past the end repeats sequence 0
        with every label masked, which counts for nothing."""
        a, dp, mbs = self.arch, self.dims.dp, self.arch.micro_batch_size
        mine = list(range(self.layout.dp_rank, a.eval_samples, dp))
        passes = math.ceil(a.eval_samples / dp)
        rows = np.array(mine + [0] * (passes - len(mine)))
        for lo in range(0, passes, mbs):
            labels = torch.from_numpy(self.val.labels[rows[lo:lo + mbs]])
            labels[max(0, len(mine) - lo):] = -100
            yield (torch.from_numpy(self.val.input_ids[rows[lo:lo + mbs]]).to(self.ctx.device),
                   labels.to(self.ctx.device))

    def eval_loss(self, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The reference's eval loss: per validation sequence the mean loss over its scored
        (summary) tokens, averaged over sequences; a sequence with no scored token has no loss
        to average."""
        logits = self.model(ids)
        sums = torch.zeros(2, dtype=torch.float64)  # sum of per-sequence losses, sequences
        for i in range(len(ids)):
            total, count = causal_lm_loss(logits[i:i + 1], labels[i:i + 1])
            if count > 0:
                sums += torch.tensor([float(total / count), 1.0], dtype=torch.float64)
        return sums

    # --- checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Adapters and their optimizer state (the frozen base is the base checkpoint's, loaded
        at init), or everything with model.checkpoint_adapters_only=false."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions
        options = StateDictOptions(ignore_frozen_params=self.cfg_model.checkpoint_adapters_only)
        return training_state(self.model, self.optimizer, self.step, options)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions
        options = StateDictOptions(strict=not self.cfg_model.checkpoint_adapters_only)
        self.step = load_training_state(self.model, self.optimizer, state, options)
        self._set_lr()
