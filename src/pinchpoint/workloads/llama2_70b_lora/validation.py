"""Pre-launch checks of llama2_70b_lora on the typed run config: each error names the dotted
field and what is allowed, before any data is made or any rank starts."""
from __future__ import annotations

import os

from pinchpoint.errors import ConfigError, one_of, positive_int, require
from pinchpoint.parallel.dims import ParallelDims
from pinchpoint.workloads.common import validation as llm
from pinchpoint.workloads.llama2_70b_lora.lora import check_lora, projection_sizes


def validate(run) -> None:
    m = run.model
    one_of(m.scale, "model.scale", ["proxy", "full", "smoke"])
    s, a = f"model.{m.scale}", getattr(m, m.scale)
    llm.validate_attention_shape(s, a)
    check_lora(m.lora.rank, m.lora.alpha, m.lora.dropout, list(m.lora.target_modules),
               projection_sizes(a.dim, a.n_heads, a.n_kv_heads, a.ffn_dim))
    dims = ParallelDims.from_config(run.parallel)
    _recipe(run, dims)
    _base_checkpoint(run)
    _dataset(run)
    if not run.plan_only and (m.scale == "full" or run.train.device == "cuda"):
        from pinchpoint.workloads.llama2_70b_lora.plan import check_fits
        check_fits(run)


def _recipe(run, dims: ParallelDims) -> None:
    """The shared decoder checks that apply (batch arithmetic, schedule, sequence length) and
    the reference's layout: data parallel (ZeRO-3/FSDP), no TP/PP/CP/EP."""
    m = run.model
    s, a = f"model.{m.scale}", getattr(m, m.scale)
    llm.validate_schedule(run)
    # The shared scale schema has a recompute field; this workload reads model.recompute. A
    # value it would ignore is refused, so a sweep over it cannot run identical points.
    require(a.recompute, f"{s}.recompute", lambda v: v is False,
            f"false (not read by llama2_70b_lora: set model.recompute={str(a.recompute).lower()})")
    require(m.grad_clip, "model.grad_clip", lambda v: v > 0, "a norm > 0 (reference 0.3)")
    # A full-scale plan on the megatron stack plans NeMo's TP and CP (the submissions' layouts);
    # anything that runs here shards over dp only.
    planned = run.plan_only and m.scale == "full" and \
        getattr(getattr(run, "plan", None), "stack", None) == "megatron"
    for field, degree in (("parallel.tp", dims.tp), ("parallel.pp", dims.pp),
                          ("parallel.cp", dims.cp), ("parallel.ep", dims.ep)):
        if planned and field in ("parallel.tp", "parallel.cp"):
            continue
        require(degree, field, lambda v: v == 1,
                "1 (llama2_70b_lora shards the frozen base with FSDP/ZeRO-3 as the reference: "
                "use parallel.dp_shard; a plan_only=true full-scale plan with "
                "plan.stack=megatron plans tp and cp)")
    per_replica = a.micro_batch_size * dims.dp
    require(a.global_batch_size, f"{s}.global_batch_size", lambda v: v % per_replica == 0,
            f"a multiple of micro_batch_size x data-parallel degree = {a.micro_batch_size} x "
            f"{dims.dp}")
    if not run.plan_only:   # how this runner steps to an evaluation; a plan counts samples
        # (NVIDIA's CP8 runs train at GBS 9 against the 384-sample cadence)
        require(a.eval_every_samples, f"{s}.eval_every_samples",
                lambda v: v % a.global_batch_size == 0,
                f"a multiple of global_batch_size={a.global_batch_size}")


def _base_checkpoint(run) -> None:
    m = run.model
    folder = m.base_checkpoint
    if folder is None:
        if m.scale == "full" and not run.plan_only:
            raise ConfigError("model.base_checkpoint", None,
                              "a Hugging Face Llama 2 70B safetensors folder (the reference's "
                              "Llama2-70b-fused-qkv-mlperf): the full scale fine-tunes a real "
                              "base; only proxy and smoke make their own")
        return
    if run.plan_only:
        return
    from pinchpoint.workloads.llama2_70b_lora import hf_checkpoint
    from pinchpoint.workloads.llama2_70b_lora.model import llama2_args
    hf_checkpoint.check_architecture(os.path.expanduser(str(folder)),
                                     llama2_args(getattr(m, m.scale)))


def _dataset(run) -> None:
    d, m = run.dataset, run.model
    s, a = f"model.{m.scale}", getattr(m, m.scale)
    require(d.name, "dataset.name", lambda v: hasattr(d, "validation_sequences"),
            f"a GovReport parquet dataset (synthetic_govreport or govreport) for {m.name}")
    require(d.num_workers, "dataset.num_workers", lambda v: v >= 0, "an integer >= 0")
    if run.plan_only:  # a plan reads no data
        return
    if d.synthetic:
        positive_int(d.train_sequences, "dataset.train_sequences")
        positive_int(d.validation_sequences, "dataset.validation_sequences")
        require(a.eval_samples, f"{s}.eval_samples", lambda v: v <= d.validation_sequences,
                f"at most dataset.validation_sequences={d.validation_sequences}")
        require(d.target_margin, "dataset.target_margin", lambda v: v > 0, "a margin > 0 nats")
        t = d.task
        require(t.successors, "dataset.task.successors", lambda v: 1 <= v < a.vocab_size,
                f"between 1 and the vocabulary ({a.vocab_size}) - 1")
        require(t.report_fraction, "dataset.task.report_fraction", lambda v: 0 <= v < 1,
                "a fraction in [0, 1)")
        if a.vocab_size > 65536:
            raise ConfigError(f"{s}.vocab_size", a.vocab_size, "at most 65536 for the synthetic "
                              "data (its teacher is a vocab x vocab table; use dataset=govreport)")
        return
    if not d.path or not os.path.isdir(str(d.path)):
        raise ConfigError("dataset.path", d.path, "a folder holding the reference's GovReport "
                          "parquet (train-*.parquet, validation-*.parquet), or set "
                          "PINCHPOINT_GOVREPORT_PATH")
    from pinchpoint.workloads.llama2_70b_lora import data
    for split in ("train", "validation"):
        data.check_seq_len(data.split_files(str(d.path), split)[0], a.seq_len, f"{s}.seq_len")
