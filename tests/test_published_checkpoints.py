"""Released checkpoints load by name: each workload's state-dict adapter writes a small model under
its publisher's names and layouts (FLUX.1: Black Forest Labs'; Llama 3.1, GPT-OSS, DeepSeek V3:
transformers'), the same file loads back into a fresh model with identical outputs, and the
reference library reads the file as its own and computes the same function (diffusers'
FluxTransformer2DModel through its BFL converter; transformers' from_pretrained). Quantised
releases (GPT-OSS MXFP4 experts, DeepSeek V3 FP8 blocks) dequantise on load; a checkpoint of
another model is refused with the tensors that differ, before any weight is read. Nothing is
downloaded: every model is built from a config with random weights."""
from __future__ import annotations

import pytest
import torch

from pinchpoint.errors import DataError
from pinchpoint.workloads.common.rotary import Yarn
from pinchpoint.workloads.common.state_dict_adapter import load_published, save_published
from pinchpoint.workloads.flux1 import model as flux
from pinchpoint.workloads.flux1.state_dict_adapter import FluxStateDictAdapter

transformers = pytest.importorskip("transformers")

FLUX_FULL = flux.MMDiTShape(in_channels=64, vec_in_dim=768, context_in_dim=4096,
                            hidden_size=3072, num_heads=24, depth=19, depth_single_blocks=38)
FLUX_TINY = flux.MMDiTShape(in_channels=64, vec_in_dim=24, context_in_dim=40, hidden_size=48,
                            num_heads=4, depth=2, depth_single_blocks=1, axes_dim=(4, 4, 4))
GPT_OSS_YARN = Yarn(factor=32.0, original_max_position_embeddings=4096, truncate=False)
DEEPSEEK_YARN = Yarn(factor=40.0, original_max_position_embeddings=4096, mscale=1.0,
                     mscale_all_dim=1.0)


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter and buffer drawn at random (zero-initialised biases, sinks and gates
    would hide a misplaced tensor)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.normal_(1.0 if name.endswith("norm.weight") else 0.0, 0.2)
    return model.eval()


def same_outputs(a: torch.nn.Module, b: torch.nn.Module, *inputs) -> bool:
    with torch.no_grad():
        return torch.equal(a(*inputs), b(*inputs))


# --- FLUX.1: Black Forest Labs' names, read by diffusers' converter ----------------------------
def diffusers_flux(shape: flux.MMDiTShape):
    from diffusers import FluxTransformer2DModel
    return FluxTransformer2DModel(
        patch_size=1, in_channels=shape.in_channels, num_layers=shape.depth,
        num_single_layers=shape.depth_single_blocks, num_attention_heads=shape.num_heads,
        attention_head_dim=shape.hidden_size // shape.num_heads,
        joint_attention_dim=shape.context_in_dim, pooled_projection_dim=shape.vec_in_dim,
        guidance_embeds=False, axes_dims_rope=tuple(shape.axes_dim))


