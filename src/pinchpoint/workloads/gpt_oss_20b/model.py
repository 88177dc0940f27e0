"""GPT-OSS (OpenAI, 2025) as published: pre-norm decoder whose attention has biases on every
projection, grouped-query heads of width 64 (heads x head_dim need not equal the hidden size),
one learned "sink" logit per head that soaks up attention mass (softmax over [scores, sink], the
sink column dropped), alternating sliding-window (even layers, 128 tokens) and full causal
attention, RoPE base 150000, and a MoE feed-forward in every layer (softmax top-4 of 32
experts with biases and the clamped SwiGLU). Untied embeddings, RMSNorm eps 1e-5.

RoPE: plain by default, as the MLPerf reference (Megatron via Primus) trains. The released
checkpoint was trained with YaRN (x32 over 4096 positions, ``rope_scaling: yarn``), which is not
a long-context-only change: it multiplies cos/sin by 0.1 ln 32 + 1 = 1.347 and slows the low
frequencies, so the outputs differ at every position. Loading the released weights wants it on.

Layers live in a ModuleDict keyed by their global index and embedding/norm/output may be None,
so a pipeline stage is this class with the other stages' parts removed (names stay global).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from pinchpoint.workloads.common.decoder import DecoderStack, init_decoder_weights
from pinchpoint.workloads.common.moe import MoE, MoEArgs
from pinchpoint.workloads.common.rotary import (Yarn, apply_rotary, attention_factor,
                                                rotary_table, yarn_from_scale)


@dataclass
class GptOssArgs:
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab_size: int
    max_seq_len: int
    num_experts: int
    top_k: int
    expert_dim: int
    sliding_window: int = 128
    rope_theta: float = 150000.0
    norm_eps: float = 1e-5
    capacity_factor: Optional[float] = None
    yarn: Optional[Yarn] = None      # None: plain RoPE

    @classmethod
    def from_scale(cls, s) -> "GptOssArgs":
        return cls(**{k: getattr(s, k) for k in cls.__dataclass_fields__ if k != "yarn"},
                   yarn=yarn_from_scale(s))

    def moe_args(self) -> MoEArgs:
        return MoEArgs(dim=self.dim, expert_dim=self.expert_dim, num_experts=self.num_experts,
                       top_k=self.top_k, score_func="softmax", router_bias=True,
                       expert_biases=True, activation="gpt_oss",
                       capacity_factor=self.capacity_factor, balance_loss="switch")

    def window(self, layer: int) -> Optional[int]:
        return self.sliding_window if layer % 2 == 0 else None


def attention_mask(seq: int, window: Optional[int], device) -> torch.Tensor:
    """True where query i may see key j: j <= i, and i - j < window on sliding layers."""
    i = torch.arange(seq, device=device).unsqueeze(1)
    j = torch.arange(seq, device=device).unsqueeze(0)
    allowed = j <= i
    return allowed & (i - j < window) if window is not None else allowed


class Attention(nn.Module):
    def __init__(self, a: GptOssArgs, window: Optional[int]):
        super().__init__()
        self.head_dim, self.window = a.head_dim, window
        self.rope_scale = attention_factor(a.yarn)
        self.wq = nn.Linear(a.dim, a.n_heads * a.head_dim, bias=True)
        self.wk = nn.Linear(a.dim, a.n_kv_heads * a.head_dim, bias=True)
        self.wv = nn.Linear(a.dim, a.n_kv_heads * a.head_dim, bias=True)
        self.wo = nn.Linear(a.n_heads * a.head_dim, a.dim, bias=True)
        self.sinks = nn.Parameter(torch.zeros(a.n_heads))

    def forward(self, x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        bsz, seq, _ = x.shape
        q = apply_rotary(self.wq(x).view(bsz, seq, -1, self.head_dim), angles, self.rope_scale)
        k = apply_rotary(self.wk(x).view(bsz, seq, -1, self.head_dim), angles, self.rope_scale)
        v = self.wv(x).view(bsz, seq, -1, self.head_dim)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))        # (b, heads, seq, hd)
        groups = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
        scores = (q @ k.transpose(-1, -2)).float() / math.sqrt(self.head_dim)
        mask = attention_mask(seq, self.window, x.device)
        scores = scores.masked_fill(~mask, float("-inf"))
        # Under tensor parallelism the sinks are a head-sharded DTensor: use this rank's heads'.
        sinks = self.sinks.to_local() if isinstance(self.sinks, DTensor) else self.sinks
        sink = sinks.float().view(1, -1, 1, 1).expand(bsz, -1, seq, 1)
        probs = torch.cat([scores, sink], dim=-1).softmax(dim=-1)[..., :-1]
        out = probs.type_as(v) @ v
        return self.wo(out.transpose(1, 2).reshape(bsz, seq, -1))


class TransformerBlock(nn.Module):
    def __init__(self, a: GptOssArgs, layer: int):
        super().__init__()
        self.attention_norm = nn.RMSNorm(a.dim, eps=a.norm_eps)
        self.attention = Attention(a, a.window(layer))
        self.ffn_norm = nn.RMSNorm(a.dim, eps=a.norm_eps)
        self.moe = MoE(a.moe_args())

    def forward(self, x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), angles)
        return h + self.moe(self.ffn_norm(h))


class GptOss(DecoderStack):
    def __init__(self, a: GptOssArgs):
        super().__init__(a.vocab_size, a.dim, a.n_layers, a.norm_eps,
                         lambda i: TransformerBlock(a, i),
                         rotary_table(a.head_dim, a.rope_theta, a.max_seq_len, a.yarn))
        self.args = a
        init_decoder_weights(self, a.n_layers)
