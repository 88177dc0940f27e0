"""Synthetic FLUX.1 data in both on-disk formats, from the same underlying samples.

The planted relation: each caption names a coloured shape, where it sits and the background
("a red circle at top left on blue background"), and the image is that scene drawn with PIL plus
a small positional jitter and pixel noise. The caption therefore fixes the image up to jitter and
noise, so a text-conditioned flow model can drive its validation loss far below what an
unconditional one reaches; the unavoidable floor is the t = 0 term (timestep index 0: the noise
itself must be predicted, MSE 1), i.e. a mean over the 8 timesteps of at least ~1/8.

Order of generation, as the reference: raw tar shards (train; val with a timestep index per
sample, equal counts per index) -> frozen encoders built at the scale's size with random weights
(the VAE calibrated to a trained one's latent statistics) and saved -> ``preprocess``: the raw
shards are read back through the raw pipeline's own reader and encoded into the preprocessed
columns. Generated once per parameter set on the storage tier (pinchpoint.data.generated).
"""
from __future__ import annotations

import io
import json
import logging
import os

import numpy as np
import torch

from pinchpoint.data import generated
from pinchpoint.storage.atomic import sha256_file

from . import encoders as enc_lib
from .data_preprocessed import PreprocessedWriter
from .data_raw import RawFluxDataset, RawShards, collate

log = logging.getLogger(__name__)

COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 220),
          "yellow": (230, 210, 40), "cyan": (40, 210, 210), "magenta": (200, 50, 200),
          "white": (245, 245, 245), "black": (15, 15, 15)}
SHAPES = ("circle", "square", "triangle", "cross")
ROWS, COLS = ("top", "bottom"), ("left", "right")
VOCAB = ["a", "at", "on", "background", *COLORS, *SHAPES, *ROWS, *COLS]
VALIDATION_TIMESTEPS = 8


def scene(rng: np.random.Generator, colors: int, shapes: int) -> dict:
    palette = list(COLORS)[:colors]
    bg = rng.choice(palette)
    color = rng.choice([c for c in palette if c != bg])
    return {"bg": str(bg), "color": str(color), "shape": str(rng.choice(SHAPES[:shapes])),
            "row": int(rng.integers(2)), "col": int(rng.integers(2))}


def caption(s: dict) -> str:
    return f"a {s['color']} {s['shape']} at {ROWS[s['row']]} {COLS[s['col']]} on {s['bg']} background"


def draw(s: dict, size: int, rng: np.random.Generator, jitter: float, noise: float) -> np.ndarray:
    """The scene as (size, size, 3) uint8; ``jitter`` as a fraction of the size."""
    from PIL import Image, ImageDraw
    img = Image.new("RGB", (size, size), COLORS[s["bg"]])
    d = ImageDraw.Draw(img)
    r = size * 0.2
    j = jitter * size
    cx = size * (0.27 + 0.46 * s["col"]) + rng.uniform(-j, j)
    cy = size * (0.27 + 0.46 * s["row"]) + rng.uniform(-j, j)
    fill = COLORS[s["color"]]
    box = (cx - r, cy - r, cx + r, cy + r)
    if s["shape"] == "circle":
        d.ellipse(box, fill=fill)
    elif s["shape"] == "square":
        d.rectangle(box, fill=fill)
    elif s["shape"] == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    else:
        w = r * 0.4
        d.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fill)
        d.rectangle((cx - w, cy - r, cx + w, cy + r), fill=fill)
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, noise * 255, (size, size, 3))
    return np.clip(arr, 0, 255).astype(np.uint8)