def bfl_to_diffusers(bfl: dict, hidden: int) -> dict:
    """diffusers' own BFL converter (loaders/single_file_utils.py); it splits single blocks'
    linear1 at FLUX.1's width (3072), so at another width that one split is redirected."""
    pytest.importorskip("diffusers")
    from diffusers.loaders.single_file_utils import (
        convert_flux_transformer_checkpoint_to_diffusers)
    from torch.overrides import TorchFunctionMode

    class AtThisWidth(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func is torch.split and args[1] == (3072, 3072, 3072, 4 * 3072):
                args = (args[0], (hidden, hidden, hidden, 4 * hidden), *args[2:])
            return func(*args, **(kwargs or {}))

    left = dict(bfl)
    with AtThisWidth():
        converted = convert_flux_transformer_checkpoint_to_diffusers(left)
    assert not left, f"BFL names diffusers' converter did not take: {sorted(left)[:5]}"
    return converted


def test_flux_bfl_names_and_shapes_are_what_diffusers_converts_at_full_scale():
    """FLUX.1's 11.9 B parameters on the meta device: every BFL name the adapter writes is taken
    by diffusers' converter, which yields exactly FluxTransformer2DModel's names and shapes."""
    pytest.importorskip("diffusers")
    with torch.device("meta"):
        ours, theirs = flux.FluxMMDiT(FLUX_FULL), diffusers_flux(FLUX_FULL)
    bfl = FluxStateDictAdapter().to_published(ours.state_dict())
    assert "double_blocks.0.img_attn.norm.query_norm.scale" in bfl
    assert "single_blocks.37.norm.key_norm.scale" in bfl and not any("norm.weight" in n
                                                                      for n in bfl)
    converted = bfl_to_diffusers(bfl, FLUX_FULL.hidden_size)
    assert {n: t.shape for n, t in converted.items()} == \
        {n: t.shape for n, t in theirs.state_dict().items()}


def test_flux_bfl_file_loads_and_computes_what_diffusers_computes(tmp_path):
    ours = randomize(flux.FluxMMDiT(FLUX_TINY))
    adapter = FluxStateDictAdapter()
    save_published(ours, adapter, str(tmp_path / "flux1-tiny.safetensors"))
    loaded = flux.FluxMMDiT(FLUX_TINY).eval()
    load_published(loaded, adapter, str(tmp_path / "flux1-tiny.safetensors"))
    torch.manual_seed(1)
    b = 2
    img, txt = torch.randn(b, 16, 64), torch.randn(b, 7, 40)
    y, t = torch.randn(b, 24), torch.rand(b)
    img_ids, txt_ids = flux.latent_position_ids(b, 8, 8), torch.zeros(b, 7, 3)
    inputs = (img, img_ids, txt, txt_ids, t, y)
    assert same_outputs(ours, loaded, *inputs)

    from safetensors.torch import load_file
    theirs = diffusers_flux(FLUX_TINY).eval()
    theirs.load_state_dict(bfl_to_diffusers(load_file(str(tmp_path / "flux1-tiny.safetensors")),
                                            FLUX_TINY.hidden_size), strict=True)
    with torch.no_grad():
        expected = theirs(hidden_states=img, encoder_hidden_states=txt, pooled_projections=y,
                          timestep=t, img_ids=img_ids[0], txt_ids=txt_ids[0]).sample
        torch.testing.assert_close(ours(*inputs), expected, rtol=1e-5, atol=1e-5)


def test_flux_packaged_prefix_loads_and_a_dev_checkpoint_is_refused(tmp_path):
    """ComfyUI's ``model.diffusion_model.`` prefix is accepted; FLUX.1-dev's guidance embedder
    is named as unexpected before any weight is read."""
    from safetensors.torch import save_file
    ours = randomize(flux.FluxMMDiT(FLUX_TINY))
    bfl = FluxStateDictAdapter().to_published(ours.state_dict())
    save_file({"model.diffusion_model." + n: t.contiguous() for n, t in bfl.items()},
              str(tmp_path / "packaged.safetensors"))
    loaded = flux.FluxMMDiT(FLUX_TINY)
    load_published(loaded, FluxStateDictAdapter(), str(tmp_path / "packaged.safetensors"))
    assert torch.equal(loaded.final_layer.linear.weight, ours.final_layer.linear.weight)

    bfl["guidance_in.in_layer.weight"] = torch.zeros(48, 256)
    save_file({n: t.contiguous() for n, t in bfl.items()}, str(tmp_path / "dev.safetensors"))
    untouched = flux.FluxMMDiT(FLUX_TINY)
    before = untouched.img_in.weight.clone()
    with pytest.raises(DataError) as err:
        load_published(untouched, FluxStateDictAdapter(), str(tmp_path / "dev.safetensors"))
    assert "unexpected (1): guidance_in.in_layer.weight" in str(err.value)
    assert torch.equal(untouched.img_in.weight, before)


# --- Llama 3.1: Hugging Face names (both rotate half: no rows reordered) ----------------------
def test_llama_hf_checkpoint_loads_and_matches_transformers(tmp_path):
    from pinchpoint.workloads.llama31.model import Llama, LlamaArgs
    from pinchpoint.workloads.llama31.state_dict_adapter import LlamaStateDictAdapter
    a = LlamaArgs(dim=64, n_layers=2, n_heads=8, n_kv_heads=2, ffn_dim=160, vocab_size=97,
                  max_seq_len=64)
    ours, adapter = randomize(Llama(a)), LlamaStateDictAdapter()
    save_published(ours, adapter, str(tmp_path / "model.safetensors"))
    transformers.LlamaConfig(
        hidden_size=a.dim, num_hidden_layers=a.n_layers, num_attention_heads=a.n_heads,
        num_key_value_heads=a.n_kv_heads, intermediate_size=a.ffn_dim, vocab_size=a.vocab_size,
        max_position_embeddings=131072, rms_norm_eps=a.norm_eps, tie_word_embeddings=False,
        rope_parameters={"rope_type": "llama3", "rope_theta": a.rope_theta, "factor": 8.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192}).save_pretrained(tmp_path)
    theirs = from_pretrained(transformers.LlamaForCausalLM, tmp_path)
    loaded = Llama(a).eval()
    load_published(loaded, adapter, str(tmp_path))
    tokens = torch.randint(0, a.vocab_size, (2, 24))
    assert same_outputs(ours, loaded, tokens)
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens), theirs(tokens).logits, rtol=1e-5, atol=1e-5)


