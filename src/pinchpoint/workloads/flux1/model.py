"""The FLUX.1 MMDiT (black-forest-labs/flux as adapted in torchtitan's flux experiment, which the
MLPerf text_to_image reference trains): double-stream blocks (separate image and text weights,
joint attention), then single-stream blocks (one stream over [text; image], parallel attention +
MLP), each modulated (shift/scale/gate, adaLN) by a vector made from the timestep and the pooled
CLIP text vector; 3-axis RoPE over (unused, row, column) ids of text tokens and image patches.

Module and parameter names follow the reference (double_blocks.N.img_attn.qkv, ...); Black Forest
Labs' checkpoints differ only in the q/k norms' ``.scale`` (here ``.weight``, as in torchtitan),
which flux1/state_dict_adapter.py maps. Plus the reference's latent packing, position ids and the
rectified-flow objective (train: t ~ U(0,1); validation: t = index/8 for index 0..7).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PATCH = 2          # the reference packs 2x2 latent patches (pack_latents)
POSITION_DIM = 3   # ids per token: (0, row, column); text tokens are all zeros


@dataclass(frozen=True)
class MMDiTShape:
    """Architecture of one scale (FluxModelArgs in the reference)."""
    in_channels: int          # latent channels x PATCH**2 (64 for the 16-channel FLUX VAE)
    vec_in_dim: int           # CLIP pooled width (768)
    context_in_dim: int       # T5 width (4096)
    hidden_size: int
    num_heads: int
    depth: int                # double-stream blocks
    depth_single_blocks: int
    mlp_ratio: float = 4.0
    axes_dim: tuple = (16, 56, 56)
    theta: int = 10_000
    qkv_bias: bool = True


# --- RoPE and attention (model/math.py in the reference) --------------------------------------
def rope(pos: Tensor, dim: int, theta: int) -> Tensor:
    """Rotation matrices (..., n, dim/2, 2, 2) for positions ``pos`` along one axis."""
    scale = torch.arange(0, dim, 2, dtype=torch.float64, device=pos.device) / dim
    omega = 1.0 / (theta ** scale)
    out = pos.to(torch.float64)[..., None] * omega
    cos, sin = torch.cos(out), torch.sin(out)
    return torch.stack([cos, -sin, sin, cos], dim=-1).reshape(*out.shape, 2, 2).float()


def apply_rope(x: Tensor, freqs: Tensor) -> Tensor:
    x_ = x.float().reshape(*x.shape[:-1], -1, 1, 2)
    out = freqs[..., 0] * x_[..., 0] + freqs[..., 1] * x_[..., 1]
    return out.reshape(*x.shape).type_as(x)


def attention(q: Tensor, k: Tensor, v: Tensor, pe: Tensor) -> Tensor:
    """q, k, v: (B, H, L, D) -> (B, L, H*D)."""
    q, k = apply_rope(q, pe), apply_rope(k, pe)
    x = F.scaled_dot_product_attention(q, k, v)
    return x.transpose(1, 2).flatten(2)


class EmbedND(nn.Module):
    """One rotary table per id axis, concatenated along the head dimension."""

    def __init__(self, theta: int, axes_dim: tuple):
        super().__init__()
        self.theta, self.axes_dim = theta, tuple(axes_dim)

    def forward(self, ids: Tensor) -> Tensor:
        emb = torch.cat([rope(ids[..., i], d, self.theta) for i, d in enumerate(self.axes_dim)],
                        dim=-3)
        return emb.unsqueeze(1)   # (B, 1, L, D/2, 2, 2): broadcast over heads


def timestep_embedding(t: Tensor, dim: int, max_period: int = 10000,
                       time_factor: float = 1000.0) -> Tensor:
    t = time_factor * t
    half = dim // 2
    freqs = torch.exp(-math.log(max_period)
                      * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return emb.to(t) if torch.is_floating_point(t) else emb


# --- layers (model/layers.py in the reference) ------------------------------------------------
class MLPEmbedder(nn.Module):
    def __init__(self, in_dim: int, hidden_dim: int):
        super().__init__()
        self.in_layer = nn.Linear(in_dim, hidden_dim)
        self.silu = nn.SiLU()
        self.out_layer = nn.Linear(hidden_dim, hidden_dim)

    def init_weights(self, std: float = 0.02) -> None:
        for layer in (self.in_layer, self.out_layer):
            nn.init.normal_(layer.weight, std=std)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.out_layer(self.silu(self.in_layer(x)))


# BFL's flux RMSNorm and diffusers' FluxAttention norm_q/norm_k use 1e-6; torch's default
# (float32 machine epsilon, 1.2e-7) differs from it by ~7e-5 relative when q/k are small (rms 0.1).
QK_NORM_EPS = 1e-6


class QKNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.query_norm = nn.RMSNorm(dim, eps=QK_NORM_EPS)
        self.key_norm = nn.RMSNorm(dim, eps=QK_NORM_EPS)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        return self.query_norm(q).to(v), self.key_norm(k).to(v)


def split_heads(qkv: Tensor, heads: int) -> tuple[Tensor, Tensor, Tensor]:
    """(B, L, 3*H*D) -> three (B, H, L, D), the reference's "B L (K H D) -> K B H L D"."""
    b, n, _ = qkv.shape
    q, k, v = qkv.view(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4)
    return q, k, v


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.norm = QKNorm(dim // num_heads)
        self.proj = nn.Linear(dim, dim)

    def init_weights(self) -> None:
        for layer in (self.qkv, self.proj):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


class Modulation(nn.Module):
    """shift/scale/gate (x2 for double blocks) from the conditioning vector (adaLN)."""

    def __init__(self, dim: int, double: bool):
        super().__init__()
        self.multiplier = 6 if double else 3
        self.lin = nn.Linear(dim, self.multiplier * dim)

    def init_weights(self) -> None:
        # DiT: zero modulation makes every block the identity at init (gate = 0).
        nn.init.zeros_(self.lin.weight)
        nn.init.zeros_(self.lin.bias)

    def forward(self, vec: Tensor) -> list[Tensor]:
        return list(self.lin(F.silu(vec))[:, None, :].chunk(self.multiplier, dim=-1))


def _mlp(hidden: int, ratio: float) -> nn.Sequential:
    inner = int(hidden * ratio)
    return nn.Sequential(nn.Linear(hidden, inner), nn.GELU(approximate="tanh"),
                         nn.Linear(inner, hidden))


def _norm(hidden: int) -> nn.LayerNorm:
    return nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)


