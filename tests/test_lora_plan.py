"""The llama2_70b_lora planner: exact parameter counts at full scale, the activation count
against the tensors autograd really saves, and what fits on 8 GPUs with and without recompute."""
import pytest
import torch
from conftest import compose

from pinchpoint.workloads.llama2_70b_lora import plan
from pinchpoint.workloads.llama2_70b_lora.lora import apply_lora
from pinchpoint.workloads.llama2_70b_lora.model import Llama2Args, Llama2ForCausalLM

GIB = 2 ** 30


def test_full_scale_parameters_and_memory_on_8_gpus(tmp_path):
    cfg = compose(["model=llama2_70b_lora", "model.scale=full", "plan_only=true",
                   "parallel.dp_shard=8", "+gpu=h100"], tmp_path)
    from omegaconf import OmegaConf
    p = plan.describe(OmegaConf.to_object(cfg))
    assert p.parameters["base"] == 68_976_648_192
    assert p.parameters["adapters"] == 44_564_480
    with_rc, without = (p.details["memory_per_device"][k]
                        for k in ("with_recompute", "without_recompute"))
    assert with_rc["frozen_weights_bytes"] == 68_976_648_192 * 2 / 8   # bf16, sharded 8 ways
    assert with_rc["total_bytes"] < 74.5 * GIB < without["total_bytes"]
    assert p.fits


def test_full_scale_plan_has_step_time_and_time_to_train(tmp_path):
    """A full plan on 8 GPUs at 8k sequences, from the LoRA RCPs."""
    from omegaconf import OmegaConf
    cfg = compose(["model=llama2_70b_lora", "model.scale=full", "plan_only=true",
                   "parallel.dp_shard=8", "+gpu=gb300"], tmp_path)
    p = plan.describe(OmegaConf.to_object(cfg))
    assert p.world_size == 8 and p.details["layout"]["seq_len"] == 8192
    assert p.step_s == pytest.approx(sum(p.terms_s.values()))
    ttt = p.time_to_train
    assert ttt.rcp == "RCP found" and ttt.steps == pytest.approx(ttt.samples_to_converge / 8)
    assert p.dominant == "compute"


def test_frozen_backward_is_cheaper_than_a_full_fine_tune():
    """No weight gradients for the frozen base: its backward is about the forward's FLOPs,
    against twice that in a full fine-tune; the adapters' own backward stays 2x forward."""
    a = Llama2Args(n_layers=80, dim=8192, n_heads=64, n_kv_heads=8, ffn_dim=28672,
                   vocab_size=32000, max_seq_len=8192)
    counts = plan.parameter_counts(a, 16, ["qkv_proj", "o_proj"])
    lora = plan.training_flops(a, counts, 8192, 8192, recompute=False)
    full = plan.training_flops(a, counts, 8192, 8192, recompute=False, frozen=False)
    assert lora["forward"] == full["forward"]
    assert lora["backward"] < 0.6 * full["backward"]
    assert lora["backward"] < 1.2 * lora["forward"]


def test_frozen_base_reduces_no_gradients():
    """FSDP reduce-scatters only the adapters' gradients: the gathers of the frozen base
    dominate the data-parallel traffic."""
    from pinchpoint.plan.hardware import preset
    a = Llama2Args(n_layers=80, dim=8192, n_heads=64, n_kv_heads=8, ffn_dim=28672,
                   vocab_size=32000, max_seq_len=8192)
    counts = plan.parameter_counts(a, 16, ["qkv_proj", "o_proj"])
    s = plan.step_terms(a, counts, preset("h100"), 8, 1, 1, 8, 8192, True, "bf16")
    comm = s["communication_s"]
    assert comm["adapter_reduce_scatter"] < comm["fsdp_all_gather"] / 100


