"""DeepSeek V3 (DeepSeek-AI, 2024) as published: pre-norm decoder with multi-head latent
attention (MLA) and, after the first ``n_dense_layers`` dense SwiGLU layers, a MoE feed-forward
(sigmoid router with a selection bias and group-limited routing, top-8 of 256 routed experts,
one always-on shared expert, weights renormalised and scaled by 2.5). RMSNorm eps 1e-6,
untied embeddings.

MLA: queries go through a low-rank latent (dim -> q_lora_rank, RMSNorm, -> heads x (nope +
rope)); keys and values share one compressed latent (dim -> kv_lora_rank, RMSNorm, -> heads x
(nope + v)), and a separate ``qk_rope_head_dim`` slice of the key, computed once from the
input and shared by all heads, carries the rotary position (decoupled RoPE). Softmax scale
1/sqrt(nope + rope).

RoPE with YaRN by default (``rope_scaling: yarn``: factor 40 over 4096 positions), as the
released checkpoint and the MLPerf reference (Megatron MLA) compute it: slowed low frequencies
and, with mscale_all_dim, the softmax scale multiplied by (0.1 ln 40 + 1)^2 = 1.874.

Not modelled: the multi-token-prediction module, which the 671 B count excludes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from pinchpoint.workloads.common.decoder import DecoderStack, FeedForward, init_decoder_weights
from pinchpoint.workloads.common.moe import MoE, MoEArgs
from pinchpoint.workloads.common.rotary import (Yarn, apply_rotary, attention_factor,
                                                rotary_table, softmax_scale_factor,
                                                yarn_from_scale)


@dataclass
class DeepSeekArgs:
    dim: int
    n_layers: int
    n_dense_layers: int
    dense_ffn_dim: int
    n_heads: int
    q_lora_rank: int
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    vocab_size: int
    max_seq_len: int
    num_experts: int
    top_k: int
    expert_dim: int
    num_groups: int
    top_groups: int
    shared_experts: int = 1
    route_scale: float = 2.5
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    capacity_factor: Optional[float] = None
    yarn: Optional[Yarn] = None      # None: plain RoPE

    @classmethod
    def from_scale(cls, s) -> "DeepSeekArgs":
        return cls(**{k: getattr(s, k) for k in cls.__dataclass_fields__ if k != "yarn"},
                   yarn=yarn_from_scale(s))

    def moe_args(self) -> MoEArgs:
        return MoEArgs(dim=self.dim, expert_dim=self.expert_dim, num_experts=self.num_experts,
                       top_k=self.top_k, score_func="sigmoid", num_groups=self.num_groups,
                       top_groups=self.top_groups, route_scale=self.route_scale,
                       expert_bias=True, shared_experts=self.shared_experts,
                       capacity_factor=self.capacity_factor, balance_loss="sequence")


class LatentAttention(nn.Module):
    def __init__(self, a: DeepSeekArgs):
        super().__init__()
        self.nope, self.rope, self.v_dim = a.qk_nope_head_dim, a.qk_rope_head_dim, a.v_head_dim
        self.kv_lora_rank = a.kv_lora_rank
        self.rope_scale = attention_factor(a.yarn)
        self.softmax_scale = softmax_scale_factor(a.yarn) / math.sqrt(self.nope + self.rope)
        self.wq_a = nn.Linear(a.dim, a.q_lora_rank, bias=False)
        self.q_norm = nn.RMSNorm(a.q_lora_rank, eps=a.norm_eps)
        self.wq_b = nn.Linear(a.q_lora_rank, a.n_heads * (self.nope + self.rope), bias=False)
        self.wkv_a = nn.Linear(a.dim, a.kv_lora_rank + self.rope, bias=False)
        self.kv_norm = nn.RMSNorm(a.kv_lora_rank, eps=a.norm_eps)
        self.wkv_b = nn.Linear(a.kv_lora_rank, a.n_heads * (self.nope + self.v_dim), bias=False)
        self.wo = nn.Linear(a.n_heads * self.v_dim, a.dim, bias=False)

    def forward(self, x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        bsz, seq, _ = x.shape
        q = self.wq_b(self.q_norm(self.wq_a(x))).view(bsz, seq, -1, self.nope + self.rope)
        q_nope, q_rope = q.split([self.nope, self.rope], dim=-1)
        latent, k_rope = self.wkv_a(x).split([self.kv_lora_rank, self.rope], dim=-1)
        kv = self.wkv_b(self.kv_norm(latent)).view(bsz, seq, -1, self.nope + self.v_dim)
        k_nope, v = kv.split([self.nope, self.v_dim], dim=-1)
        heads = q.shape[2]
        k_rope = apply_rotary(k_rope.unsqueeze(2), angles, self.rope_scale)
        k_rope = k_rope.expand(-1, -1, heads, -1)
        q = torch.cat([q_nope, apply_rotary(q_rope, angles, self.rope_scale)], dim=-1)
        k = torch.cat([k_nope, k_rope], dim=-1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                             v.transpose(1, 2), is_causal=True,
                                             scale=self.softmax_scale)
        return self.wo(out.transpose(1, 2).reshape(bsz, seq, -1))


class TransformerBlock(nn.Module):
    def __init__(self, a: DeepSeekArgs, layer: int):
        super().__init__()
        self.attention_norm = nn.RMSNorm(a.dim, eps=a.norm_eps)
        self.attention = LatentAttention(a)
        self.ffn_norm = nn.RMSNorm(a.dim, eps=a.norm_eps)
        if layer < a.n_dense_layers:
            self.feed_forward, self.moe = FeedForward(a.dim, a.dense_ffn_dim), None
        else:
            self.feed_forward, self.moe = None, MoE(a.moe_args())

    def forward(self, x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), angles)
        ffn = self.moe if self.moe is not None else self.feed_forward
        return h + ffn(self.ffn_norm(h))


class DeepSeekV3(DecoderStack):
    def __init__(self, a: DeepSeekArgs):
        super().__init__(a.vocab_size, a.dim, a.n_layers, a.norm_eps,
                         lambda i: TransformerBlock(a, i),
                         rotary_table(a.qk_rope_head_dim, a.rope_theta, a.max_seq_len,
                                      a.yarn))
        self.args = a
        init_decoder_weights(self, a.n_layers)
