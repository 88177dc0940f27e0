"""The frozen encoders of the raw FLUX.1 pipeline, built from their real architectures:
transformers' T5EncoderModel (last hidden state, T5-XXL at full scale), CLIPTextModel (pooled
EOS state, CLIP-L) and diffusers' AutoencoderKL (the FLUX VAE: 16 latent channels, factor 8;
only its encoder runs). They are never downloaded: the synthetic generator constructs them from
a config with random weights and saves them (save_pretrained layout) next to the data, and
``load`` reads that folder, or a folder holding real weights, by path.

Tokenizers are `tokenizers` JSON files (real T5/CLIP fast tokenizers ship one); the synthetic
set gets a WordLevel tokenizer built from its own vocabulary.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor

from pinchpoint.errors import DataError

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"   # T5's ids 0, 1, 2


@dataclass
class FrozenEncoders:
    t5: torch.nn.Module
    clip: torch.nn.Module
    vae: torch.nn.Module
    t5_tokenizer: object     # tokenizers.Tokenizer, padded/truncated to the T5 length
    clip_tokenizer: object

    def to(self, device) -> "FrozenEncoders":
        for m in (self.t5, self.clip, self.vae):
            m.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.t5.parameters()).device

    def tokenize(self, captions: list[str]) -> tuple[Tensor, Tensor]:
        t5 = [e.ids for e in self.t5_tokenizer.encode_batch(captions)]
        clip = [e.ids for e in self.clip_tokenizer.encode_batch(captions)]
        return torch.tensor(t5, dtype=torch.long), torch.tensor(clip, dtype=torch.long)

    @torch.no_grad()
    def encode_text(self, t5_ids: Tensor, clip_ids: Tensor) -> tuple[Tensor, Tensor]:
        """(B, L, d_t5) T5 states and (B, d_clip) pooled CLIP vectors; like the reference,
        no attention mask (padding is part of the prompt)."""
        dev = self.device
        t5 = self.t5(input_ids=t5_ids.to(dev)).last_hidden_state
        clip = self.clip(input_ids=clip_ids.to(dev)).pooler_output
        return t5, clip

    @torch.no_grad()
    def encode_images(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Images in [-1, 1], (B, 3, H, W) -> the VAE posterior's mean and logvar."""
        dist = self.vae.encode(images.to(self.device)).latent_dist
        return dist.mean, dist.logvar


# --- construction -------------------------------------------------------------------------------
def word_tokenizer(words: list[str], max_tokens: int):
    """A WordLevel tokenizer over ``words`` with T5's special ids (pad 0, eos 1, unk 2), an EOS
    appended, padded and truncated to ``max_tokens``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    vocab = {PAD: 0, EOS: 1, UNK: 2}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single=f"$A {EOS}",
                                                       special_tokens=[(EOS, 1)])
    fit_tokenizer(tok, max_tokens)
    return tok


def fit_tokenizer(tok, max_tokens: int) -> None:
    pad_id = tok.token_to_id(PAD) or 0
    tok.enable_truncation(max_length=max_tokens)
    tok.enable_padding(length=max_tokens, pad_id=pad_id, pad_token=PAD)


def build_random(shape, vocab: list[str], seed: int) -> FrozenEncoders:
    """Real architectures at the scale's size, random weights (``shape``: a FluxScaleConfig)."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel
    torch.manual_seed(seed)
    t5_tok = word_tokenizer(vocab, shape.t5.max_tokens)
    clip_tok = word_tokenizer(vocab, shape.clip.max_tokens)
    n_vocab = t5_tok.get_vocab_size()
    t5 = T5EncoderModel(T5Config(
        vocab_size=max(n_vocab, shape.t5.vocab_size),
        d_model=shape.t5.d_model, d_kv=shape.t5.d_kv, d_ff=shape.t5.d_ff,
        num_layers=shape.t5.num_layers, num_heads=shape.t5.num_heads,
        feed_forward_proj="gated-gelu", dropout_rate=0.0, pad_token_id=0, eos_token_id=1))
    clip = CLIPTextModel(CLIPTextConfig(
        vocab_size=max(n_vocab, shape.clip.vocab_size),
        hidden_size=shape.clip.hidden_size, intermediate_size=shape.clip.intermediate_size,
        num_hidden_layers=shape.clip.num_layers, num_attention_heads=shape.clip.num_heads,
        max_position_embeddings=shape.clip.max_tokens, pad_token_id=0, bos_token_id=0,
        eos_token_id=1))   # pooled state = first EOS (not the legacy argmax rule for id 2)
    vae = AutoencoderKL(**vae_kwargs(shape.vae))
    return _frozen(FrozenEncoders(t5, clip, vae, t5_tok, clip_tok))


