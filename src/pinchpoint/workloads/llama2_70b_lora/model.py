"""Llama 2 as the MLPerf llama2_70b_lora reference runs it: Hugging Face's LlamaForCausalLM with the
query, key and value projections fused into one ``qkv_proj`` (the reference's
"llama-v2-fused-qkv" checkpoint), RoPE in Hugging Face's rotate-half convention (theta 10000, no
scaling), GQA, SwiGLU, RMSNorm, untied embeddings, on the shared decoder stack
(common/decoder.py).

Inside a decoder layer the names are Hugging Face's (``self_attn.qkv_proj``, ``mlp.gate_proj``,
``input_layernorm`` ...), which LoRA's target_modules name; at the top the shared decoder's hold
(``tok_embeddings``, ``layers``, ``norm``, ``output``), and ``hf_name`` maps those four prefixes
to Hugging Face's (``model.embed_tokens``, ``model.layers``, ``model.norm``, ``lm_head``), so a
real safetensors checkpoint loads by name.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pinchpoint.workloads.common.decoder import (DecoderStack, init_decoder_weights,
                                                 rotary_causal_attention)
from pinchpoint.workloads.common.rotary import rotary_table


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


class Attention(nn.Module):
    def __init__(self, args: Llama2Args):
        super().__init__()
        self.head_dim = args.head_dim
        self.q_dim = args.n_heads * args.head_dim
        self.kv_dim = args.n_kv_heads * args.head_dim
        self.qkv_proj = nn.Linear(args.dim, self.q_dim + 2 * self.kv_dim, bias=False)
        self.o_proj = nn.Linear(self.q_dim, args.dim, bias=False)

    def forward(self, x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        bsz, seq, _ = x.shape
        q, k, v = (t.view(bsz, seq, -1, self.head_dim) for t in
                   self.qkv_proj(x).split([self.q_dim, self.kv_dim, self.kv_dim], dim=-1))
        return self.o_proj(rotary_causal_attention(q, k, v, angles))


class MLP(nn.Module):
    """SwiGLU under Hugging Face's names: down(silu(gate x) * up x)."""

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
        self.input_layernorm = nn.RMSNorm(args.dim, eps=args.norm_eps)
        self.self_attn = Attention(args)
        self.post_attention_layernorm = nn.RMSNorm(args.dim, eps=args.norm_eps)
        self.mlp = MLP(args.dim, args.ffn_dim)

    def forward(self, x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        h = x + self.self_attn(self.input_layernorm(x), angles)
        return h + self.mlp(self.post_attention_layernorm(h))


class Llama2ForCausalLM(DecoderStack):
    def __init__(self, args: Llama2Args):
        super().__init__(args.vocab_size, args.dim, args.n_layers, args.norm_eps,
                         lambda i: DecoderLayer(args),
                         rotary_table(args.head_dim, args.rope_theta, args.max_seq_len))
        self.args = args
        init_decoder_weights(self, args.n_layers)


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
