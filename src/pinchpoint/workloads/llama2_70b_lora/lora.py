"""LoRA adapters (Hu et al. 2021) on a frozen base, laid out as PEFT lays them out.

A targeted projection becomes a ``LoraLinear``: the base weight stays the module's own ``weight``
(so base names are unchanged and a Hugging Face checkpoint loads by name), and two small linears
``lora_A`` (in -> rank) and ``lora_B`` (rank -> out) add ``scaling * B(A(dropout(x)))`` with
scaling = alpha / rank. B starts at zero, so at init the adapted model computes exactly the base.
Only adapter weights train; everything else is frozen.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pinchpoint.errors import ConfigError

# The projections of a Llama decoder layer that LoRA can adapt (the reference adapts the first two).
TARGETS = ("qkv_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoraLinear(nn.Linear):
    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float):
        super().__init__(base.in_features, base.out_features, bias=False, device="meta")
        self.weight = base.weight  # the same Parameter: no copy, name unchanged
        device = base.weight.device
        self.lora_A = nn.Linear(base.in_features, rank, bias=False, device=device)
        self.lora_B = nn.Linear(rank, base.out_features, bias=False, device=device)
        self.lora_dropout = nn.Dropout(dropout)
        self.scaling = alpha / rank
        self.reset_adapter()

    @torch.no_grad()
    def reset_adapter(self) -> None:
        """PEFT's default: A ~ kaiming-uniform, B = 0 (the adapter starts as the identity)."""
        if self.lora_A.weight.device.type == "meta":
            return
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = F.linear(x, self.weight)
        a = self.lora_A.weight
        update = F.linear(F.linear(self.lora_dropout(x).to(a.dtype), a), self.lora_B.weight)
        return base + (update * self.scaling).to(base.dtype)


def check_lora(rank, alpha, dropout, targets, projection_sizes: dict[str, int],
               field: str = "model.lora") -> None:
    """Pre-launch checks of a LoRA config against the projections it adapts."""
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        raise ConfigError(f"{field}.target_modules", list(targets),
                          "a non-empty list of " + ", ".join(TARGETS))
    smallest = min(projection_sizes[t] for t in targets)
    if not isinstance(rank, int) or isinstance(rank, bool) or not 0 < rank <= smallest:
        raise ConfigError(f"{field}.rank", rank,
                          f"an integer in [1, {smallest}] (the smallest side of the adapted "
                          f"projections {', '.join(targets)})")
    if not alpha > 0:
        raise ConfigError(f"{field}.alpha", alpha, "a number > 0 (scaling = alpha / rank)")
    if not 0 <= dropout < 1:
        raise ConfigError(f"{field}.dropout", dropout, "a probability in [0, 1)")


def projection_sizes(dim: int, n_heads: int, n_kv_heads: int, ffn_dim: int) -> dict[str, int]:
    """min(in, out) of each adaptable projection: a rank above it adds nothing a full update
    would not (and PEFT refuses it too)."""
    hd = dim // n_heads
    qkv = (n_heads + 2 * n_kv_heads) * hd
    return {"qkv_proj": min(dim, qkv), "o_proj": min(n_heads * hd, dim),
            "gate_proj": min(dim, ffn_dim), "up_proj": min(dim, ffn_dim),
            "down_proj": min(ffn_dim, dim)}


def apply_lora(model: nn.Module, rank: int, alpha: float, dropout: float,
               targets) -> list[str]:
    """Wrap every targeted projection in ``model`` and freeze everything but the adapters;
    returns the wrapped modules' names."""
    wrapped = []
    for name, module in list(model.named_modules()):
        leaf = name.rsplit(".", 1)[-1]
        if leaf in targets and isinstance(module, nn.Linear) and \
                not isinstance(module, LoraLinear):
            parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            setattr(parent, leaf, LoraLinear(module, rank, alpha, dropout))
            wrapped.append(name)
    for name, p in model.named_parameters():
        p.requires_grad_(is_adapter(name))
    return wrapped


def is_adapter(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


def base_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if not is_adapter(k)}


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Trainable (adapters) and total parameters, as PEFT's print_trainable_parameters."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": total, "base": total - trainable}
