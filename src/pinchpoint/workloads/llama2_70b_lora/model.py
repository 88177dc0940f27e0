"""Llama 2 as the MLPerf llama2_70b_lora reference runs it: Hugging Face's LlamaForCausalLM with the
query, key and value projections fused into one ``qkv_proj`` (the reference's
"llama-v2-fused-qkv" checkpoint), RoPE in Hugging Face's rotate-half convention (theta 10000, no
scaling), GQA, SwiGLU, RMSNorm, untied embeddings.

Inside a decoder layer the names are Hugging Face's (``self_attn.qkv_proj``, ``mlp.gate_proj``,
``input_layernorm`` ...); at the top the shared decoder convention holds (``tok_embeddings``,
``layers``, ``norm``, ``output``), and ``hf_name`` maps those four prefixes to Hugging Face's
(``model.embed_tokens``, ``model.layers``, ``model.norm``, ``lm_head``), so a real safetensors
checkpoint loads by name.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


@dataclass
class Llama2Args:
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    ffn_dim: int
    vocab_size: int
    max_seq_len: int = 8192
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


def llama2_args(arch) -> Llama2Args:
    """The architecture of a scale config (``model.<scale>``)."""
    return Llama2Args(dim=arch.dim, n_layers=arch.n_layers, n_heads=arch.n_heads,
                      n_kv_heads=arch.n_kv_heads, ffn_dim=arch.ffn_dim,
                      vocab_size=arch.vocab_size, max_seq_len=arch.max_seq_len,
                      rope_theta=arch.rope_theta)


def rope_tables(args: Llama2Args, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (max_seq_len, head_dim) in Hugging Face's layout: frequencies repeated for the
    two halves of the head (rotate_half pairs element i with i + head_dim/2)."""
    hd = args.head_dim
    inv = 1.0 / args.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float32, device=device)
                                    / hd)
    t = torch.arange(args.max_seq_len, dtype=torch.float32, device=device)
    angles = torch.outer(t, inv)
    emb = torch.cat([angles, angles], dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


class RMSNorm(nn.Module):
    """Normalise in fp32, scale in the input dtype (as Hugging Face's LlamaRMSNorm)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


class Attention(nn.Module):
    def __init__(self, args: Llama2Args):
        super().__init__()
        self.head_dim = args.head_dim
        self.q_dim = args.n_heads * args.head_dim
        self.kv_dim = args.n_kv_heads * args.head_dim
        self.qkv_proj = nn.Linear(args.dim, self.q_dim + 2 * self.kv_dim, bias=False)
        self.o_proj = nn.Linear(self.q_dim, args.dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        bsz, seq, _ = x.shape
        q, k, v = self.qkv_proj(x).split([self.q_dim, self.kv_dim, self.kv_dim], dim=-1)
        q, k, v = (t.view(bsz, seq, -1, self.head_dim).transpose(1, 2) for t in (q, k, v))
        cos, sin = cos[:seq].to(q.dtype), sin[:seq].to(q.dtype)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                             enable_gqa=q.shape[1] != k.shape[1])
        return self.o_proj(out.transpose(1, 2).reshape(bsz, seq, -1))


class MLP(nn.Module):
    """SwiGLU: down(silu(gate x) * up x)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, args: Llama2Args):
        super().__init__()
        self.input_layernorm = RMSNorm(args.dim, args.norm_eps)
        self.self_attn = Attention(args)
        self.post_attention_layernorm = RMSNorm(args.dim, args.norm_eps)
        self.mlp = MLP(args.dim, args.ffn_dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        h = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return h + self.mlp(self.post_attention_layernorm(h))


class Llama2ForCausalLM(nn.Module):
    """Top-level names follow the shared decoder convention (``tok_embeddings``, ``layers`` as a
    ModuleDict "0".."N-1", ``norm``, ``output``; None on pipeline stages that do not hold them),
    so the shared FSDP/pipeline code applies; ``hf_name`` maps them to Hugging Face's."""

    def __init__(self, args: Llama2Args):
        super().__init__()
        self.args = args
        self.tok_embeddings: Optional[nn.Embedding] = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleDict({str(i): DecoderLayer(args) for i in range(args.n_layers)})
        self.norm: Optional[RMSNorm] = RMSNorm(args.dim, args.norm_eps)
        self.output: Optional[nn.Linear] = nn.Linear(args.dim, args.vocab_size, bias=False)
        cos, sin = rope_tables(args)
        # Not persistent: derived from args, so checkpoints hold only learned weights.
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.recompute = False  # activation checkpointing per decoder layer (model.recompute)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Normal(0.02) (Hugging Face's initializer_range), residual outputs scaled by depth so a
        freshly made base (the proxy's, before pretraining) keeps a stable residual stream."""
        depth_std = 0.02 / math.sqrt(2 * self.args.n_layers)
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                nn.init.ones_(p)
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, std=depth_std)
            elif "lora_" not in name:
                nn.init.normal_(p, std=0.02)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids (batch, seq) on the first stage (hidden states on later ones) -> logits
        (batch, seq, vocab) on the last stage (hidden states on earlier ones)."""
        h = self.tok_embeddings(input_ids) if self.tok_embeddings is not None else input_ids
        for layer in self.layers.values():
            if self.recompute and self.training and torch.is_grad_enabled():
                h = checkpoint(layer, h, self.rope_cos, self.rope_sin, use_reentrant=False)
            else:
                h = layer(h, self.rope_cos, self.rope_sin)
        h = self.norm(h) if self.norm is not None else h
        return self.output(h) if self.output is not None else h


# Our top-level names -> Hugging Face LlamaForCausalLM's (layer internals are already theirs).
HF_PREFIXES = (("tok_embeddings.", "model.embed_tokens."), ("layers.", "model.layers."),
               ("norm.", "model.norm."), ("output.", "lm_head."))


def hf_name(name: str) -> str:
    for ours, theirs in HF_PREFIXES:
        if name.startswith(ours):
            return theirs + name[len(ours):]
    raise KeyError(name)


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token loss and the number of scored tokens, as Hugging Face's causal LM loss
    counts them: position t predicts labels[t + 1]; label -100 is not scored (the reference
    masks the report and the final EOS of each validation example)."""
    shifted = labels[:, 1:].reshape(-1)
    total = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), shifted,
                            ignore_index=-100, reduction="sum")
    return total, (shifted != -100).sum()
