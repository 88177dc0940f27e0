"""Rotary position embedding in the "rotate half" convention (Hugging Face / Megatron for GPT-OSS
and DeepSeek V3): the first and second halves of each head's rope dimensions form the pairs."""
from __future__ import annotations

import torch


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