class DoubleStreamBlock(nn.Module):
    """Image and text keep their own weights; they meet in one joint attention."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: float, qkv_bias: bool):
        super().__init__()
        self.num_heads = heads
        for side in ("img", "txt"):
            setattr(self, f"{side}_mod", Modulation(hidden, double=True))
            setattr(self, f"{side}_norm1", _norm(hidden))
            setattr(self, f"{side}_attn", SelfAttention(hidden, heads, qkv_bias))
            setattr(self, f"{side}_norm2", _norm(hidden))
            setattr(self, f"{side}_mlp", _mlp(hidden, mlp_ratio))

    def init_weights(self) -> None:
        for side in ("img", "txt"):
            mlp = getattr(self, f"{side}_mlp")
            for layer in (mlp[0], mlp[2]):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
            getattr(self, f"{side}_attn").init_weights()
            getattr(self, f"{side}_mod").init_weights()

    def _qkv(self, side: str, x: Tensor, shift: Tensor, scale: Tensor):
        attn = getattr(self, f"{side}_attn")
        x = (1 + scale) * getattr(self, f"{side}_norm1")(x) + shift
        q, k, v = split_heads(attn.qkv(x), self.num_heads)
        q, k = attn.norm(q, k, v)
        return q, k, v

    def _finish(self, side: str, x: Tensor, attn_out: Tensor, mod: list[Tensor]) -> Tensor:
        _, _, gate1, shift2, scale2, gate2 = mod
        x = x + gate1 * getattr(self, f"{side}_attn").proj(attn_out)
        h = (1 + scale2) * getattr(self, f"{side}_norm2")(x) + shift2
        return x + gate2 * getattr(self, f"{side}_mlp")(h)

    def forward(self, img: Tensor, txt: Tensor, vec: Tensor, pe: Tensor):
        img_mod, txt_mod = self.img_mod(vec), self.txt_mod(vec)
        iq, ik, iv = self._qkv("img", img, img_mod[0], img_mod[1])
        tq, tk, tv = self._qkv("txt", txt, txt_mod[0], txt_mod[1])
        out = attention(torch.cat((tq, iq), 2), torch.cat((tk, ik), 2),
                        torch.cat((tv, iv), 2), pe)
        n_txt = txt.shape[1]
        img = self._finish("img", img, out[:, n_txt:], img_mod)
        txt = self._finish("txt", txt, out[:, :n_txt], txt_mod)
        return img, txt


class SingleStreamBlock(nn.Module):
    """One stream over [text; image]: qkv and MLP-in share linear1, proj and MLP-out linear2."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.hidden_size, self.num_heads = hidden, heads
        self.mlp_hidden_dim = int(hidden * mlp_ratio)
        self.linear1 = nn.Linear(hidden, hidden * 3 + self.mlp_hidden_dim)
        self.linear2 = nn.Linear(hidden + self.mlp_hidden_dim, hidden)
        self.norm = QKNorm(hidden // heads)
        self.pre_norm = _norm(hidden)
        self.mlp_act = nn.GELU(approximate="tanh")
        self.modulation = Modulation(hidden, double=False)

    def init_weights(self) -> None:
        for layer in (self.linear1, self.linear2):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.modulation.init_weights()

    def forward(self, x: Tensor, vec: Tensor, pe: Tensor) -> Tensor:
        shift, scale, gate = self.modulation(vec)
        h = (1 + scale) * self.pre_norm(x) + shift
        qkv, mlp = torch.split(self.linear1(h), [3 * self.hidden_size, self.mlp_hidden_dim], -1)
        q, k, v = split_heads(qkv, self.num_heads)
        q, k = self.norm(q, k, v)
        out = self.linear2(torch.cat((attention(q, k, v, pe), self.mlp_act(mlp)), 2))
        return x + gate * out


class LastLayer(nn.Module):
    def __init__(self, hidden: int, out_channels: int):
        super().__init__()
        self.norm_final = _norm(hidden)
        self.linear = nn.Linear(hidden, out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))

    def init_weights(self) -> None:
        for layer in (self.adaLN_modulation[-1], self.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor, vec: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(vec).chunk(2, dim=1)
        return self.linear((1 + scale[:, None]) * self.norm_final(x) + shift[:, None])


class FluxMMDiT(nn.Module):
    def __init__(self, shape: MMDiTShape):
        super().__init__()
        self.shape = shape
        hidden = shape.hidden_size
        self.pe_embedder = EmbedND(shape.theta, shape.axes_dim)
        self.img_in = nn.Linear(shape.in_channels, hidden)
        self.time_in = MLPEmbedder(256, hidden)
        self.vector_in = MLPEmbedder(shape.vec_in_dim, hidden)
        self.txt_in = nn.Linear(shape.context_in_dim, hidden)
        self.double_blocks = nn.ModuleList(
            DoubleStreamBlock(hidden, shape.num_heads, shape.mlp_ratio, shape.qkv_bias)
            for _ in range(shape.depth))
        self.single_blocks = nn.ModuleList(
            SingleStreamBlock(hidden, shape.num_heads, shape.mlp_ratio)
            for _ in range(shape.depth_single_blocks))
        self.final_layer = LastLayer(hidden, shape.in_channels)
        self.recompute = False   # activation checkpointing per block (the reference's "full")

    @torch.no_grad()
    def init_weights(self) -> None:
        """The reference's init (DiT's): Xavier linears, N(0, 0.02) embedders, zero adaLN and
        output layer, so the untrained model predicts 0."""
        for layer in (self.img_in, self.txt_in):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.time_in.init_weights()
        self.vector_in.init_weights()
        for block in (*self.double_blocks, *self.single_blocks):
            block.init_weights()
        self.final_layer.init_weights()

    def forward(self, img: Tensor, img_ids: Tensor, txt: Tensor, txt_ids: Tensor,
                timesteps: Tensor, y: Tensor) -> Tensor:
        dtype = self.img_in.weight.dtype
        img = self.img_in(img.to(dtype))
        vec = self.time_in(timestep_embedding(timesteps.to(dtype), 256))
        vec = vec + self.vector_in(y.to(dtype))
        txt = self.txt_in(txt.to(dtype))
        pe = self.pe_embedder(torch.cat((txt_ids, img_ids), dim=1))
        for block in self.double_blocks:
            img, txt = self._run(block, img, txt, vec, pe)
        x = torch.cat((txt, img), 1)
        for block in self.single_blocks:
            x = self._run(block, x, vec, pe)
        return self.final_layer(x[:, txt.shape[1]:], vec)


    def _run(self, block: nn.Module, *args):
        if self.recompute and self.training and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)


