"""Base checkpoints in Hugging Face's on-disk format: ``config.json`` plus safetensors weights,
one file (``model.safetensors``) or shards listed in ``model.safetensors.index.json``, tensors
under Hugging Face Llama names. Read and written with the ``safetensors`` package.

The reference loads "llama-v2-fused-qkv" (q, k, v already concatenated into ``qkv_proj``); a
stock Hugging Face Llama 2 checkpoint has ``q_proj``/``k_proj``/``v_proj``, which are fused here
on load in the same order (q, then k, then v). Hugging Face stores q and k already permuted for
its rotate-half RoPE, which is the convention model.py uses, so no further permutation is needed.
"""
from __future__ import annotations

import contextlib
import json
import os
from typing import Iterable

import torch
from torch import nn

from pinchpoint.errors import ConfigError, DataError

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
SHOWN = 5  # offending tensors listed per kind in a mismatch error


def weight_files(folder: str) -> dict[str, str]:
    """Tensor name -> file path of the checkpoint in ``folder``."""
    index = os.path.join(folder, INDEX)
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        return {name: os.path.join(folder, file) for name, file in weight_map.items()}
    single = os.path.join(folder, SINGLE)
    if not os.path.exists(single):
        raise DataError(folder, f"no {INDEX} or {SINGLE}: not a Hugging Face safetensors "
                                "checkpoint folder")
    from safetensors import safe_open
    with safe_open(single, framework="pt") as f:
        return {name: single for name in f.keys()}


def hf_config(args) -> dict:
    """The config.json fields that define a Llama 2 architecture (Hugging Face names)."""
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_size": args.dim, "num_hidden_layers": args.n_layers,
            "num_attention_heads": args.n_heads, "num_key_value_heads": args.n_kv_heads,
            "intermediate_size": args.ffn_dim, "vocab_size": args.vocab_size,
            "rms_norm_eps": args.norm_eps, "rope_theta": args.rope_theta,
            "max_position_embeddings": args.max_seq_len, "tie_word_embeddings": False,
            "hidden_act": "silu", "torch_dtype": "float32"}


ARCH_FIELDS = {"hidden_size": "dim", "num_hidden_layers": "n_layers",
               "num_attention_heads": "n_heads", "num_key_value_heads": "n_kv_heads",
               "intermediate_size": "ffn_dim", "vocab_size": "vocab_size"}


def check_architecture(folder: str, args, field: str = "model.base_checkpoint") -> None:
    """Refuse a checkpoint whose config.json describes another architecture (before any tensor
    is read). A folder without config.json is judged by its tensor shapes on load."""
    if not os.path.isdir(folder):
        raise ConfigError(field, folder, "an existing folder holding a Hugging Face Llama "
                                         "safetensors checkpoint (config.json + *.safetensors)")
    path = os.path.join(folder, "config.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        config = json.load(f)
    wrong = [f"{k}={config.get(k)} (model has {getattr(args, a)})"
             for k, a in ARCH_FIELDS.items() if config.get(k, getattr(args, a)) != getattr(args, a)]
    if wrong:
        raise ConfigError(field, folder, "a checkpoint of this model's architecture; its "
                                         "config.json has " + ", ".join(wrong))


def _fuse_qkv(names: Iterable[str]) -> dict[str, list[str]]:
    """Expected fused name -> the stock Hugging Face names it is made of, where the checkpoint
    has separate q/k/v projections."""
    out = {}
    for name in names:
        if name.endswith("self_attn.q_proj.weight"):
            stem = name[: -len("q_proj.weight")]
            out[stem + "qkv_proj.weight"] = [stem + p + "_proj.weight" for p in "qkv"]
    return out


def _mismatch(folder, files, fused, shapes, expected) -> None:
    available = set(files) | set(fused)
    parts_of_fused = {p for parts in fused.values() for p in parts}
    missing = sorted(n for n in expected if n not in available)
    unexpected = sorted(n for n in files if n not in expected and n not in parts_of_fused)
    wrong = [f"{n} {shapes(n)} (model {list(expected[n])})" for n in sorted(expected)
             if n in available and shapes(n) != list(expected[n])]
    if missing or unexpected or wrong:
        parts = [f"{kind} ({len(items)}): {', '.join(items[:SHOWN])}"
                 + (" ..." if len(items) > SHOWN else "")
                 for kind, items in (("missing", missing), ("unexpected", unexpected),
                                     ("wrong shape", wrong)) if items]
        raise DataError(folder, "does not match the model's Hugging Face Llama names and "
                                "shapes; " + "; ".join(parts))


def load_base(model: nn.Module, folder: str) -> int:
    """Copy the checkpoint's tensors into ``model``'s base (non-adapter) parameters, matched by
    name. Every base name must be present at its shape and nothing left over; otherwise a
    DataError lists the first offending tensors (before anything is copied). Returns the bytes
    read. Loads into an unsharded model: shard it afterwards."""
    from safetensors import safe_open

    from pinchpoint.workloads.llama2_70b_lora.model import hf_name
    params = {hf_name(n): p for n, p in model.named_parameters() if ".lora_" not in n}
    expected = {n: p.shape for n, p in params.items()}
    files = weight_files(folder)
    fused = {k: v for k, v in _fuse_qkv(files).items() if k not in files}
    with contextlib.ExitStack() as stack:
        handles = {path: stack.enter_context(safe_open(path, framework="pt"))
                   for path in set(files.values())}

        def shape(name: str) -> list[int]:
            if name in fused:
                parts = [shape(p) for p in fused[name]]
                return [sum(s[0] for s in parts), *parts[0][1:]]
            return list(handles[files[name]].get_slice(name).get_shape())

        def tensor(name: str) -> torch.Tensor:
            if name in fused:
                return torch.cat([tensor(p) for p in fused[name]])
            return handles[files[name]].get_tensor(name)

        _mismatch(folder, files, fused, shape, expected)
        nbytes = 0
        with torch.no_grad():
            for name, param in params.items():
                value = tensor(name)
                param.copy_(value)
                nbytes += value.numel() * value.element_size()
    return nbytes


def hf_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The base weights of ``model`` (adapters left out) under Hugging Face names."""
    from pinchpoint.workloads.llama2_70b_lora.model import hf_name
    return {hf_name(n): t for n, t in model.state_dict().items() if ".lora_" not in n}


def save_base(state: dict[str, torch.Tensor], args, folder: str,
              shard_bytes: int = 2 ** 30) -> list[str]:
    """Write ``state`` (base weights, Hugging Face names) as safetensors shards of at most
    ``shard_bytes`` with the index and config.json, as ``save_pretrained`` lays them out."""
    from safetensors.torch import save_file
    os.makedirs(folder, exist_ok=True)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor.detach().contiguous().cpu()
        size += nbytes
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    if len(shards) == 1:
        names = [SINGLE]
    for name, shard in zip(names, shards):
        save_file(shard, os.path.join(folder, name), metadata={"format": "pt"})
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size()
                                                for t in state.values())},
                 "weight_map": {t: n for n, shard in zip(names, shards) for t in shard}}
        with open(os.path.join(folder, INDEX), "w") as f:
            json.dump(index, f, indent=1)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(hf_config(args), f, indent=1)
    return [*names, "config.json"] + ([INDEX] if len(shards) > 1 else [])
