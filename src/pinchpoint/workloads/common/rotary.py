"""Rotary position embedding, the one implementation every decoder uses, in the "rotate half"
convention (Hugging Face's Llama, GPT-OSS and DeepSeek V3; Megatron's): the first and second
halves of each head's rope dimensions form the pairs. A checkpoint in Meta's adjacent-pairs
convention has its q/k rows reordered on load (state_dict_adapter.py), not its own rotation.

Frequencies are scaled for long context by Llama 3.1's rule (``Llama3Scaling``) or by YaRN (Peng
et al. 2023, arXiv:2309.00071), the scaling GPT-OSS's and DeepSeek V3's released checkpoints
were trained for: frequencies that turn fewer than ``beta_slow`` times over the original context
are slowed by ``factor``, those that turn more than ``beta_fast`` times are kept, the band
between is blended linearly, and cos/sin are multiplied by an attention factor. The arithmetic
is transformers' ``_compute_yarn_parameters`` (modeling_rope_utils.py), which Megatron's
YarnRotaryEmbedding (the MLPerf references) and OpenAI's gpt_oss RotaryEmbedding also compute.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Optional, Union

import torch
from torch import nn


@dataclass(frozen=True)
class Yarn:
    """The keys of a config.json ``rope_scaling: {type: yarn, ...}``, read as transformers does."""
    factor: float
    original_max_position_embeddings: int
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    mscale: Optional[float] = None          # both set: attention factor = their mscales' ratio
    mscale_all_dim: Optional[float] = None  # MLA also scales its softmax by this mscale squared
    truncate: bool = True                   # round the blend band to whole dimensions


@dataclass(frozen=True)
class Llama3Scaling:
    """Llama 3.1's ``rope_scaling: {rope_type: llama3, ...}``: wavelengths longer than the
    original context / low_freq_factor are slowed by ``factor``, those shorter than the
    original context / high_freq_factor are kept, the band between is interpolated (Meta's
    apply_scaling, transformers' _compute_llama3_parameters)."""
    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192

    def apply(self, inverse: torch.Tensor) -> torch.Tensor:
        context = self.original_max_position_embeddings
        wavelen = 2 * math.pi / inverse
        smooth = (context / wavelen - self.low_freq_factor) / \
            (self.high_freq_factor - self.low_freq_factor)
        mid = (1 - smooth) * inverse / self.factor + smooth * inverse
        return torch.where(wavelen > context / self.low_freq_factor, inverse / self.factor,
                           torch.where(wavelen < context / self.high_freq_factor, inverse, mid))


Scaling = Union[Yarn, Llama3Scaling, None]


def yarn_from_scale(s) -> Optional[Yarn]:
    """The scale config's ``rope_scaling`` ("none" | "yarn") with its ``yarn`` settings."""
    if s.rope_scaling == "none":
        return None
    return Yarn(**{f.name: getattr(s.yarn, f.name) for f in fields(Yarn)})


def yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    """YaRN's magnitude correction, 0.1 mscale ln(factor) + 1 (eq. 21 of the paper)."""
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def attention_factor(yarn: Optional[Yarn]) -> float:
    """What cos and sin are multiplied by (1.0 without YaRN)."""
    if yarn is None:
        return 1.0
    if yarn.mscale and yarn.mscale_all_dim:
        return yarn_mscale(yarn.factor, yarn.mscale) / yarn_mscale(yarn.factor, yarn.mscale_all_dim)
    return yarn_mscale(yarn.factor)


def softmax_scale_factor(yarn: Optional[Yarn]) -> float:
    """MLA's extra softmax scale (DeepSeek V3: mscale(factor, mscale_all_dim) squared)."""
    if yarn is None or not yarn.mscale_all_dim:
        return 1.0
    return yarn_mscale(yarn.factor, yarn.mscale_all_dim) ** 2


def inverse_frequencies(rope_dim: int, theta: float, scaling: Scaling = None) -> torch.Tensor:
    """(rope_dim / 2,) float32 inverse frequencies (float32 as transformers computes them),
    scaled for long context when ``scaling`` is given."""
    base = theta ** (torch.arange(0, rope_dim, 2, dtype=torch.float32) / rope_dim)
    if scaling is None:
        return 1.0 / base
    if isinstance(scaling, Llama3Scaling):
        return scaling.apply(1.0 / base)
    return _yarn_blend(base, rope_dim, theta, scaling)


def _yarn_blend(base: torch.Tensor, rope_dim: int, theta: float, yarn: Yarn) -> torch.Tensor:
    low, high = _blend_band(rope_dim, theta, yarn)
    if low == high:
        high += 0.001   # a one-dimension band: avoid dividing by zero (as transformers does)
    ramp = ((torch.arange(rope_dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    keep = 1 - ramp     # 1: the original frequency (fast dims), 0: slowed by factor (slow dims)
    return (1.0 / (yarn.factor * base)) * (1 - keep) + (1.0 / base) * keep


def _blend_band(rope_dim: int, theta: float, yarn: Yarn) -> tuple[float, float]:
    """The dimensions whose wavelength turns beta_fast (low) and beta_slow (high) times over the
    original context, clipped to [0, rope_dim - 1]."""
    def dim_turning(turns: float) -> float:
        return (rope_dim * math.log(yarn.original_max_position_embeddings / (turns * 2 * math.pi))
                / (2 * math.log(theta)))
    low, high = dim_turning(yarn.beta_fast), dim_turning(yarn.beta_slow)
    if yarn.truncate:
        low, high = math.floor(low), math.ceil(high)
    return max(low, 0), min(high, rope_dim - 1)


def rotary_table(rope_dim: int, theta: float, max_seq_len: int,
                 scaling: Scaling = None) -> torch.Tensor:
    """(max_seq_len, rope_dim) angles, duplicated over the two halves; cos/sin taken at use."""
    angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float32),
                         inverse_frequencies(rope_dim, theta, scaling))
    return torch.cat([angles, angles], dim=-1)


def apply_rotary(x: torch.Tensor, angles: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """x (batch, seq, heads, rope_dim) rotated by angles[:seq], times ``scale`` (YaRN's attention
    factor: multiplying cos and sin by it scales the rotated vector)."""
    a = angles[: x.shape[1]].view(1, x.shape[1], 1, -1)
    first, second = x.float().chunk(2, dim=-1)
    rotated = torch.cat([-second, first], dim=-1)
    out = x.float() * a.cos() + rotated * a.sin()
    return (out * scale if scale != 1.0 else out).type_as(x)


class KeepsRotaryPrecision(nn.Module):
    """A module whose rotary buffers (named in ``rotary_buffers``) keep their dtype when the module
    is cast (``.to(torch.bfloat16)``, ``.half()``): they are a function of positions, not learned
    weights, and a cast breaks them silently (bf16 angles are off by up to 8 rad at position
    4095). Device moves still apply."""
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