def test_activation_count_matches_what_autograd_saves():
    """Sum the tensors autograd saves in one training forward (parameters and the RoPE tables
    left out) of a small LoRA model: the planner's per-layer count plus the final norm's input
    comes within 10 %."""
    a = Llama2Args(dim=64, n_layers=2, n_heads=8, n_kv_heads=2, ffn_dim=224, vocab_size=64,
                   max_seq_len=256)
    torch.manual_seed(0)
    model = Llama2ForCausalLM(a)
    apply_lora(model, 8, 16.0, 0.1, ["qkv_proj", "o_proj"])
    skip = {p.data_ptr() for p in model.parameters()} | \
        {b.untyped_storage().data_ptr() for b in model.buffers()}
    saved = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in skip:
            saved[(t.data_ptr(), tuple(t.shape), tuple(t.stride()))] = t.nelement() * \
                t.element_size()
        return t

    ids = torch.randint(0, a.vocab_size, (2, 128))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(ids)
    tokens = ids.numel()
    planned = plan.activation_bytes_per_token_layer(a, 8, ["qkv_proj", "o_proj"], 0.1, 4) * \
        tokens * a.n_layers + tokens * a.dim * 4  # + the final norm's input
    measured = sum(saved.values())
    assert abs(planned - measured) / measured < 0.10, (planned, measured)


def _nemo(gpu, cp, fp8_attention, extra=(), tmp_path=None):
    """NeMo's 8-GPU layout as the submissions run it: FP8 GEMMs, the base replicated, one
    sequence of 8,192 tokens per micro-batch, the SwiGLU input stored in FP8 (FP8_ACT)."""
    from conftest import plan_of
    return plan_of(["model=llama2_70b_lora", "model.scale=full", f"+gpu={gpu}",
                    f"parallel.dp_shard={8 // cp}", f"parallel.cp={cp}", "plan.stack=megatron",
                    "plan.precision=fp8", f"plan.fp8_attention={fp8_attention}",
                    "plan.fp8_activation_store=true", "model.recompute=false", *extra],
                   tmp_path)


def test_nemo_memory_explains_the_layouts_the_submissions_chose(tmp_path):
    """The base in FP8 (te.fp8_model_init) and Transformer Engine's saved tensors: 8 x B200
    run a whole 8,192-token sequence per GPU at the edge of memory (NVIDIA's config disables
    NVLS 'to avoid OOM'); on 8 x H200 that layout does not fit, which is why every H200
    submission splits the sequence (CP2 or TP2), and CP2 fits."""
    b200 = _nemo("b200", 1, "true", tmp_path=tmp_path)
    frozen = b200.memory_per_device_bytes["frozen_weights_bytes"]
    assert frozen == b200.parameters["base"] * 1                       # FP8, whole on each GPU
    assert b200.memory_needed_gib == pytest.approx(b200.memory_usable_gib, rel=0.02)
    h200_cp1 = _nemo("h200", 1, "false", tmp_path=tmp_path)
    h200_cp2 = _nemo("h200", 2, "false", tmp_path=tmp_path)
    assert not h200_cp1.fits and h200_cp2.fits


def test_fp8_activation_store_and_block_recompute_shrink_what_a_layer_keeps(tmp_path):
    full = _nemo("mi300x", 1, "false", tmp_path=tmp_path)
    bf16_store = _nemo("mi300x", 1, "false", ["plan.fp8_activation_store=false"], tmp_path)
    saved = bf16_store.memory_per_device_bytes["activation_bytes"] - \
        full.memory_per_device_bytes["activation_bytes"]
    assert saved == pytest.approx(80 * 8192 * 2 * 28_672)          # a byte per SwiGLU input
    block = _nemo("mi300x", 1, "false", ["plan.recompute_layers=21"], tmp_path)   # AMD's ACL
    every = _nemo("mi300x", 1, "false", ["model.recompute=true"], tmp_path)
    mem = [p.memory_per_device_bytes["activation_bytes"] for p in (every, block, full)]
    step = [p.terms_s["compute"] for p in (full, block, every)]
    assert mem[0] < mem[1] < mem[2] and step[0] < step[1] < step[2]
    assert (step[1] - step[0]) / (step[2] - step[0]) == pytest.approx(21 / 80, rel=0.02)
