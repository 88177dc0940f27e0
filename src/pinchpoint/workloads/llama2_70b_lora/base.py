"""The proxy's pretrained base, made once per storage tier like a dataset (data/generated.py:
folder named by a hash of everything that determines it, temp folder, manifest last, rename).

A real run points ``model.base_checkpoint`` at a Hugging Face Llama 2 checkpoint. The proxy has
none, so it pretrains its own: the full model (no adapters) trained on the *pretraining* task of
synthetic.py, then saved in the very format a real base comes in (safetensors, Hugging Face
names, config.json) and loaded through the same loader. Pretraining happens outside the run's
clock, as the reference's base is made long before its run.
"""
from __future__ import annotations

import logging
import math
import os
import time

import torch

from pinchpoint.data import generated
from pinchpoint.storage.atomic import sha256_file
from pinchpoint.workloads.llama2_70b_lora import hf_checkpoint, synthetic
from pinchpoint.workloads.llama2_70b_lora.model import (Llama2Args, Llama2ForCausalLM,
                                                        causal_lm_loss)

log = logging.getLogger(__name__)
# 2: pretrained from the shared decoder stack's init (truncated normal) and torch's RMSNorm.
FORMAT_VERSION = 2


def _mean_loss(model, rows: torch.Tensor, batch: int) -> float:
    model.eval()
    total, count = torch.zeros((), dtype=torch.float64), 0
    with torch.no_grad():
        for lo in range(0, len(rows), batch):
            loss, n = causal_lm_loss(model(rows[lo:lo + batch]), rows[lo:lo + batch])
            total += loss.double()
            count += int(n)
    model.train()
    return float(total) / count


def pretrain(args: Llama2Args, params: dict) -> tuple[Llama2ForCausalLM, dict]:
    """Train the whole model on the pretraining task: AdamW, linear warmup then cosine to 10 %."""
    p = params["pretrain"]
    torch.manual_seed(p["seed"])
    model = Llama2ForCausalLM(args)
    rows = torch.from_numpy(synthetic.pretraining_rows(
        args.vocab_size, params["task"], p["seq_len"], p["sequences"] + 64, p["seed"]))
    train, held_out = rows[:-64], rows[-64:]
    opt = torch.optim.AdamW(model.parameters(), lr=p["learning_rate"], betas=(0.9, 0.95),
                            weight_decay=0.1)
    steps = p["sequences"] // p["batch_size"]
    warmup = max(1, steps // 20)
    started = time.perf_counter()
    for step in range(steps):
        scale = (step + 1) / warmup if step < warmup else \
            0.1 + 0.45 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))
        for group in opt.param_groups:
            group["lr"] = p["learning_rate"] * scale
        batch = train[step * p["batch_size"]:(step + 1) * p["batch_size"]]
        loss, n = causal_lm_loss(model(batch), batch)
        opt.zero_grad(set_to_none=True)
        (loss / n).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    stats = {"pretrain_steps": steps, "pretrain_seconds": time.perf_counter() - started,
             "pretrain_held_out_loss": _mean_loss(model, held_out, p["batch_size"])}
    return model, stats


def generate(folder: str, params: dict) -> dict:
    args = Llama2Args(**params["architecture"])
    model, stats = pretrain(args, params)
    files = hf_checkpoint.save_base(hf_checkpoint.hf_state_dict(model), args, folder)
    meta = {name: {"bytes": os.path.getsize(os.path.join(folder, name)),
                   "sha256": sha256_file(os.path.join(folder, name))} for name in files}
    log.info("pretrained the proxy base in %.1f s: held-out loss %.4f on the pretraining task",
             stats["pretrain_seconds"], stats["pretrain_held_out_loss"])
    return {"format": "hf_llama_safetensors", "format_version": FORMAT_VERSION,
            "params": params, "files": meta, "created": time.time(), **stats}


def ensure(datasets_dir: str, args: Llama2Args, task: dict, pretrain_cfg: dict) -> tuple[str, dict]:
    """Folder (a Hugging Face checkpoint) and manifest of the base for these settings."""
    params = {"architecture": dict(args.__dict__), "task": task, "pretrain": pretrain_cfg,
              "format_version": FORMAT_VERSION}
    folder, manifest, _ = generated.ensure(datasets_dir, "llama2_lora_base", params, generate)
    return folder, manifest
