"""The decoder stack every LLM here shares (Llama 3.1, Llama 2 + LoRA, GPT-OSS, DeepSeek V3):
embedding, blocks, final norm, head, a rotary table as a buffer (kept in float32 when the module
is cast), activation checkpointing per block; and ``DecoderModel``, the contract the shared
training step (common/llm.py) and tensor-parallel ends (common/tp.py) rely on, checked once when
a workload builds its model (``check_decoder_model``)."""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Optional, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from pinchpoint.workloads.common.rotary import KeepsRotaryPrecision, apply_rotary


class DecoderModel(Protocol):
    """A pipeline stage is the full model with the other stages' parts removed, so parameter
    names stay the full model's and distributed checkpoints move between layouts."""
    tok_embeddings: Optional[nn.Module]   # None on every pipeline stage but the first
    layers: nn.ModuleDict                 # the blocks, named "0".."N-1"
    norm: Optional[nn.Module]             # None on every stage but the last
    output: Optional[nn.Module]           # the head; None with norm
    recompute: bool                       # activation checkpointing per block

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (batch, seq) on the first stage, hidden states on later ones -> logits
        (batch, seq, vocab) on the last stage, hidden states on earlier ones."""


def check_decoder_model(model: nn.Module) -> None:
    """TypeError naming the model's class and what it lacks of ``DecoderModel``."""
    name = type(model).__name__
    missing = [a for a in DecoderModel.__annotations__ if not hasattr(model, a)]
    if missing:
        raise TypeError(f"{name} is not a DecoderModel (workloads/common/decoder.py): it has no "
                        + ", ".join(missing))
    layers = model.layers
    if not (isinstance(layers, nn.ModuleDict) and
            list(layers) == [str(i) for i in range(len(layers))]):
        raise TypeError(f"{name}.layers is not a DecoderModel's: an nn.ModuleDict of the blocks "
                        "named '0'..'N-1'")


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


def rotary_causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                            angles: torch.Tensor) -> torch.Tensor:
    """q, k, v (batch, seq, heads, head_dim) -> (batch, seq, heads x head_dim): RoPE on q and k,
    causal scaled-dot-product attention, each KV head serving n_heads / n_kv_heads query heads
    (GQA). Head counts are read from the tensors, so a tensor-parallel shard runs it as is."""
    q, k = apply_rotary(q, angles), apply_rotary(k, angles)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                         enable_gqa=q.shape[1] != k.shape[1])
    return out.transpose(1, 2).flatten(2)


class DecoderStack(KeepsRotaryPrecision):
    """A ``DecoderModel``: ``make_layer(i)`` builds block i, called as ``block(h, rope)``."""
    rotary_buffers = ("rope",)

    def __init__(self, vocab_size: int, dim: int, n_layers: int, norm_eps: float,
                 make_layer: Callable[[int], nn.Module], rope: torch.Tensor):
        super().__init__()
        self.tok_embeddings: Optional[nn.Embedding] = nn.Embedding(vocab_size, dim)
        self.layers = nn.ModuleDict({str(i): make_layer(i) for i in range(n_layers)})
        self.norm: Optional[nn.RMSNorm] = nn.RMSNorm(dim, eps=norm_eps)
        self.output: Optional[nn.Linear] = nn.Linear(dim, vocab_size, bias=False)
        # Not persistent: derived from the architecture, so checkpoints hold learned state only.
        self.register_buffer("rope", rope, persistent=False)
        self.recompute = False

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.tok_embeddings(tokens) if self.tok_embeddings is not None else tokens
        # Recomputing only saves memory when backward will run.
        checkpointed = self.recompute and self.training and torch.is_grad_enabled()
        for layer in self.layers.values():
            if checkpointed:
                h = torch.utils.checkpoint.checkpoint(layer, h, self.rope, use_reentrant=False,
                                                      context_fn=_recompute_contexts)
            else:
                h = layer(h, self.rope)
        h = self.norm(h) if self.norm is not None else h
        return self.output(h) if self.output is not None else h


@torch.no_grad()
def init_decoder_weights(model: nn.Module, n_layers: int, std: float = 0.02) -> None:
    """Truncated normal(std) weights, zero biases and sinks, unit norms; residual output
    projections (attention wo / o_proj, expert down, dense/shared w2 / down_proj) scaled by
    1/sqrt(2 x layers) as GPT-2 and torchtitan do, so the residual stream does not grow with
    depth. The selection bias of a sigmoid router is a buffer and starts at zero."""
    depth_std = std / math.sqrt(2 * n_layers)
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if "norm" in name:
            nn.init.ones_(p)
        elif leaf in ("bias", "sinks", "gate_up_bias", "down_bias"):
            nn.init.zeros_(p)
        elif name.endswith(("wo.weight", "w2.weight", "down_proj", "o_proj.weight",
                            "down_proj.weight")):
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