def from_pretrained(cls, folder):
    """transformers' own loader on the folder, every tensor taken and none missing."""
    model, info = cls.from_pretrained(folder, output_loading_info=True, dtype=torch.float32,
                                      attn_implementation="eager")
    assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"]), info
    return model.eval()


# --- GPT-OSS: interleaved gate/up, MXFP4 experts ---------------------------------------------
def gpt_oss(yarn=GPT_OSS_YARN, **sizes):
    from pinchpoint.workloads.gpt_oss_20b.model import GptOss, GptOssArgs
    a = GptOssArgs(**{**dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16,
                             vocab_size=97, max_seq_len=256, num_experts=4, top_k=2,
                             expert_dim=32, sliding_window=8), **sizes}, yarn=yarn)
    return a, GptOss(a)


def test_gpt_oss_checkpoint_with_yarn_loads_and_matches_transformers(tmp_path):
    from pinchpoint.workloads.gpt_oss_20b.state_dict_adapter import GptOssStateDictAdapter
    a, ours = gpt_oss()
    randomize(ours)
    save_published(ours, GptOssStateDictAdapter(), str(tmp_path / "model.safetensors"))
    transformers.GptOssConfig(
        hidden_size=a.dim, num_hidden_layers=a.n_layers, num_attention_heads=a.n_heads,
        num_key_value_heads=a.n_kv_heads, head_dim=a.head_dim, num_local_experts=a.num_experts,
        num_experts_per_tok=a.top_k, intermediate_size=a.expert_dim, vocab_size=a.vocab_size,
        sliding_window=a.sliding_window, rms_norm_eps=a.norm_eps, tie_word_embeddings=False,
        rope_parameters={"rope_type": "yarn", "rope_theta": a.rope_theta, "factor": 32.0,
                         "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False,
                         "original_max_position_embeddings": 4096}).save_pretrained(tmp_path)
    theirs = from_pretrained(transformers.GptOssForCausalLM, tmp_path)
    _, loaded = gpt_oss()
    load_published(loaded.eval(), GptOssStateDictAdapter(), str(tmp_path))
    tokens = torch.randint(0, a.vocab_size, (2, 40))     # past the 8-token window
    assert same_outputs(ours, loaded, tokens)
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens), theirs(tokens).logits, rtol=1e-5, atol=1e-5)
        _, plain = gpt_oss(yarn=None)
        plain.load_state_dict(ours.state_dict())
        assert not torch.allclose(plain.eval()(tokens), theirs(tokens).logits, atol=1e-3)


FP4 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]


