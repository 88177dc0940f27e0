"""Pre-launch checks every decoder LLM shares (recipe, batch arithmetic, layouts, Megatron
data), on the typed run config; each error names the dotted field and what is allowed."""
from __future__ import annotations

import os

from pinchpoint.errors import ConfigError, one_of, positive_int, require
from pinchpoint.parallel.dims import ParallelDims
from pinchpoint.parallel.pipeline import SCHEDULES


def validate_attention_shape(s: str, a) -> None:
    """A decoder's block shape (``s`` is the scale's dotted path, ``a`` the scale)."""
    for key in ("n_layers", "dim", "n_heads", "n_kv_heads", "ffn_dim"):
        positive_int(getattr(a, key), f"{s}.{key}")
    require(a.dim, f"{s}.dim", lambda v: v % a.n_heads == 0 and (v // a.n_heads) % 2 == 0,
            f"a multiple of n_heads={a.n_heads} with an even head dimension (RoPE pairs)")
    require(a.n_kv_heads, f"{s}.n_kv_heads", lambda v: a.n_heads % v == 0,
            f"a divisor of n_heads={a.n_heads} (grouped-query attention)")


def validate_rope_scaling(s: str, a) -> None:
    """``rope_scaling`` (none | yarn) and, with yarn, its settings (``s`` the scale's path)."""
    one_of(a.rope_scaling, f"{s}.rope_scaling", ["none", "yarn"])
    if a.rope_scaling == "none":
        return
    y, at = a.yarn, f"{s}.yarn"
    require(y.factor, f"{at}.factor", lambda v: v >= 1, "a context stretch >= 1")
    positive_int(y.original_max_position_embeddings, f"{at}.original_max_position_embeddings")
    require(y.beta_slow, f"{at}.beta_slow", lambda v: v > 0, "a number of turns > 0")
    require(y.beta_fast, f"{at}.beta_fast", lambda v: v > y.beta_slow,
            f"more turns than beta_slow={y.beta_slow} (the band is blended between them)")
    for key in ("mscale", "mscale_all_dim"):
        if getattr(y, key) is not None:
            require(getattr(y, key), f"{at}.{key}", lambda v: v >= 0, "a number >= 0, or null")


def validate_schedule(run) -> None:
    """The scale's sizes, learning-rate schedule and precision."""
    m = run.model
    s, a = f"model.{m.scale}", getattr(m, m.scale)
    for key in ("vocab_size", "max_seq_len", "seq_len", "global_batch_size", "micro_batch_size",
                "eval_every_samples", "eval_samples"):
        positive_int(getattr(a, key), f"{s}.{key}")
    require(a.seq_len, f"{s}.seq_len", lambda v: v <= a.max_seq_len,
            f"at most the model's max_seq_len={a.max_seq_len}")
    require(a.learning_rate, f"{s}.learning_rate", lambda v: v > 0, "a learning rate > 0")
    require(a.warmup_samples, f"{s}.warmup_samples", lambda v: v >= 0, "an integer >= 0")
    require(a.decay_samples, f"{s}.decay_samples", lambda v: v > a.warmup_samples,
            f"more than warmup_samples={a.warmup_samples}")
    one_of(a.precision, f"{s}.precision", ["fp32", "bf16"])
    require(m.min_lr_ratio, "model.min_lr_ratio", lambda v: 0 <= v <= 1, "a ratio in [0, 1]")


def validate_recipe(run, dims: ParallelDims) -> None:
    validate_schedule(run)
    one_of(run.model.pipeline_schedule, "model.pipeline_schedule", SCHEDULES)
    validate_layout(run, dims)
    validate_batches(run, dims)
    validate_megatron_dataset(run)


def validate_layout(run, dims: ParallelDims) -> None:
    s, a = f"model.{run.model.scale}", getattr(run.model, run.model.scale)
    if not run.plan_only:
        require(dims.cp, "parallel.cp", lambda v: v == 1,
                "1 (context parallelism is planned by plan_only=true but not run here)")
    require(dims.tp, "parallel.tp", lambda v: a.seq_len % v == 0,
            f"a divisor of seq_len={a.seq_len} ({s}; sequence parallel splits the sequence)")


def validate_batches(run, dims: ParallelDims) -> None:
    s, a = f"model.{run.model.scale}", getattr(run.model, run.model.scale)
    per_replica = a.micro_batch_size * dims.dp
    require(a.global_batch_size, f"{s}.global_batch_size", lambda v: v % per_replica == 0,
            f"a multiple of micro_batch_size x data-parallel degree = {a.micro_batch_size} x "
            f"{dims.dp} (gradient accumulation = global / (micro x dp_replicate x dp_shard))")
    accum = a.global_batch_size // per_replica
    if dims.pp > 1:
        require(a.global_batch_size, f"{s}.global_batch_size", lambda v: accum >= dims.pp,
                f"at least micro_batch_size x dp x pp = {per_replica * dims.pp} so every "
                "pipeline stage has a micro-batch in flight")
        chunk = a.micro_batch_size * accum
    else:
        chunk = a.micro_batch_size
    if not run.plan_only:   # how this runner batches evaluation; a plan runs none (the
        # published DeepSeek V3 layout, PP4 x DP64 with 1,024 eval samples, plans as published)
        require(a.eval_samples, f"{s}.eval_samples", lambda v: v % (dims.dp * chunk) == 0,
                f"a multiple of {dims.dp * chunk} (evaluation runs in batches of {chunk} per "
                f"data-parallel rank, {dims.dp} ranks)")
    require(a.eval_every_samples, f"{s}.eval_every_samples",
            lambda v: v % a.global_batch_size == 0,
            f"a multiple of global_batch_size={a.global_batch_size}")


def validate_megatron_dataset(run) -> None:
    d = run.dataset
    require(d.name, "dataset.name", lambda v: hasattr(d, "train_prefix"),
            f"a Megatron text dataset (synthetic_c4 or c4) for {run.model.name}")
    require(d.num_workers, "dataset.num_workers", lambda v: v >= 0, "an integer >= 0")
    if d.synthetic:
        positive_int(d.train_tokens, "dataset.train_tokens")
        positive_int(d.validation_tokens, "dataset.validation_tokens")
        require(d.target_margin, "dataset.target_margin", lambda v: v > 0, "a margin > 0 nats")
        t = d.teacher
        vocab = getattr(run.model, run.model.scale).vocab_size
        require(t.successors, "dataset.teacher.successors", lambda v: 1 <= v < vocab,
                f"between 1 and the vocabulary ({vocab}) - 1")
        require(t.mean_doc_tokens, "dataset.teacher.mean_doc_tokens", lambda v: v > 1,
                "a length > 1 token")
        positive_int(t.g2_rank, "dataset.teacher.g2_rank")
        if not run.plan_only and vocab > 65536:
            raise ConfigError(f"model.{run.model.scale}.vocab_size", vocab,
                              "at most 65536 for the synthetic corpus (its teacher is a "
                              "vocab x vocab table; use dataset=c4 for the full vocabulary)")
    elif not run.plan_only:
        _check_megatron_files(d)


def _check_megatron_files(d) -> None:
    path = d.path
    if not path or not os.path.isdir(str(path)):
        raise ConfigError("dataset.path", path, "a folder holding the Megatron C4 files "
                          f"{d.train_prefix}.bin/.idx and {d.validation_prefix}.bin/.idx "
                          "(or set PINCHPOINT_C4_PATH)")
    for field, prefix in (("dataset.train_prefix", d.train_prefix),
                          ("dataset.validation_prefix", d.validation_prefix)):
        for ext in (".bin", ".idx"):
            if not os.path.exists(os.path.join(str(path), prefix + ext)):
                raise ConfigError(field, prefix, f"a prefix with {prefix}{ext} in {path}")
