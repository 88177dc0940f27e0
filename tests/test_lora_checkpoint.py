"""Base checkpoints as Hugging Face safetensors: sharded round trip by name, stock q/k/v fused on
load, and clear errors for a name, shape or architecture mismatch."""
import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from pinchpoint.errors import ConfigError, DataError
from pinchpoint.workloads.llama2_70b_lora import hf_checkpoint
from pinchpoint.workloads.llama2_70b_lora.lora import apply_lora, base_state_dict
from pinchpoint.workloads.llama2_70b_lora.model import Llama2Args, Llama2ForCausalLM

ARGS = Llama2Args(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, vocab_size=61,
                  max_seq_len=64)


def saved_base(folder, shard_bytes=2 ** 30):
    torch.manual_seed(1)
    model = Llama2ForCausalLM(ARGS)
    files = hf_checkpoint.save_base(hf_checkpoint.hf_state_dict(model), ARGS, str(folder),
                                    shard_bytes)
    return model, files


def fresh_lora_model():
    torch.manual_seed(2)
    model = Llama2ForCausalLM(ARGS)
    apply_lora(model, 4, 8.0, 0.1, ["qkv_proj", "o_proj"])
    return model


def test_sharded_round_trip_by_hugging_face_names(tmp_path):
    base, files = saved_base(tmp_path, shard_bytes=20_000)
    assert "model.safetensors.index.json" in files and len(files) > 3
    index = json.load(open(tmp_path / "model.safetensors.index.json"))
    assert "model.layers.1.self_attn.qkv_proj.weight" in index["weight_map"]
    assert "lm_head.weight" in index["weight_map"]
    model = fresh_lora_model()
    nbytes = hf_checkpoint.load_base(model, str(tmp_path))
    assert nbytes == sum(t.numel() * 4 for t in base.state_dict().values())
    loaded = base_state_dict(model)
    assert loaded.keys() == base.state_dict().keys()
    for name, tensor in base.state_dict().items():
        assert torch.equal(loaded[name], tensor), name


def test_stock_separate_qkv_is_fused_in_order(tmp_path):
    base, _ = saved_base(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    hd, q = ARGS.head_dim, ARGS.n_heads * ARGS.head_dim
    kv = ARGS.n_kv_heads * hd
    for layer in range(ARGS.n_layers):
        stem = f"model.layers.{layer}.self_attn."
        qkv = state.pop(stem + "qkv_proj.weight")
        state[stem + "q_proj.weight"], state[stem + "k_proj.weight"], \
            state[stem + "v_proj.weight"] = qkv.split([q, kv, kv])
    save_file(state, tmp_path / "model.safetensors")
    model = fresh_lora_model()
    hf_checkpoint.load_base(model, str(tmp_path))
    assert torch.equal(model.layers["1"].self_attn.qkv_proj.weight,
                       base.layers["1"].self_attn.qkv_proj.weight)


def test_name_and_shape_mismatch_lists_the_first_offenders(tmp_path):
    saved_base(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    del state["model.layers.0.mlp.up_proj.weight"]
    state["model.layers.1.mlp.gate_proj.weight"] = torch.zeros(3, 3)
    state["model.extra.weight"] = torch.zeros(1)
    save_file(state, tmp_path / "model.safetensors")
    model = fresh_lora_model()
    before = model.norm.weight.clone()
    with pytest.raises(DataError) as err:
        hf_checkpoint.load_base(model, str(tmp_path))
    message = str(err.value)
    assert "missing (1): model.layers.0.mlp.up_proj.weight" in message
    assert "unexpected (1): model.extra.weight" in message
    assert "model.layers.1.mlp.gate_proj.weight [3, 3] (model [64, 32])" in message
    assert torch.equal(model.norm.weight, before)  # nothing copied


def test_another_architecture_is_refused_before_loading(tmp_path):
    saved_base(tmp_path)
    config = json.load(open(tmp_path / "config.json"))
    config["num_hidden_layers"] = 80
    json.dump(config, open(tmp_path / "config.json", "w"))
    with pytest.raises(ConfigError) as err:
        hf_checkpoint.check_architecture(str(tmp_path), ARGS)
    assert err.value.field == "model.base_checkpoint" and "num_hidden_layers=80" in str(err.value)


def test_missing_checkpoint_folder(tmp_path):
    with pytest.raises(ConfigError, match="model.base_checkpoint"):
        hf_checkpoint.check_architecture(str(tmp_path / "nowhere"), ARGS)
    os.makedirs(tmp_path / "empty")
    with pytest.raises(DataError, match="not a Hugging Face safetensors"):
        hf_checkpoint.load_base(fresh_lora_model(), str(tmp_path / "empty"))
