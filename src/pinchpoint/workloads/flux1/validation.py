"""Pre-launch checks for FLUX.1 on the typed run config (the plan: plan.py). Every error names the
field (or, for real data, the file) and what is allowed."""
from __future__ import annotations

import os

from pinchpoint.errors import ConfigError, one_of, positive_int, require
from pinchpoint.parallel.dims import ParallelDims
from pinchpoint.workloads.flux1.splits import open_split

VAE_FACTOR_NOTE = "2 ** (len(vae.block_out_channels) - 1)"


def validate(run) -> None:
    m, d = run.model, run.dataset
    one_of(m.scale, "model.scale", ["proxy", "smoke", "full"])
    s, a = f"model.{m.scale}", getattr(m, m.scale)
    _check_architecture(s, a)
    _check_recipe(s, a)
    one_of(d.pipeline, "dataset.pipeline", ["raw", "preprocessed"])
    one_of(d.columnar_format, "dataset.columnar_format", ["arrow", "parquet"])
    one_of(d.image_format, "dataset.image_format", ["jpg", "png"])
    dims = ParallelDims.from_config(run.parallel)
    for key in ("tp", "pp", "cp", "ep"):
        require(getattr(dims, key), f"parallel.{key}", lambda v: v == 1,
                "1 (FLUX.1 runs data-parallel only, as the reference: DDP = "
                "parallel.dp_replicate, FSDP2 = parallel.dp_shard, HSDP = both)")
    if not d.synthetic:
        _check_real_data(run, a)


def _check_architecture(s: str, a) -> None:
    for key in ("hidden_size", "num_heads", "depth", "depth_single_blocks", "image_size"):
        positive_int(getattr(a, key), f"{s}.{key}")
    require(a.hidden_size, f"{s}.hidden_size", lambda v: v % a.num_heads == 0,
            f"a multiple of num_heads={a.num_heads} (each head takes hidden_size / num_heads)")
    head = a.hidden_size // a.num_heads
    require(list(a.axes_dim), f"{s}.axes_dim",
            lambda v: len(v) == 3 and sum(v) == head and all(x % 2 == 0 for x in v),
            f"three even numbers summing to the head dimension {head} (RoPE over index, row, "
            "column)")
    factor = 2 ** (len(a.vae.block_out_channels) - 1)
    step = factor * 2   # VAE downsampling, then 2x2 latent patches
    require(a.image_size, f"{s}.image_size", lambda v: v % step == 0,
            f"a multiple of {step} = VAE factor {factor} ({VAE_FACTOR_NOTE}) x patch size 2")
    require(a.vae.latent_channels, f"{s}.vae.latent_channels", lambda v: v > 0,
            "a positive channel count")
    for key in ("d_model", "max_tokens"):
        positive_int(getattr(a.t5, key), f"{s}.t5.{key}")
    positive_int(a.clip.hidden_size, f"{s}.clip.hidden_size")


def _check_recipe(s: str, a) -> None:
    for key in ("batch_size", "eval_every_samples", "eval_samples", "train_samples"):
        positive_int(getattr(a, key), f"{s}.{key}")
    require(a.eval_samples, f"{s}.eval_samples", lambda v: v % 8 == 0,
            "a multiple of 8: the validation set has equal counts per timestep index 0..7")
    require(a.learning_rate, f"{s}.learning_rate", lambda v: v > 0, "a positive number")
    require(a.cfg_dropout, f"{s}.cfg_dropout", lambda v: 0.0 <= v < 1.0, "in [0, 1)")
    require(a.target_val_loss, f"{s}.target_val_loss", lambda v: v > 0, "a positive loss")
    one_of(a.precision, f"{s}.precision", ["fp32", "bf16"])


def _check_real_data(run, a) -> None:
    """Real data: the folder layout exists and every shard is readable with the right columns
    and widths (DataError names the file) before any rank starts."""
    d = run.dataset
    if not d.path or not os.path.isdir(d.path):
        raise ConfigError("dataset.path", d.path, "an existing folder with raw/{train,val} tar "
                          "shards or preprocessed/{train,val} columnar shards")
    for split, val in (("train", False), ("val", True)):
        open_split(run.dataset, a, d.path, split, val, tier=None)
    if d.pipeline == "raw":
        enc = d.encoders_path or os.path.join(d.path, "encoders")
        if not os.path.isdir(enc):
            raise ConfigError("dataset.encoders_path", enc, "a folder with t5/, clip/ and vae/ "
                              "(save_pretrained layout) for the raw pipeline's frozen encoders")