# --- latents <-> patch sequences, position ids (utils.py in the reference) ---------------------
def pack_latents(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, H/2 * W/2, C*4)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // PATCH, PATCH, w // PATCH, PATCH).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // PATCH) * (w // PATCH), c * PATCH * PATCH)


def unpack_latents(x: Tensor, height: int, width: int) -> Tensor:
    b, _, cpp = x.shape
    c = cpp // (PATCH * PATCH)
    x = x.reshape(b, height // PATCH, width // PATCH, c, PATCH, PATCH).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, height, width)


def latent_position_ids(batch: int, height: int, width: int, device=None) -> Tensor:
    rows, cols = torch.meshgrid(torch.arange(height // PATCH, device=device),
                                torch.arange(width // PATCH, device=device), indexing="ij")
    ids = torch.stack([torch.zeros_like(rows), rows, cols], dim=-1).reshape(1, -1, POSITION_DIM)
    return ids.float().expand(batch, -1, -1)


# --- the rectified-flow objective ---------------------------------------------------------------
def flow_loss(model: nn.Module, latents: Tensor, t5: Tensor, clip: Tensor, timesteps: Tensor,
              noise: Tensor) -> Tensor:
    """Per-sample MSE of the predicted velocity against noise - x0 at x_t = (1-t) x0 + t noise
    (train_step/eval_step in the reference). Returns (B,) losses."""
    b, _, h, w = latents.shape
    sigma = timesteps.view(-1, 1, 1, 1).to(latents)
    noisy = (1 - sigma) * latents + sigma * noise
    img_ids = latent_position_ids(b, h, w, latents.device)
    txt_ids = torch.zeros(b, t5.shape[1], POSITION_DIM, device=latents.device)
    pred = model(img=pack_latents(noisy), img_ids=img_ids, txt=t5, txt_ids=txt_ids,
                 timesteps=timesteps.to(latents), y=clip)
    pred = unpack_latents(pred, h, w).float()
    return ((pred - (noise - latents).float()) ** 2).mean(dim=(1, 2, 3))


def sample_train_timesteps(batch: int, generator: torch.Generator | None = None,
                           device=None) -> Tensor:
    """The reference's training timesteps: uniform on [0, 1) (torch.rand)."""
    return torch.rand(batch, generator=generator).to(device)


VALIDATION_TIMESTEPS = 8


def validation_timesteps(index: Tensor) -> Tensor:
    """Each validation sample carries an index 0..7; it is evaluated at t = index / 8."""
    return index.float() / VALIDATION_TIMESTEPS


def latent_from_mean_logvar(mean: Tensor, logvar: Tensor, shift: float, scale: float,
                            generator: torch.Generator | None = None) -> Tensor:
    """A VAE posterior sample, normalised as the reference does: (mean + std*eps - shift)*scale."""
    eps = torch.randn(mean.shape, generator=generator, dtype=torch.float32).to(mean.device)
    z = mean.float() + torch.exp(0.5 * logvar.float()) * eps
    return (z - shift) * scale
