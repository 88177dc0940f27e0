"""The Llama 3.1 decoder: RoPE 3.1 scaling, GQA, causality, parameter count = the planner's,
recompute, the rotary table through a bf16 cast, and the DecoderModel check at build."""
from __future__ import annotations

import math

import torch

import pytest
from torch import nn

from pinchpoint.workloads.llama31.plan import parameter_counts
from pinchpoint.workloads.common.decoder import check_decoder_model
from pinchpoint.workloads.common.rotary import Llama3Scaling, inverse_frequencies
from pinchpoint.workloads.llama31.model import Llama, LlamaArgs

ARGS = LlamaArgs(dim=64, n_layers=2, n_heads=8, n_kv_heads=2, ffn_dim=160, vocab_size=97,
                 max_seq_len=64)


def _meta_apply_scaling(freqs, factor=8, low=1, high=4, old_context=8192):
    """Meta's llama3 reference (models/llama3/reference_impl/model.py apply_scaling), scalar."""
    low_wavelen, high_wavelen = old_context / low, old_context / high
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            out.append(freq)
        elif wavelen > low_wavelen:
            out.append(freq / factor)
        else:
            smooth = (old_context / wavelen - low) / (high - low)
            out.append((1 - smooth) * freq / factor + smooth * freq)
    return out


def test_rope_scaling_matches_meta_reference():
    """In float32, as transformers computes them (Meta's reference computes in float64)."""
    plain = inverse_frequencies(128, 500000.0)
    scaled = inverse_frequencies(128, 500000.0, Llama3Scaling())
    expected = _meta_apply_scaling(plain.double().tolist())
    assert torch.allclose(scaled.double(), torch.tensor(expected, dtype=torch.float64),
                          rtol=1e-6)
    assert scaled[0] == plain[0] and scaled[-1] == plain[-1] / 8   # high kept, low slowed


def test_forward_is_causal_and_counts_match_the_planner():
    torch.manual_seed(0)
    model = Llama(ARGS)
    assert sum(p.numel() for p in model.parameters()) == parameter_counts(ARGS)["total"]
    assert model.output.weight.data_ptr() != model.tok_embeddings.weight.data_ptr()  # untied
    tokens = torch.randint(0, 97, (2, 16))
    logits = model(tokens)
    assert logits.shape == (2, 16, 97)
    changed = tokens.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % 97
    assert torch.allclose(model(changed)[:, :10], logits[:, :10], atol=1e-6)
    assert not torch.allclose(model(changed)[:, 10:], logits[:, 10:])
    assert model.layers["0"].attention.wk.weight.shape == (2 * 8, 64)    # 2 KV heads of dim 8


def test_recompute_gives_the_same_gradients():
    torch.manual_seed(0)
    model = Llama(ARGS)
    tokens = torch.randint(0, 97, (2, 16))
    model(tokens).sum().backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.recompute = True
    model(tokens).sum().backward()
    for a, b in zip(plain, (p.grad for p in model.parameters())):
        assert torch.allclose(a, b, atol=1e-6)


def test_cast_to_bfloat16_keeps_the_rotary_table():
    """module.to(torch.bfloat16) casts the weights, not the float32 rotary angles (bf16 angles
    are off by radians at long positions): forward after a round trip through bf16 equals a
    fresh model holding the same (bf16-rounded) weights, in float32 and in bf16."""
    torch.manual_seed(0)
    model = Llama(ARGS)
    model.to(torch.bfloat16)
    assert model.rope.dtype == torch.float32
    assert model.layers["0"].attention.wq.weight.dtype == torch.bfloat16
    fresh = Llama(ARGS)
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(model.rope, fresh.rope)
    tokens = torch.randint(0, 97, (2, 16))
    with torch.no_grad():
        in_bf16 = model(tokens)
        model.to(torch.float32)
        assert torch.equal(model(tokens), fresh(tokens))
        assert torch.equal(in_bf16, fresh.to(torch.bfloat16)(tokens))


def test_a_model_that_is_not_a_decoder_model_is_named():
    check_decoder_model(Llama(ARGS))
    model = Llama(ARGS)
    del model.norm
    with pytest.raises(TypeError, match="Llama is not a DecoderModel.*: it has no norm"):
        check_decoder_model(model)
    model = Llama(ARGS)
    model.layers = nn.ModuleDict({"first": model.layers["0"]})
    with pytest.raises(TypeError, match="Llama.layers is not a DecoderModel's"):
        check_decoder_model(model)