def encode_image(arr: np.ndarray, fmt: str, quality: int) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    if fmt == "png":
        Image.fromarray(arr).save(buf, format="PNG")
    else:
        Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def write_raw(folder: str, n: int, p: dict, seed: int, with_timestep: bool) -> None:
    """``n`` samples in tar shards of ``samples_per_shard`` (webdataset's TarWriter)."""
    import webdataset as wds
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    stored = p["image_size"] * p["stored_size_factor"]
    ext = "jpg" if p["image_format"] == "jpg" else "png"
    per = p["samples_per_shard"]
    for first in range(0, n, per):
        with wds.TarWriter(os.path.join(folder, f"shard-{first // per:05d}.tar"),
                           encoder=False) as tar:
            for i in range(first, min(first + per, n)):
                s = scene(rng, p["num_colors"], p["num_shapes"])
                sample = {"__key__": f"{i:08d}",
                          ext: encode_image(draw(s, stored, rng, p["jitter"], p["pixel_noise"]),
                                            ext, p["jpeg_quality"]),
                          "txt": caption(s).encode()}
                if with_timestep:   # COCO-style metadata: equal counts per index 0..7
                    sample["json"] = json.dumps({"timestep": i % VALIDATION_TIMESTEPS}).encode()
                tar.write(sample)


def preprocess(raw_folder: str, out_folder: str, encoders: enc_lib.FrozenEncoders,
               image_size: int, fmt: str, samples_per_file: int, with_timestep: bool,
               batch_size: int = 64) -> int:
    """The reference's preprocessing: raw shards -> T5/CLIP encodings and the VAE posterior's
    mean and logvar, bf16 stored as uint16, in columnar shards. Returns rows written."""
    shards = RawShards(raw_folder, need_timestep=with_timestep)
    data = RawFluxDataset(shards, image_size, seed=0)
    writer = PreprocessedWriter(out_folder, fmt, samples_per_file, with_timestep)
    for first in range(0, len(data), batch_size):
        idx = range(first, min(first + batch_size, len(data)))
        batch = collate([data[i] for i in idx])
        t5, clip = encoders.encode_text(*encoders.tokenize(batch["caption"]))
        mean, logvar = encoders.encode_images(batch["image"])
        for j, i in enumerate(idx):
            writer.add(shards.samples[i].key, t5[j], clip[j], mean[j], logvar[j],
                       batch["timestep"][j] if with_timestep else None)
    writer.flush()
    shards.close()
    return len(data)


def save_empty_encodings(folder: str, encoders: enc_lib.FrozenEncoders) -> None:
    """Encodings of the empty caption, used for classifier-free-guidance dropout (the
    reference's t5_empty.npy / clip_empty.npy)."""
    os.makedirs(folder, exist_ok=True)
    t5, clip = encoders.encode_text(*encoders.tokenize([""]))
    np.save(os.path.join(folder, "t5_empty.npy"), t5.float().numpy())
    np.save(os.path.join(folder, "clip_empty.npy"), clip.float().numpy())


def generate(folder: str, p: dict) -> dict:
    write_raw(os.path.join(folder, "raw", "train"), p["train_samples"], p, p["seed"], False)
    write_raw(os.path.join(folder, "raw", "val"), p["eval_samples"], p, p["seed"] + 1, True)
    encoders = build_encoders(folder, p)
    for split, with_ts in (("train", False), ("val", True)):
        preprocess(os.path.join(folder, "raw", split),
                   os.path.join(folder, "preprocessed", split), encoders, p["image_size"],
                   p["columnar_format"], p["samples_per_shard"], with_ts)
    save_empty_encodings(os.path.join(folder, "preprocessed", "empty_encodings"), encoders)
    floor = best_reachable(folder, p)
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            files[os.path.relpath(path, folder)] = {"bytes": os.path.getsize(path),
                                                    "sha256": sha256_file(path)}
    return {"params": p, "files": files, **floor}


def flow_floor(t: float, w: torch.Tensor) -> torch.Tensor:
    """Least MSE of the velocity n - x0 given x_t = (1-t) x0 + t n, when x0 ~ N(mu, w) with mu
    known (from the caption) and n ~ N(0, 1): Var(n - x0 | x_t), per element."""
    cov = t - (1 - t) * w
    return 1 + w - cov ** 2 / ((1 - t) ** 2 * w + t ** 2).clamp_min(1e-12)


