"""Published checkpoints by name (torchtitan's StateDictAdapter idea, its to_hf / from_hf): a
workload whose model has released weights has an adapter between its state dict and the names and
layouts the publisher ships, and these functions read and write safetensors through it.

Loading checks every name and shape before reading a byte of weights: the files' headers become
meta tensors, the adapter converts them as it would the real ones, and the result is held
against the model's state dict, so a checkpoint of another architecture or scale fails with the
offending names (as llama2_70b_lora/hf_checkpoint.py does for LoRA's base). It loads into an
unsharded model on one host: shard it afterwards.
"""
from __future__ import annotations

import json
import os
import re
from typing import Optional

import torch
from torch import nn

from pinchpoint.errors import DataError

INDEX = "model.safetensors.index.json"
SHOWN = 5   # offending tensors listed per kind in a mismatch error
DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
          "BF16": torch.bfloat16, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
          "U8": torch.uint8, "BOOL": torch.bool}


class StateDictAdapter:
    """Converts between a model's state dict and its publisher's checkpoint. Subclasses say whose
    names they speak (``published``) and convert whole state dicts, tensors included (fused or
    split projections, reordered rows, dequantised experts)."""
    published = ""

    def to_published(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def from_published(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError


class Renames:
    """Name templates both ways, {} standing for an index: {"layers.{}.attention.wq.weight":
    "model.layers.{}.self_attn.q_proj.weight", ...} (ours: theirs)."""

    def __init__(self, ours_to_theirs: dict[str, str]):
        self._out = [(_template(ours), theirs) for ours, theirs in ours_to_theirs.items()]
        self._in = [(_template(theirs), ours) for ours, theirs in ours_to_theirs.items()]

    def to_published(self, name: str) -> Optional[str]:
        return _rename(name, self._out)

    def from_published(self, name: str) -> Optional[str]:
        return _rename(name, self._in)


def _template(template: str) -> re.Pattern:
    return re.compile("^" + re.escape(template).replace(r"\{\}", r"(\d+)") + "$")


def _rename(name: str, rules) -> Optional[str]:
    for pattern, target in rules:
        match = pattern.match(name)
        if match:
            return target.format(*match.groups())
    return None


def rename_all(state: dict[str, torch.Tensor], rename, what: str) -> dict[str, torch.Tensor]:
    """``state`` with every name passed through ``rename``; a name it does not know is an error
    (``what`` says which side it came from)."""
    out, unknown = {}, []
    for name, tensor in state.items():
        new = rename(name)
        if new is None:
            unknown.append(name)
        else:
            out[new] = tensor
    if unknown:
        raise KeyError(f"{len(unknown)} {what} name(s) with no counterpart: "
                       + _listed(sorted(unknown)))
    return out


def _listed(items: list[str]) -> str:
    return ", ".join(items[:SHOWN]) + (" ..." if len(items) > SHOWN else "")


# --- rotary row orders -------------------------------------------------------------------------
def interleaved_to_halves(w: torch.Tensor, groups: int) -> torch.Tensor:
    """Rows of ``groups`` heads, each with rotary pairs (2i, 2i+1) (Meta's and DeepSeek's complex
    convention), reordered so the pairs are (i, i + d/2) ("rotate half", Hugging Face's)."""
    rows = w.shape[0]
    return w.reshape(groups, rows // groups // 2, 2, *w.shape[1:]).transpose(1, 2) \
        .reshape(w.shape)


def halves_to_interleaved(w: torch.Tensor, groups: int) -> torch.Tensor:
    """The inverse of ``interleaved_to_halves``."""
    rows = w.shape[0]
    return w.reshape(groups, 2, rows // groups // 2, *w.shape[1:]).transpose(1, 2) \
        .reshape(w.shape)


# --- files ------------------------------------------------------------------------------------
def tensor_files(path: str) -> dict[str, str]:
    """Tensor name -> file for a .safetensors file, or a folder with an index
    (model.safetensors.index.json) or with .safetensors files."""
    from safetensors import safe_open
    if os.path.isfile(path):
        files = [path]
    elif os.path.isfile(os.path.join(path, INDEX)):
        with open(os.path.join(path, INDEX)) as f:
            return {n: os.path.join(path, file) for n, file in json.load(f)["weight_map"].items()}
    elif os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path)
                       if f.endswith(".safetensors"))
    else:
        files = []
    if not files:
        raise DataError(path, "no .safetensors file or model.safetensors.index.json there")
    out = {}
    for file in files:
        with safe_open(file, framework="pt") as f:
            out.update({name: file for name in f.keys()})
    return out


def _headers_as_meta(files: dict[str, str]) -> dict[str, torch.Tensor]:
    """Every tensor as a meta tensor of its stored shape and dtype (nothing read but headers)."""
    from safetensors import safe_open
    out = {}
    for file in sorted(set(files.values())):
        with safe_open(file, framework="pt") as f:
            for name in f.keys():
                info = f.get_slice(name)
                if info.get_dtype() not in DTYPES:
                    raise DataError(file, f"{name} is stored as {info.get_dtype()}, not one of "
                                          + ", ".join(DTYPES))
                out[name] = torch.empty(info.get_shape(), dtype=DTYPES[info.get_dtype()],
                                        device="meta")
    return out


def _read(files: dict[str, str]) -> dict[str, torch.Tensor]:
    from safetensors import safe_open
    out = {}
    for file in sorted(set(files.values())):
        with safe_open(file, framework="pt") as f:
            out.update({name: f.get_tensor(name) for name in f.keys()})
    return out


def check_published(model: nn.Module, adapter: StateDictAdapter, path: str,
                    files: Optional[dict[str, str]] = None) -> None:
    """Raise a DataError naming the first missing, unexpected and wrong-shaped tensors unless
    the checkpoint at ``path`` converts to exactly ``model``'s names and shapes."""
    files = files if files is not None else tensor_files(path)
    try:
        converted = adapter.from_published(_headers_as_meta(files))
    except KeyError as e:
        raise DataError(path, f"is not {adapter.published}: {e.args[0]}") from None
    differences = _differences({n: tuple(t.shape) for n, t in model.state_dict().items()},
                               {n: tuple(t.shape) for n, t in converted.items()})
    if differences:
        raise DataError(path, f"does not fit this model (read as {adapter.published}, listed "
                              "under the model's names): " + "; ".join(differences))


def _differences(expected: dict[str, tuple], got: dict[str, tuple]) -> list[str]:
    """"missing (n): a, b ..." / "unexpected ..." / "wrong shape ..." for what differs."""
    missing = sorted(n for n in expected if n not in got)
    unexpected = sorted(n for n in got if n not in expected)
    wrong = [f"{n} {list(got[n])} (model {list(expected[n])})" for n in sorted(expected)
             if n in got and got[n] != expected[n]]
    kinds = (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
    return [f"{kind} ({len(items)}): {_listed(items)}" for kind, items in kinds if items]


def load_published(model: nn.Module, adapter: StateDictAdapter, path: str) -> int:
    """Copy the published checkpoint at ``path`` into ``model`` (names and shapes checked first,
    see check_published); returns the bytes read."""
    files = tensor_files(path)
    check_published(model, adapter, path, files)
    stored = _read(files)
    nbytes = sum(t.numel() * t.element_size() for t in stored.values())
    with torch.no_grad():
        model.load_state_dict(adapter.from_published(stored), strict=True)
    return nbytes


def save_published(model: nn.Module, adapter: StateDictAdapter, file: str) -> dict[str, list]:
    """Write ``model``'s state under the published names as one safetensors file; returns
    {name: shape} of what was written."""
    from safetensors.torch import save_file
    state = adapter.to_published({n: t.detach() for n, t in model.state_dict().items()})
    # clone: split projections are views of one tensor, which safetensors refuses to write
    save_file({n: t.cpu().contiguous().clone() for n, t in state.items()}, file,
              metadata={"format": "pt"})
    return {n: list(t.shape) for n, t in state.items()}
