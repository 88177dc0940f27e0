"""Rotary position embedding in the "rotate half" convention (Hugging Face / Megatron for GPT-OSS
and DeepSeek V3): the first and second halves of each head's rope dimensions form the pairs."""
from __future__ import annotations

import torch
from torch import nn


def rotary_table(rope_dim: int, theta: float, max_seq_len: int) -> torch.Tensor:
    """(max_seq_len, rope_dim) angles, duplicated over the two halves; cos/sin taken at use."""
    freqs = 1.0 / theta ** (torch.arange(0, rope_dim, 2, dtype=torch.float32) / rope_dim)
    angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float32), freqs)
    return torch.cat([angles, angles], dim=-1)


def apply_rotary(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """x (batch, seq, heads, rope_dim) rotated by angles[:seq]."""
    a = angles[: x.shape[1]].view(1, x.shape[1], 1, -1)
    first, second = x.float().chunk(2, dim=-1)
    rotated = torch.cat([-second, first], dim=-1)
    return (x.float() * a.cos() + rotated * a.sin()).type_as(x)


class KeepsRotaryPrecision(nn.Module):
    """A module whose rotary buffers (named in ``rotary_buffers``) keep their dtype when the module
    is cast (``.to(torch.bfloat16)``, ``.half()``): they are a function of positions, not learned
    weights, and a cast breaks them silently (complex64 -> bf16 drops the sine part; bf16 angles
    are off by up to 8 rad at position 4095). Device moves still apply."""
    rotary_buffers: tuple[str, ...] = ()

    def _apply(self, fn, recurse=True):
        kept = {}
        for name in self.rotary_buffers:
            table = self._buffers.get(name)
            if table is None:
                continue
            # What fn does to this dtype, learnt on an empty tensor (no cast warning, no copy).
            probe = fn(torch.empty(0, dtype=table.dtype, device=table.device))
            if probe.dtype != table.dtype:
                kept[name], self._buffers[name] = (table, probe.device), None  # skipped by torch
        super()._apply(fn, recurse)
        for name, (table, device) in kept.items():
            self._buffers[name] = table.to(device)
        return self