def vae_kwargs(vae) -> dict:
    n = len(vae.block_out_channels)
    return dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                up_block_types=("UpDecoderBlock2D",) * n,
                block_out_channels=tuple(vae.block_out_channels),
                layers_per_block=vae.layers_per_block, latent_channels=vae.latent_channels,
                norm_num_groups=vae.norm_num_groups, scaling_factor=vae.scale,
                shift_factor=vae.shift, use_quant_conv=False, use_post_quant_conv=False)


def _frozen(enc: FrozenEncoders) -> FrozenEncoders:
    for m in (enc.t5, enc.clip, enc.vae):
        m.eval().requires_grad_(False)
    return enc


@torch.no_grad()
def calibrate_vae(enc: FrozenEncoders, images: Tensor, shift: float, scale: float,
                  logvar: float = -6.0) -> None:
    """Give a random VAE a trained one's latent statistics, so the reference's normalisation
    (z - shift) * scale yields unit variance and the posterior is narrow: each mean channel is
    affinely set to mean ``shift`` and std 1/``scale`` over ``images``; logvar is a constant
    ``logvar`` (a random conv_out would make std ~1, i.e. latents mostly sampling noise)."""
    conv = enc.vae.encoder.conv_out
    c = enc.vae.config.latent_channels
    mean, _ = enc.encode_images(images)
    mu = mean.mean(dim=(0, 2, 3))
    sd = mean.std(dim=(0, 2, 3)).clamp_min(1e-6)
    gain = (1.0 / scale) / sd
    conv.weight[:c] *= gain.view(-1, 1, 1, 1)
    conv.bias[:c] = (conv.bias[:c] - mu) * gain + shift
    conv.weight[c:] = 0.0
    conv.bias[c:] = logvar


def save(enc: FrozenEncoders, path: str) -> None:
    for name in ("t5", "clip", "vae"):
        getattr(enc, name).save_pretrained(os.path.join(path, name))
    enc.t5_tokenizer.save(os.path.join(path, "t5", "tokenizer.json"))
    enc.clip_tokenizer.save(os.path.join(path, "clip", "tokenizer.json"))


def load(path: str, shape, device="cpu") -> FrozenEncoders:
    """Encoders from a local folder ``path`` with t5/, clip/, vae/ (save_pretrained layout, each
    with config and weights; t5/ and clip/ with tokenizer.json). Checks the widths against the
    model scale (they fix the MMDiT's context_in_dim and vec_in_dim)."""
    from diffusers import AutoencoderKL
    from tokenizers import Tokenizer
    from transformers import CLIPTextModel, T5EncoderModel
    for sub in ("t5", "clip", "vae"):
        if not os.path.isfile(os.path.join(path, sub, "config.json")):
            raise DataError(os.path.join(path, sub), "missing encoder folder with config.json "
                            "(expected t5/, clip/ and vae/ in save_pretrained layout)")
    t5 = T5EncoderModel.from_pretrained(os.path.join(path, "t5"), local_files_only=True)
    clip = CLIPTextModel.from_pretrained(os.path.join(path, "clip"), local_files_only=True)
    vae = AutoencoderKL.from_pretrained(os.path.join(path, "vae"), local_files_only=True)
    _check_width(path, "t5", t5.config.d_model, shape.t5.d_model, "model.<scale>.t5.d_model")
    _check_width(path, "clip", clip.config.hidden_size, shape.clip.hidden_size,
                 "model.<scale>.clip.hidden_size")
    toks = []
    for sub, n in (("t5", shape.t5.max_tokens), ("clip", shape.clip.max_tokens)):
        f = os.path.join(path, sub, "tokenizer.json")
        if not os.path.isfile(f):
            raise DataError(f, "missing tokenizer (a tokenizers JSON file)")
        tok = Tokenizer.from_file(f)
        fit_tokenizer(tok, n)
        toks.append(tok)
    return _frozen(FrozenEncoders(t5, clip, vae, *toks)).to(device)


def _check_width(path: str, sub: str, got: int, want: int, field: str) -> None:
    if got != want:
        raise DataError(os.path.join(path, sub, "config.json"),
                        f"encoder width {got} does not match {field}={want}")

