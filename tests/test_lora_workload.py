"""llama2_70b_lora behind the runner: pre-launch errors naming the field, a smoke run's
measurements (base eval loss before fine-tuning, trainable vs base parameters), adapters-only
vs full checkpoints (bytes, resume), and FSDP2 over the frozen base matching one process."""
import copy
import json

import numpy as np
import pytest
import torch
from conftest import compose
from omegaconf import OmegaConf
from harness import load_and_continue, ready, run_layout, save_then_continue, train_steps

from pinchpoint.errors import ConfigError
from pinchpoint.parallel.context import RankContext
from pinchpoint.runner.validation import validate
from pinchpoint.workloads.llama2_70b_lora import data, hf_checkpoint
from pinchpoint.workloads.llama2_70b_lora.model import Llama2ForCausalLM, llama2_args
from pinchpoint.workloads.registry import spec

SMOKE = ["model=llama2_70b_lora", *spec("llama2_70b_lora").smoke, "tracking.enabled=false"]


def config(tmp_path, *extra):
    return compose([*SMOKE, *extra], tmp_path)


def error_field(cfg, **changes) -> str:
    """The field named by validate()'s ConfigError for ``cfg`` with ``changes`` (dotted keys
    spelt with __) applied: composing once and editing is much faster than composing again."""
    cfg = copy.deepcopy(cfg)
    for key, value in changes.items():
        OmegaConf.update(cfg, key.replace("__", "."), value, merge=False)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    return err.value.field


def other_architecture(tmp_path) -> str:
    cfg = config(tmp_path)
    args = llama2_args(cfg.model.smoke)
    args.n_layers += 1
    folder = str(tmp_path / "other_base")
    hf_checkpoint.save_base(hf_checkpoint.hf_state_dict(Llama2ForCausalLM(args)), args, folder)
    return folder


def packed_dataset(tmp_path, length: int) -> str:
    folder = tmp_path / "govreport"
    folder.mkdir()
    ids = np.ones((8, length), dtype=np.int64)
    for split in ("train", "validation"):
        data.write_split(str(folder / f"{split}-00000-of-00001.parquet"), ids, ids, ids)
    return str(folder)


def test_pre_launch_errors_name_the_field(tmp_path):
    cfg = config(tmp_path)
    assert error_field(cfg, model__lora__rank=0) == "model.lora.rank"
    assert error_field(cfg, model__lora__rank=33) == "model.lora.rank"  # smoke dim is 32
    assert error_field(cfg, model__lora__target_modules=["qkv_proj", "q_proj"]) == \
        "model.lora.target_modules"
    assert error_field(cfg, model__lora__alpha=0.0) == "model.lora.alpha"
    assert error_field(cfg, model__lora__dropout=1.0) == "model.lora.dropout"
    assert error_field(cfg, model__base_checkpoint=f"{tmp_path}/missing") == \
        "model.base_checkpoint"
    assert error_field(cfg, model__base_checkpoint=other_architecture(tmp_path)) == \
        "model.base_checkpoint"
    assert error_field(cfg, model__scale="full") == "model.base_checkpoint"
    assert error_field(cfg, parallel__tp=2) == "parallel.tp"
    real = config(tmp_path, "dataset=govreport", f"dataset.path={packed_dataset(tmp_path, 16)}")
    assert error_field(real) == "model.smoke.seq_len"  # the data is packed to 16 < 32


def test_full_scale_refuses_what_does_not_fit(tmp_path):
    """8 x H100 at 8k context: fits with recompute (the reference's choice), not without."""
    cfg = config(tmp_path, "model.scale=full", "parallel.dp_shard=8", "+gpu=h100",
                 "dataset.validation_sequences=173", f"model.base_checkpoint={tmp_path}")
    assert error_field(cfg, model__recompute=False) == "gpu.memory_gib"


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("smoke")
    cfg = config(tmp)
    w = ready(cfg, RankContext())
    before = {n: p.detach().clone() for n, p in w.model.named_parameters()}
    result = train_steps(w, 6, warmup=0)
    return w, before, result


def test_smoke_run_trains_only_the_adapters(smoke_run):
    w, before, result = smoke_run
    m = w.inputs.measurements
    assert m["trainable_parameters"] == sum(p.numel() for p in w.params)
    assert m["trainable_parameters"] + m["base_parameters"] == m["model_parameters"]
    for name, p in w.model.named_parameters():
        changed = not torch.equal(p, before[name])
        assert changed == ("lora_B" in name or "lora_A" in name), name
    assert m["base_eval_loss"] > w.quality().best_reachable
    assert np.isfinite(result["losses"]).all()


def test_adapters_only_checkpoint_is_small_and_resumes(tmp_path):
    """Adapters + optimizer state only (default) vs everything; both resume to the same
    losses as training straight through (dropout off: no random state to carry)."""
    ctx = RankContext()
    sizes = {}
    for adapters_only in (True, False):
        cfg = config(tmp_path, "model.lora.dropout=0.0",
                     f"model.checkpoint_adapters_only={adapters_only}")
        path = str(tmp_path / f"ckpt_{adapters_only}")
        straight = save_then_continue(path, 3, cfg, ctx, 6)
        resumed = load_and_continue(path, 3, cfg, ctx, 6)
        np.testing.assert_allclose(resumed["losses"], straight["losses"][3:], rtol=1e-5)
        sizes[adapters_only] = straight["write_bytes"]
    # The full checkpoint adds the frozen base (fp32 at smoke scale) to the same adapter state.
    base_bytes = 4 * ready(config(tmp_path), ctx).inputs.measurements["base_parameters"]
    assert sizes[False] - sizes[True] >= base_bytes


def test_fsdp2_over_the_frozen_base_matches_one_process(tmp_path):
    one = run_layout([*SMOKE, "model.lora.dropout=0.0"], str(tmp_path / "one"), 4)
    two = run_layout([*SMOKE, "model.lora.dropout=0.0", "parallel=fsdp2"],
                     str(tmp_path / "two"), 4)
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=2e-4)


def test_plan_counts_match_the_built_model(smoke_run):
    from pinchpoint.workloads.llama2_70b_lora.plan import parameter_counts
    w, _, _ = smoke_run
    a, lora = w.arch, w.cfg_model.lora
    counts = parameter_counts(a, lora.rank, lora.target_modules)
    assert counts["adapters"] == w.inputs.measurements["trainable_parameters"]
    assert counts["base"] == w.inputs.measurements["base_parameters"]
    json.dumps(counts)


def test_decoder_workloads_adapt_the_shared_step_through_public_hooks_only():
    """No registered decoder-LLM workload (LoRA included) overrides a private method of the
    shared step: what differs goes through its documented hooks."""
    from pinchpoint.workloads.common.llm import DecoderLLMWorkload
    from pinchpoint.workloads.registry import workload_class, workload_names
    private = {n for n, v in vars(DecoderLLMWorkload).items()
               if n.startswith("_") and not n.startswith("__") and callable(v)}
    decoders = [c for c in map(workload_class, workload_names())
                if issubclass(c, DecoderLLMWorkload)]
    assert any(c.__name__ == "Llama2LoraWorkload" for c in decoders)
    for cls in decoders:
        overridden = {n for k in cls.__mro__[:cls.__mro__.index(DecoderLLMWorkload)]
                      for n in vars(k)} & private
        assert not overridden, (cls.__name__, overridden)