def best_reachable(folder: str, p: dict) -> dict:
    """The validation loss of a model that knows each caption's mean latent exactly (Gaussian
    approximation per latent element): what is left is the within-caption spread (pixel noise,
    jitter, JPEG) plus the VAE posterior's, averaged over the 8 validation timesteps."""
    from .data_preprocessed import ExpectedShapes, PreprocessedBatches, PreprocessedShards
    side = p["image_size"] // 2 ** (len(p["vae"]["block_out_channels"]) - 1)
    expect = ExpectedShapes((p["t5"]["max_tokens"], p["t5"]["d_model"]),
                            (p["clip"]["hidden_size"],), (p["vae"]["latent_channels"], side, side))
    shards = PreprocessedShards(os.path.join(folder, "preprocessed", "train"),
                                p["columnar_format"], expect)
    rows = PreprocessedBatches(shards).batch(range(len(shards)))
    scale = p["vae"]["scale"]
    x = (rows["mean"].float() - p["vae"]["shift"]) * scale
    posterior = (rows["logvar"].float().exp() * scale ** 2).mean(0)
    raw = RawShards(os.path.join(folder, "raw", "train"))
    groups: dict[str, list[int]] = {}
    for i in range(len(raw)):
        groups.setdefault(raw.read(i)[0]["txt"].decode(), []).append(i)
    raw.close()
    sq, dof = torch.zeros_like(x[0]), 0
    for idx in groups.values():
        if len(idx) > 1:
            g = x[idx]
            sq += ((g - g.mean(0)) ** 2).sum(0)
            dof += len(idx) - 1
    w = sq / max(dof, 1) + posterior
    floor = torch.stack([flow_floor(k / VALIDATION_TIMESTEPS, w).mean()
                         for k in range(VALIDATION_TIMESTEPS)]).mean()
    return {"best_reachable_val_loss": round(float(floor), 5),
            "within_caption_latent_variance": float(w.mean()),
            "latent_variance": float(x.var(0).mean()), "captions": len(groups)}


def build_encoders(folder: str, p: dict) -> enc_lib.FrozenEncoders:
    """Random-weight encoders of the scale's shape, VAE calibrated on training images, saved."""
    from types import SimpleNamespace as NS
    shape = NS(t5=NS(**p["t5"]), clip=NS(**p["clip"]), vae=NS(**p["vae"]))
    encoders = enc_lib.build_random(shape, VOCAB, p["seed"])
    shards = RawShards(os.path.join(folder, "raw", "train"))
    data = RawFluxDataset(shards, p["image_size"], seed=0)
    images = collate([data[i] for i in range(min(len(data), 256))])["image"]
    shards.close()
    enc_lib.calibrate_vae(encoders, images, p["vae"]["shift"], p["vae"]["scale"])
    enc_lib.save(encoders, os.path.join(folder, "encoders"))
    return encoders


def params(scale, dataset) -> dict:
    """What fixes the generated files (their hash names the folder): both formats, one set."""
    from dataclasses import asdict, is_dataclass
    as_dict = (lambda x: asdict(x) if is_dataclass(x) else dict(x))
    syn = dataset.synthetic_data
    return {"image_size": scale.image_size, "train_samples": scale.train_samples,
            "eval_samples": scale.eval_samples, "image_format": dataset.image_format,
            "jpeg_quality": dataset.jpeg_quality, "samples_per_shard": dataset.samples_per_shard,
            "columnar_format": dataset.columnar_format, "pixel_noise": syn.pixel_noise,
            "jitter": syn.jitter, "stored_size_factor": syn.stored_size_factor,
            "num_colors": syn.num_colors, "num_shapes": syn.num_shapes,
            "seed": syn.seed, "t5": as_dict(scale.t5), "clip": as_dict(scale.clip),
            "vae": {**as_dict(scale.vae),
                    "block_out_channels": list(scale.vae.block_out_channels)}}


def ensure(datasets_dir: str, params: dict) -> tuple[str, dict]:
    folder, manifest, _ = generated.ensure(datasets_dir, "flux1_synthetic", params, generate)
    return folder, manifest
