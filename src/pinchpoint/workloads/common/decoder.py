"""The decoder stack every MoE LLM shares: embedding, blocks, final norm, head, and a rotary
table as a buffer (kept in float32 when the module is cast), in the convention the shared
training step relies on (``layers`` a ModuleDict named "0".."N-1"; ``tok_embeddings``/``norm``/
``output`` set to None on pipeline stages that do not hold them; ``recompute`` for activation
checkpointing per block)."""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from pinchpoint.workloads.common.rotary import KeepsRotaryPrecision


class FeedForward(nn.Module):
    """Dense SwiGLU (Llama's MLP, DeepSeek V3's dense layers and shared expert):
    w2(silu(w1 x) * w3 x)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class DecoderStack(KeepsRotaryPrecision):
    rotary_buffers = ("rope",)

    def __init__(self, vocab_size: int, dim: int, n_layers: int, norm_eps: float,
                 make_layer: Callable[[int], nn.Module], rope: torch.Tensor):
        super().__init__()
        self.tok_embeddings: Optional[nn.Embedding] = nn.Embedding(vocab_size, dim)
        self.layers = nn.ModuleDict({str(i): make_layer(i) for i in range(n_layers)})
        self.norm: Optional[nn.RMSNorm] = nn.RMSNorm(dim, eps=norm_eps)
        self.output: Optional[nn.Linear] = nn.Linear(dim, vocab_size, bias=False)
        self.register_buffer("rope", rope, persistent=False)
        self.recompute = False

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.tok_embeddings(tokens) if self.tok_embeddings is not None else tokens
        for layer in self.layers.values():
            if self.recompute and self.training:
                h = torch.utils.checkpoint.checkpoint(layer, h, self.rope, use_reentrant=False,
                                                      context_fn=_recompute_contexts)
            else:
                h = layer(h, self.rope)
        h = self.norm(h) if self.norm is not None else h
        return self.output(h) if self.output is not None else h


@torch.no_grad()
def init_decoder_weights(model: nn.Module, n_layers: int, std: float = 0.02) -> None:
    """Normal(std) weights, zero biases and sinks, unit norms; residual output projections
    (attention wo, expert down, dense/shared w2) scaled by 1/sqrt(2 x layers) as GPT-2 and
    torchtitan do, so the residual stream does not grow with depth. The selection bias of a
    sigmoid router is a buffer and starts at zero."""
    depth_std = std / math.sqrt(2 * n_layers)
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if "norm" in name:
            nn.init.ones_(p)
        elif leaf in ("bias", "sinks", "gate_up_bias", "down_bias"):
            nn.init.zeros_(p)
        elif name.endswith(("wo.weight", "w2.weight", "down_proj")):
            nn.init.trunc_normal_(p, std=depth_std, a=-3 * depth_std, b=3 * depth_std)
        else:
            nn.init.trunc_normal_(p, std=std, a=-3 * std, b=3 * std)


# Activation checkpointing runs a block's forward twice, the second time inside backward. What a
# forward records once per step (a MoE layer's tokens per expert) asks ``recomputing()`` first.
_RECOMPUTING = False


def recomputing() -> bool:
    return _RECOMPUTING


@contextlib.contextmanager
def _marked_recompute():
    global _RECOMPUTING
    _RECOMPUTING = True
    try:
        yield
    finally:
        _RECOMPUTING = False


def _recompute_contexts():
    """checkpoint's (forward, recompute) contexts: only the recompute is marked."""
    return contextlib.nullcontext(), _marked_recompute()
