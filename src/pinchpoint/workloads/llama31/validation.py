"""Pre-launch checks for the Llama workloads: every error names the field and what is allowed."""
from __future__ import annotations

import os

from pinchpoint.config.validate import ConfigError, get, one_of, positive_int, require


def validate(cfg) -> None:
    one_of("model.scale", cfg, ["proxy", "full"])
    s = f"model.{cfg.model.scale}"
    a = cfg.model[cfg.model.scale]
    p = cfg.parallel
    for key in ("n_layers", "dim", "n_heads", "n_kv_heads", "ffn_dim", "vocab_size",
                "max_seq_len", "seq_len", "global_batch_size", "micro_batch_size",
                "eval_every_samples", "eval_samples"):
        positive_int(f"{s}.{key}", cfg)
    require(cfg, f"{s}.dim", lambda v: v % a.n_heads == 0 and (v // a.n_heads) % 2 == 0,
            f"a multiple of n_heads={a.n_heads} with an even head dimension (RoPE pairs)")
    require(cfg, f"{s}.n_kv_heads", lambda v: a.n_heads % v == 0,
            f"a divisor of n_heads={a.n_heads} (grouped-query attention)")
    require(cfg, f"{s}.seq_len", lambda v: v <= a.max_seq_len,
            f"at most the model's max_seq_len={a.max_seq_len}")
    require(cfg, f"{s}.learning_rate", lambda v: v > 0, "a learning rate > 0")
    require(cfg, f"{s}.warmup_samples", lambda v: v >= 0, "an integer >= 0")
    require(cfg, f"{s}.decay_samples", lambda v: v > a.warmup_samples,
            f"more than warmup_samples={a.warmup_samples}")
    one_of(f"{s}.precision", cfg, ["fp32", "bf16"])
    one_of("model.pipeline_schedule", cfg, ["gpipe", "1f1b"])
    require(cfg, "model.min_lr_ratio", lambda v: 0 <= v <= 1, "a ratio in [0, 1]")
    _validate_parallel(cfg, s, a, p)
    _validate_batches(cfg, s, a, p)
    _validate_dataset(cfg)
    if not cfg.plan_only:  # plan_only prints the plan (with fits: false) instead of refusing
        from pinchpoint.plan.llama import check_fits_gpu, check_fits_host
        # A full-scale run targets GPUs (maybe from a CPU login node): check the GPU config;
        # a proxy runs here: check this host's free memory.
        if cfg.model.scale == "full" or cfg.train.device == "cuda":
            check_fits_gpu(cfg)
        else:
            check_fits_host(cfg)


def _validate_parallel(cfg, s, a, p) -> None:
    require(cfg, "parallel.world_size", lambda v: v == p.dp * p.tp * p.pp * p.cp,
            f"dp x tp x pp x cp = {p.dp}x{p.tp}x{p.pp}x{p.cp} = {p.dp * p.tp * p.pp * p.cp}")
    if not cfg.plan_only:
        require(cfg, "parallel.cp", lambda v: v == 1,
                "1 (context parallelism is planned by plan_only=true but not run here)")
    require(cfg, "parallel.ep", lambda v: v == 1, "1 (a dense model has no experts)")
    require(cfg, "parallel.tp", lambda v: a.n_heads % v == 0 and a.n_kv_heads % v == 0,
            f"a divisor of n_heads={a.n_heads} and n_kv_heads={a.n_kv_heads} ({s}): each rank "
            "takes whole heads")
    require(cfg, "parallel.tp", lambda v: a.ffn_dim % v == 0 and a.vocab_size % v == 0,
            f"a divisor of ffn_dim={a.ffn_dim} and vocab_size={a.vocab_size} ({s})")
    require(cfg, "parallel.tp", lambda v: a.seq_len % v == 0,
            f"a divisor of seq_len={a.seq_len} ({s}; sequence parallel splits the sequence)")
    require(cfg, "parallel.pp", lambda v: a.n_layers % v == 0,
            f"a divisor of n_layers={a.n_layers} ({s}): stages hold equal layer counts")


def _validate_batches(cfg, s, a, p) -> None:
    per_replica = a.micro_batch_size * p.dp
    require(cfg, f"{s}.global_batch_size", lambda v: v % per_replica == 0,
            f"a multiple of micro_batch_size x parallel.dp = {a.micro_batch_size} x {p.dp} "
            f"(gradient accumulation = global / (micro x dp))")
    accum = a.global_batch_size // per_replica
    if p.pp > 1:
        require(cfg, f"{s}.global_batch_size", lambda v: accum >= p.pp,
                f"at least micro_batch_size x dp x pp = {per_replica * p.pp} so every pipeline "
                "stage has a microbatch in flight")
        chunk = a.micro_batch_size * accum
    else:
        chunk = a.micro_batch_size
    require(cfg, f"{s}.eval_samples", lambda v: v % (p.dp * chunk) == 0,
            f"a multiple of {p.dp * chunk} (evaluation runs in batches of {chunk} per "
            f"data-parallel rank, {p.dp} ranks)")
    require(cfg, f"{s}.eval_every_samples", lambda v: v % a.global_batch_size == 0,
            f"a multiple of global_batch_size={a.global_batch_size}")


def _validate_dataset(cfg) -> None:
    d = cfg.dataset
    require(cfg, "dataset.name", lambda v: get(cfg, "dataset.train_prefix") is not None,
            "a Megatron text dataset (synthetic_c4 or c4) for a Llama model")
    require(cfg, "dataset.num_workers", lambda v: v >= 0, "an integer >= 0")
    if d.synthetic:
        positive_int("dataset.train_tokens", cfg)
        positive_int("dataset.validation_tokens", cfg)
        require(cfg, "dataset.target_margin", lambda v: v > 0, "a margin > 0 nats")
        t = "dataset.teacher"
        vocab = cfg.model[cfg.model.scale].vocab_size
        require(cfg, f"{t}.successors", lambda v: 1 <= v < vocab,
                f"between 1 and the vocabulary ({vocab}) - 1")
        require(cfg, f"{t}.mean_doc_tokens", lambda v: v > 1, "a length > 1 token")
        positive_int(f"{t}.g2_rank", cfg)
        if not cfg.plan_only and vocab > 65536:
            raise ConfigError(f"model.{cfg.model.scale}.vocab_size", vocab,
                              "at most 65536 for the synthetic corpus (its teacher is a "
                              "vocab x vocab table; use dataset=c4 for the full vocabulary)")
    elif not cfg.plan_only:
        path = get(cfg, "dataset.path")
        if not path or not os.path.isdir(str(path)):
            raise ConfigError("dataset.path", path, "a folder holding the Megatron C4 files "
                              f"{d.train_prefix}.bin/.idx and {d.validation_prefix}.bin/.idx "
                              "(or set PINCHPOINT_C4_PATH)")
        for prefix in (d.train_prefix, d.validation_prefix):
            for ext in (".bin", ".idx"):
                if not os.path.exists(os.path.join(str(path), prefix + ext)):
                    raise ConfigError("dataset.train_prefix" if prefix == d.train_prefix else
                                      "dataset.validation_prefix", prefix,
                                      f"a prefix with {prefix}{ext} in {path}")