def mxfp4_values(blocks: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """The OCP MX spec read directly: two e2m1 codes per byte (low nibble first), 32 values per
    power-of-two scale (exponent bias 127); (experts, rows, in) stored, (experts, in, rows) used."""
    lut = torch.tensor(FP4)
    codes = torch.stack([blocks & 15, blocks >> 4], dim=-1).long()
    values = lut[codes].flatten(-2) * torch.exp2(scales.float() - 127)[..., None]
    return values.flatten(-2).transpose(1, 2)


def test_gpt_oss_mxfp4_experts_dequantise_on_load(tmp_path):
    """The release's experts: ``*_blocks`` / ``*_scales`` pairs in place of gate_up_proj and
    down_proj; they load as the values the MX format encodes, gate/up de-interleaved."""
    from safetensors.torch import save_file

    from pinchpoint.workloads.gpt_oss_20b.state_dict_adapter import GptOssStateDictAdapter
    a, ours = gpt_oss()
    published = GptOssStateDictAdapter().to_published(randomize(ours).state_dict())
    gen = torch.Generator().manual_seed(0)
    expected = {}
    for layer in range(a.n_layers):
        stem = f"model.layers.{layer}.mlp.experts."
        for proj, rows, width in (("gate_up_proj", 2 * a.expert_dim, a.dim),
                                  ("down_proj", a.dim, a.expert_dim)):
            del published[stem + proj]
            blocks = torch.randint(0, 256, (a.num_experts, rows, width // 32, 16),
                                   dtype=torch.uint8, generator=gen)
            scales = torch.randint(120, 130, (a.num_experts, rows, width // 32),
                                   dtype=torch.uint8, generator=gen)
            published[stem + proj + "_blocks"], published[stem + proj + "_scales"] = blocks, scales
            expected[f"layers.{layer}.moe.experts.{proj}"] = mxfp4_values(blocks, scales)
    save_file({n: t.contiguous() for n, t in published.items()}, str(tmp_path / "m.safetensors"))
    _, loaded = gpt_oss()
    load_published(loaded, GptOssStateDictAdapter(), str(tmp_path / "m.safetensors"))
    state = loaded.state_dict()
    for name, values in expected.items():
        if name.endswith("gate_up_proj"):    # stored gate 0, up 0, gate 1, ...; used [gate | up]
            values = torch.cat([values[..., 0::2], values[..., 1::2]], dim=-1)
        assert torch.equal(state[name], values), name
    sinks = "layers.1.attention.sinks"
    assert torch.equal(state[sinks], ours.state_dict()[sinks])


def test_a_checkpoint_of_another_size_is_refused_naming_the_tensors(tmp_path):
    from pinchpoint.workloads.gpt_oss_20b.state_dict_adapter import GptOssStateDictAdapter
    _, small = gpt_oss()
    save_published(small, GptOssStateDictAdapter(), str(tmp_path / "model.safetensors"))
    _, wider = gpt_oss(dim=64, n_layers=3)
    with pytest.raises(DataError) as err:
        load_published(wider, GptOssStateDictAdapter(), str(tmp_path))
    message = str(err.value)
    assert "missing (17): layers.2.attention.sinks" in message
    assert "wrong shape (25): layers.0.attention.wk.weight [32, 32] (model [32, 64])" in message
    from pinchpoint.workloads.llama31.state_dict_adapter import LlamaStateDictAdapter
    with pytest.raises(DataError) as err:    # a GPT-OSS file read as a Llama checkpoint
        load_published(small, LlamaStateDictAdapter(), str(tmp_path))
    assert "is not Hugging Face Llama checkpoint names" in str(err.value)
    assert "no counterpart: model.layers.0.mlp.experts.down_proj" in str(err.value)


# --- DeepSeek V3: per-expert tensors, interleaved rotary rows, FP8 blocks, the MTP layer -------
def deepseek():
    from pinchpoint.workloads.deepseek_v3_671b.model import DeepSeekArgs, DeepSeekV3
    a = DeepSeekArgs(dim=32, n_layers=3, n_dense_layers=1, dense_ffn_dim=64, n_heads=4,
                     q_lora_rank=16, kv_lora_rank=8, qk_nope_head_dim=8, qk_rope_head_dim=8,
                     v_head_dim=8, vocab_size=97, max_seq_len=256, num_experts=8, top_k=2,
                     expert_dim=16, num_groups=4, top_groups=2, yarn=DEEPSEEK_YARN)
    return a, DeepSeekV3(a)


def deepseek_config(a, folder) -> None:
    transformers.DeepseekV3Config(
        vocab_size=a.vocab_size, hidden_size=a.dim, intermediate_size=a.dense_ffn_dim,
        moe_intermediate_size=a.expert_dim, num_hidden_layers=a.n_layers,
        num_attention_heads=a.n_heads, num_key_value_heads=a.n_heads, n_shared_experts=1,
        n_routed_experts=a.num_experts, routed_scaling_factor=a.route_scale,
        kv_lora_rank=a.kv_lora_rank, q_lora_rank=a.q_lora_rank,
        qk_rope_head_dim=a.qk_rope_head_dim, v_head_dim=a.v_head_dim,
        qk_nope_head_dim=a.qk_nope_head_dim, n_group=a.num_groups, topk_group=a.top_groups,
        num_experts_per_tok=a.top_k, first_k_dense_replace=a.n_dense_layers,
        norm_topk_prob=True, rms_norm_eps=a.norm_eps, max_position_embeddings=163840,
        rope_interleave=True, tie_word_embeddings=False,
        rope_parameters={"rope_type": "yarn", "rope_theta": a.rope_theta, "factor": 40.0,
                         "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0,
                         "original_max_position_embeddings": 4096}).save_pretrained(folder)


def test_deepseek_checkpoint_loads_and_matches_transformers(tmp_path):
    """Written as the release names it (one tensor per expert, rotary rows in DeepSeek's pair
    order), read by transformers with rope_interleave and YaRN: the same logits; an extra
    multi-token-prediction layer in the file is skipped."""
    from safetensors.torch import load_file, save_file

    from pinchpoint.workloads.deepseek_v3_671b.state_dict_adapter import (
        DeepSeekStateDictAdapter)
    a, ours = deepseek()
    adapter = DeepSeekStateDictAdapter(a)
    randomize(ours)
    save_published(ours, adapter, str(tmp_path / "model.safetensors"))
    deepseek_config(a, tmp_path)
    theirs = from_pretrained(transformers.DeepseekV3ForCausalLM, tmp_path)
    tokens = torch.randint(0, a.vocab_size, (2, 40))
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens), theirs(tokens).logits, rtol=1e-5, atol=1e-5)

    with_mtp = load_file(str(tmp_path / "model.safetensors"))
    with_mtp.update({f"model.layers.{a.n_layers}.eh_proj.weight": torch.zeros(a.dim, 2 * a.dim),
                     f"model.layers.{a.n_layers}.enorm.weight": torch.ones(a.dim)})
    save_file(with_mtp, str(tmp_path / "with_mtp.safetensors"))
    _, loaded = deepseek()
    load_published(loaded.eval(), adapter, str(tmp_path / "with_mtp.safetensors"))
    assert same_outputs(ours, loaded, tokens)


def test_deepseek_fp8_blocks_dequantise_on_load(tmp_path):
    """Linear weights stored as float8_e4m3fn with one float32 ``weight_scale_inv`` per block
    (8 x 8 here so several blocks meet every matrix; 128 x 128 in the release) load as
    fp8 value x its block's scale."""
    from safetensors.torch import save_file

    from pinchpoint.workloads.deepseek_v3_671b.state_dict_adapter import (
        DeepSeekStateDictAdapter)
    a, ours = deepseek()
    adapter = DeepSeekStateDictAdapter(a, fp8_block=(8, 8))
    published = adapter.to_published(randomize(ours).state_dict())
    gen = torch.Generator().manual_seed(0)
    quantised, dequantised = {}, {}
    for name, w in published.items():
        if not name.endswith("_proj.weight") and not name.endswith("_mqa.weight"):
            quantised[name] = dequantised[name] = w
            continue
        rows, cols = w.shape
        scale = torch.rand((rows + 7) // 8, (cols + 7) // 8, generator=gen) * 0.01 + 0.001
        per_value = torch.kron(scale, torch.ones(8, 8))[:rows, :cols]
        quantised[name] = (w / per_value).to(torch.float8_e4m3fn)
        quantised[name + "_scale_inv"] = scale
        dequantised[name] = quantised[name].float() * per_value
    save_file({n: t.contiguous() for n, t in quantised.items()}, str(tmp_path / "fp8.safetensors"))
    _, loaded = deepseek()
    load_published(loaded, adapter, str(tmp_path / "fp8.safetensors"))
    _, expected = deepseek()
    expected.load_state_dict(adapter.from_published(dequantised))
    for name, t in expected.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], t), name
    assert not torch.equal(loaded.layers["1"].attention.wq_b.weight,
                           ours.layers["1"].attention.wq_b.weight)   # fp8 did round


