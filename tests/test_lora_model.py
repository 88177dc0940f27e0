"""Llama 2 with fused QKV and LoRA adapters: exact parameter counts (proxy and the published 70B
via the meta device), identity at init, only adapters train, recompute, agreement with Hugging
Face's LlamaForCausalLM, and the pre-launch LoRA checks."""
import pytest
import torch

from pinchpoint.errors import ConfigError
from pinchpoint.workloads.llama2_70b_lora.lora import (apply_lora, check_lora, parameter_counts,
                                                       projection_sizes)
from pinchpoint.workloads.llama2_70b_lora.model import (Llama2Args, Llama2ForCausalLM,
                                                        causal_lm_loss)

FULL = Llama2Args(dim=8192, n_layers=80, n_heads=64, n_kv_heads=8, ffn_dim=28672,
                  vocab_size=32000)
TINY = Llama2Args(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, vocab_size=61,
                  max_seq_len=64)


def lora_model(args, rank=4, targets=("qkv_proj", "o_proj"), device=None, dropout=0.1):
    with torch.device(device or "cpu"):
        model = Llama2ForCausalLM(args)
    apply_lora(model, rank, 2.0 * rank, dropout, list(targets))
    return model


def test_full_scale_counts_on_meta_device():
    """The published 70B: 68,976,648,192 base parameters and PEFT's 44,564,480 trainable for
    r=16 on qkv_proj and o_proj (80 x 16 x ((8192 + 10240) + (8192 + 8192)))."""
    counts = parameter_counts(lora_model(FULL, rank=16, device="meta"))
    per_layer = 8192 * 10240 + 8192 * 8192 + 3 * 8192 * 28672 + 2 * 8192
    assert counts["base"] == 80 * per_layer + 2 * 32000 * 8192 + 8192 == 68_976_648_192
    assert counts["trainable"] == 80 * 16 * (8192 + 10240 + 8192 + 8192) == 44_564_480


def test_proxy_counts_match_the_architecture():
    a = TINY
    counts = parameter_counts(lora_model(a, rank=4, targets=("qkv_proj", "o_proj", "down_proj")))
    qkv = (a.n_heads + 2 * a.n_kv_heads) * a.head_dim
    assert counts["trainable"] == a.n_layers * 4 * ((a.dim + qkv) + 2 * a.dim
                                                   + (a.ffn_dim + a.dim))
    assert counts["total"] == counts["base"] + counts["trainable"]


def test_adapters_start_as_identity():
    torch.manual_seed(0)
    model = Llama2ForCausalLM(TINY)
    tokens = torch.randint(0, TINY.vocab_size, (2, 16))
    before = model(tokens)
    apply_lora(model, 4, 8.0, 0.1, ["qkv_proj", "o_proj"])
    model.train()  # dropout active: still identical, B is zero
    assert torch.equal(model(tokens), before)


def test_only_adapters_get_gradients():
    torch.manual_seed(0)
    model = lora_model(TINY)
    tokens = torch.randint(0, TINY.vocab_size, (2, 16))
    loss, n = causal_lm_loss(model(tokens), tokens)
    (loss / n).backward()
    for name, p in model.named_parameters():
        if "lora_" in name:
            assert p.requires_grad and p.grad is not None, name
        else:
            assert not p.requires_grad and p.grad is None, name
    # B = 0 at init: A's gradient is zero until B moves, B's is not.
    assert all(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)


def test_recompute_gives_the_same_gradients():
    torch.manual_seed(0)
    model = lora_model(TINY, dropout=0.0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.02)
    tokens = torch.randint(0, TINY.vocab_size, (2, 16))
    grads = []
    for recompute in (False, True):
        model.recompute = recompute
        model.zero_grad()
        loss, n = causal_lm_loss(model(tokens), tokens)
        (loss / n).backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.requires_grad])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_matches_hugging_face_llama():
    """Same weights (stock Hugging Face names with separate q/k/v, fused on load) give the same
    logits as transformers' LlamaForCausalLM."""
    transformers = pytest.importorskip("transformers")
    import tempfile

    from pinchpoint.workloads.llama2_70b_lora import hf_checkpoint
    a = TINY
    config = transformers.LlamaConfig(
        hidden_size=a.dim, num_hidden_layers=a.n_layers, num_attention_heads=a.n_heads,
        num_key_value_heads=a.n_kv_heads, intermediate_size=a.ffn_dim, vocab_size=a.vocab_size,
        max_position_embeddings=a.max_seq_len, rms_norm_eps=a.norm_eps, rope_theta=a.rope_theta,
        tie_word_embeddings=False, attn_implementation="eager")
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(config).eval()
    ours = Llama2ForCausalLM(a).eval()
    with tempfile.TemporaryDirectory() as folder:
        hf_checkpoint.save_base(hf.state_dict(), a, folder)
        hf_checkpoint.load_base(ours, folder)
    tokens = torch.randint(0, a.vocab_size, (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens), hf(tokens).logits, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("rank,alpha,dropout,targets,field", [
    (0, 32.0, 0.1, ["qkv_proj"], "model.lora.rank"),
    (33, 32.0, 0.1, ["qkv_proj", "o_proj"], "model.lora.rank"),
    (16, 32.0, 0.1, ["q_proj"], "model.lora.target_modules"),
    (16, 0.0, 0.1, ["o_proj"], "model.lora.alpha"),
    (16, 32.0, 1.0, ["o_proj"], "model.lora.dropout"),
    (16, 32.0, -0.1, ["o_proj"], "model.lora.dropout"),
])
def test_bad_lora_settings_name_the_field(rank, alpha, dropout, targets, field):
    sizes = projection_sizes(dim=32, n_heads=4, n_kv_heads=2, ffn_dim=64)
    with pytest.raises(ConfigError) as err:
        check_lora(rank, alpha, dropout, targets, sizes)
    assert err.value.field == field
