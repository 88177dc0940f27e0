"""Llama 3.1 decoder (torchtitan-style): RMSNorm, RoPE with the 3.1 frequency scaling, GQA through
torch's scaled_dot_product_attention, SwiGLU MLP, untied input/output embeddings.

Layers live in a ModuleDict keyed by their global index and the embedding/norm/output may be
None, so a pipeline stage is this same class with the other stages' parts removed: parameter
names (FQNs) stay those of the full model, which is what lets distributed checkpoints move
between layouts and world sizes. Attention reshapes with ``-1`` heads so a tensor-parallel shard
(heads / tp per rank) runs the same code.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from pinchpoint.workloads.common.decoder import FeedForward
from pinchpoint.workloads.common.rotary import KeepsRotaryPrecision


@dataclass
class LlamaArgs:
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    ffn_dim: int
    vocab_size: int
    max_seq_len: int
    rope_theta: float = 500000.0
    rope_scaling: bool = True      # Llama 3.1 long-context frequency scaling
    norm_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


def rope_frequencies(head_dim: int, theta: float, scaling: bool, factor: float = 8.0,
                     low_freq_factor: float = 1.0, high_freq_factor: float = 4.0,
                     original_context: int = 8192) -> torch.Tensor:
    """Inverse frequencies, with Llama 3.1's scaling: wavelengths longer than the original
    context / low_freq_factor are slowed by ``factor``, shorter than / high_freq_factor are kept,
    and the band between is interpolated smoothly (as in Meta's reference apply_scaling)."""
    freqs = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    if not scaling:
        return freqs
    low_wavelen = original_context / low_freq_factor
    high_wavelen = original_context / high_freq_factor
    wavelen = 2 * math.pi / freqs
    smooth = (original_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    mid = (1 - smooth) * freqs / factor + smooth * freqs
    return torch.where(wavelen > low_wavelen, freqs / factor,
                       torch.where(wavelen < high_wavelen, freqs, mid))


def precompute_freqs_cis(args: LlamaArgs) -> torch.Tensor:
    freqs = rope_frequencies(args.head_dim, args.rope_theta, args.rope_scaling)
    t = torch.arange(args.max_seq_len, dtype=torch.float64)
    angles = torch.outer(t, freqs)
    return torch.polar(torch.ones_like(angles), angles).to(torch.complex64)  # (seq, head_dim/2)


def apply_rotary(x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
    """x (batch, seq, heads, head_dim): rotate adjacent pairs (Meta's interleaved convention)."""
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    out = torch.view_as_real(xc * freqs_cis[: x.shape[1]].view(1, x.shape[1], 1, -1))
    return out.flatten(3).type_as(x)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


class Attention(nn.Module):
    def __init__(self, args: LlamaArgs):
        super().__init__()
        self.head_dim = args.head_dim
        self.wq = nn.Linear(args.dim, args.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(args.dim, args.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(args.dim, args.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(args.n_heads * self.head_dim, args.dim, bias=False)

    def forward(self, x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
        bsz, seq, _ = x.shape
        q = self.wq(x).view(bsz, seq, -1, self.head_dim)   # -1: local heads under TP
        k = self.wk(x).view(bsz, seq, -1, self.head_dim)
        v = self.wv(x).view(bsz, seq, -1, self.head_dim)
        q, k = apply_rotary(q, freqs_cis), apply_rotary(k, freqs_cis)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        # GQA: each KV head serves n_heads / n_kv_heads query heads (same ratio per TP shard).
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                             enable_gqa=q.shape[1] != k.shape[1])
        return self.wo(out.transpose(1, 2).reshape(bsz, seq, -1))


class TransformerBlock(nn.Module):
    def __init__(self, args: LlamaArgs):
        super().__init__()
        self.attention_norm = RMSNorm(args.dim, args.norm_eps)
        self.attention = Attention(args)
        self.ffn_norm = RMSNorm(args.dim, args.norm_eps)
        self.feed_forward = FeedForward(args.dim, args.ffn_dim)

    def forward(self, x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), freqs_cis)
        return h + self.feed_forward(self.ffn_norm(h))


class Llama(KeepsRotaryPrecision):
    # complex64 through .to(torch.bfloat16) would keep only the cosines (torch merely warns)
    rotary_buffers = ("freqs_cis",)

    def __init__(self, args: LlamaArgs):
        super().__init__()
        self.args = args
        self.tok_embeddings: Optional[nn.Embedding] = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleDict({str(i): TransformerBlock(args) for i in range(args.n_layers)})
        self.norm: Optional[RMSNorm] = RMSNorm(args.dim, args.norm_eps)
        self.output: Optional[nn.Linear] = nn.Linear(args.dim, args.vocab_size, bias=False)
        # Not persistent: recomputed from args, so checkpoints hold only learned state. Kept
        # complex64 when the model is cast (KeepsRotaryPrecision).
        self.register_buffer("freqs_cis", precompute_freqs_cis(args), persistent=False)
        self.recompute = False  # activation checkpointing per block (set by parallelize)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Normal(0.02) everywhere; residual output projections scaled by depth (as GPT-2 and
        torchtitan do) so the residual stream's variance does not grow with the layer count."""
        depth_std = 0.02 / math.sqrt(2 * self.args.n_layers)
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                nn.init.ones_(p)
            elif name.endswith(("wo.weight", "w2.weight")):
                nn.init.trunc_normal_(p, std=depth_std, a=-3 * depth_std, b=3 * depth_std)
            else:
                nn.init.trunc_normal_(p, std=0.02, a=-0.06, b=0.06)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (batch, seq) int64 on the first stage, hidden states on later stages; returns
        logits (batch, seq, vocab) on the last stage, hidden states otherwise."""
        h = self.tok_embeddings(tokens) if self.tok_embeddings is not None else tokens
        for layer in self.layers.values():
            if self.recompute and self.training:
                h = torch.utils.checkpoint.checkpoint(layer, h, self.freqs_cis,
                                                      use_reentrant=False)
            else:
                h = layer(h, self.freqs_cis)
        h = self.norm(h) if self.norm is not None else h
        return self.output(h) if self.output is not None else h