def test_round_trip_through_published_names_is_exact():
    """to_published then from_published gives back every tensor bit for bit (the reorderings
    and stackings invert each other)."""
    from pinchpoint.workloads.deepseek_v3_671b.state_dict_adapter import (
        DeepSeekStateDictAdapter)
    from pinchpoint.workloads.gpt_oss_20b.state_dict_adapter import GptOssStateDictAdapter
    from pinchpoint.workloads.llama31.model import Llama, LlamaArgs
    from pinchpoint.workloads.llama31.state_dict_adapter import LlamaStateDictAdapter
    la = LlamaArgs(dim=64, n_layers=2, n_heads=8, n_kv_heads=2, ffn_dim=160, vocab_size=97,
                   max_seq_len=64)
    da, ds = deepseek()
    cases = [(flux.FluxMMDiT(FLUX_TINY), FluxStateDictAdapter()),
             (Llama(la), LlamaStateDictAdapter()),
             (gpt_oss()[1], GptOssStateDictAdapter()), (ds, DeepSeekStateDictAdapter(da))]
    for model, adapter in cases:
        state = randomize(model).state_dict()
        back = adapter.from_published(adapter.to_published(state))
        assert back.keys() == state.keys(), type(model).__name__
        assert all(torch.equal(back[n], t) for n, t in state.items()), type(model).__name__

