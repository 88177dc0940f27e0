"""Llama 3.1 decoder on the shared decoder stack (common/decoder.py): RMSNorm, RoPE with the 3.1
frequency scaling, GQA through torch's scaled_dot_product_attention, SwiGLU MLP, untied
input/output embeddings.

Parameter names are Meta's (torchtitan's): ``attention.wq``, ``feed_forward.w1``, ...; the
tensor-parallel plan (parallelize.py) and the Hugging Face adapter (state_dict_adapter.py) use
them. RoPE is the shared rotate-half one, so wq and wk hold each head's rows in Hugging Face's
order (pairs i, i + d/2), not Meta's adjacent pairs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pinchpoint.workloads.common.decoder import (DecoderStack, FeedForward, init_decoder_weights,
                                                 rotary_causal_attention)
from pinchpoint.workloads.common.rotary import Llama3Scaling, rotary_table


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


class Attention(nn.Module):
    def __init__(self, args: LlamaArgs):
        super().__init__()
        self.head_dim = args.head_dim
        self.wq = nn.Linear(args.dim, args.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(args.dim, args.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(args.dim, args.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(args.n_heads * self.head_dim, args.dim, bias=False)

    def forward(self, x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        bsz, seq, _ = x.shape
        # -1 heads: a tensor-parallel shard holds heads / tp of them.
        q, k, v = (w(x).view(bsz, seq, -1, self.head_dim) for w in (self.wq, self.wk, self.wv))
        return self.wo(rotary_causal_attention(q, k, v, angles))


class TransformerBlock(nn.Module):
    def __init__(self, args: LlamaArgs):
        super().__init__()
        self.attention_norm = nn.RMSNorm(args.dim, eps=args.norm_eps)
        self.attention = Attention(args)
        self.ffn_norm = nn.RMSNorm(args.dim, eps=args.norm_eps)
        self.feed_forward = FeedForward(args.dim, args.ffn_dim)

    def forward(self, x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), angles)
        return h + self.feed_forward(self.ffn_norm(h))


class Llama(DecoderStack):
    def __init__(self, args: LlamaArgs):
        scaling = Llama3Scaling() if args.rope_scaling else None
        super().__init__(args.vocab_size, args.dim, args.n_layers, args.norm_eps,
                         lambda i: TransformerBlock(args),
                         rotary_table(args.head_dim, args.rope_theta, args.max_seq_len, scaling))
        self.args = args
        init_decoder_weights(self, args.n_layers)
