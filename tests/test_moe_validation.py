"""Bad MoE configs fail before launch with the field, the value and what would work; the
planner refuses a full-scale point that does not fit and prints both GPT-OSS vocabularies."""
from __future__ import annotations

import pytest

from conftest import compose
from pinchpoint.errors import ConfigError
from pinchpoint.runner.validation import validate

GPT = ["model=gpt_oss_20b"]
DS = ["model=deepseek_v3_671b"]


@pytest.mark.parametrize("overrides,field,says", [
    (GPT + ["parallel=ep2", "model.proxy.num_experts=3", "model.proxy.top_k=2"],
     "parallel.ep", "divisor of model.proxy.num_experts=3"),
    (GPT + ["model.proxy.top_k=9"], "model.proxy.top_k", "at most num_experts=8"),
    (DS + ["model.proxy.num_groups=3"], "model.proxy.num_groups", "divisor of num_experts=16"),
    (DS + ["model.proxy.top_groups=5"], "model.proxy.top_groups", "between 1 and num_groups=4"),
    (DS + ["model.proxy.top_k=9"], "model.proxy.top_k", "top_groups x experts per group"),
    (GPT + ["model.proxy.capacity_factor=0"], "model.proxy.capacity_factor", "factor > 0"),
    (GPT + ["parallel=ep2", "parallel.world_size=4"], "parallel.world_size",
     "product of the degrees"),
    (GPT + ["parallel=pp2", "parallel.ep=2"], "parallel.ep", "divisor of world_size / pp = 1"),
    (GPT + ["parallel=fsdp2", "parallel.ep=4", "parallel.world_size=4", "parallel.dp_shard=-1",
            "parallel.tp=2"], "parallel.ep", "divisor of the data-parallel degree"),
    (DS + ["model.proxy.q_lora_rank=64"], "model.proxy.q_lora_rank", "dim - 1 = 63"),
    (DS + ["model.proxy.kv_lora_rank=0"], "model.proxy.kv_lora_rank", "between 1 and dim - 1"),
    (GPT + ["model.proxy.sliding_window=0"], "model.proxy.sliding_window", "look"),
    (["model=llama31_8b", "parallel=ep2"], "parallel.ep", "a dense model"),
    # tensor parallelism splits whole heads, the dense SwiGLU, the vocabulary and (sequence
    # parallel) the sequence; the message lists the degrees that would work
    (GPT + ["parallel=tp2", "model.proxy.n_kv_heads=1"], "parallel.tp",
     "divisor of model.proxy.n_kv_heads=1 (each rank takes whole key/value heads); one that "
     "divides every width tensor parallelism splits: 1"),
    (GPT + ["parallel=tp2", "model.proxy.n_heads=3", "model.proxy.n_kv_heads=1"], "parallel.tp",
     "divisor of model.proxy.n_heads=3"),
    (GPT + ["parallel=tp2", "model.proxy.vocab_size=255"], "parallel.tp", "vocab_size=255"),
    (GPT + ["parallel=tp2", "model.proxy.seq_len=127"], "parallel.tp",
     "divisor of seq_len=127"),
    (DS + ["parallel=tp2", "model.proxy.n_heads=3"], "parallel.tp",
     "divisor of model.proxy.n_heads=3 (each rank takes whole attention heads)"),
    (DS + ["parallel=tp2", "model.proxy.dense_ffn_dim=191"], "parallel.tp",
     "dense_ffn_dim=191"),
    (DS + ["model.scale=full", "plan_only=true", "parallel.tp=3"], "parallel.tp",
     "1, 2, 4, 8, 16, 32, 64, 128"),
    (DS + ["model.proxy.n_dense_layers=3"], "model.proxy.n_dense_layers", "at least one MoE"),
    (GPT + ["model.proxy.rope_scaling=ntk"], "model.proxy.rope_scaling", "one of none, yarn"),
    (GPT + ["model.proxy.rope_scaling=yarn", "model.proxy.yarn.factor=0.5"],
     "model.proxy.yarn.factor", "stretch >= 1"),
    (DS + ["model.proxy.yarn.beta_fast=0.5"], "model.proxy.yarn.beta_fast",
     "more turns than beta_slow=1.0"),
])
def test_bad_inputs_name_the_field(out, overrides, field, says):
    with pytest.raises(ConfigError) as err:
        validate(compose(overrides, out))
    assert err.value.field == field, err.value
    assert says in str(err.value)


def test_good_layouts_validate(out):
    for overrides in (GPT, GPT + ["parallel=ep2"], GPT + ["parallel=fsdp2", "parallel.ep=2"],
                      DS + ["parallel=ep4"], GPT + ["model.scale=smoke", "parallel=ep4"],
                      GPT + ["parallel=tp2"], DS + ["parallel=tp2pp2"],
                      DS + ["parallel=fsdp2", "parallel.tp=2", "parallel.ep=2"],
                      # no dense layer: its width is not split
                      DS + ["parallel=tp2", "model.proxy.n_dense_layers=0",
                            "model.proxy.dense_ffn_dim=191"]):
        validate(compose(overrides, out))


def test_full_scale_reference_layouts_plan_and_fit(out):
    from pinchpoint.workloads import plan_point
    cfg = validate(compose(GPT + ["model.scale=full", "plan_only=true", "parallel.dp_shard=8",
                                  "parallel.ep=8"], out))
    p = plan_point(cfg)
    assert p.details["vocabulary"]["used"] == 128256 and p.memory_needed_gib > 0
    assert p.details["vocabulary"]["published"] == 201088
    assert p.details["communication_per_step"]["all_to_all_dispatch"]["bytes"] > 0
    # eval_samples: the shared rule wants whole pipeline eval batches (dp x micro x
    # accumulation = 15360 here); the reference's 1024 does not change the plan.
    cfg = validate(compose(DS + ["model.scale=full", "plan_only=true", "parallel.pp=4",
                                 "parallel.dp_shard=64", "parallel.ep=64",
                                 "model.full.eval_samples=15360"], out))
    p = plan_point(cfg)
    assert 670e9 < p.parameters["total"] < 672e9
    assert p.details["memory_per_device"]["worst_stage"]["expert_parameters_per_device"] > 0


def test_full_scale_that_does_not_fit_is_refused_with_the_memory_it_needs(out):
    with pytest.raises(ConfigError) as err:
        validate(compose(DS + ["model.scale=full", "parallel.dp_shard=8", "parallel.ep=8"], out))
    assert err.value.field == "gpu.memory_gib"
    assert "GiB per device" in str(err.value)


def test_the_published_deepseek_layout_plans_as_published():
    """TP1 PP4 EP64 on 256 GPUs with the reference's 1,024 eval samples: a plan runs no
    evaluation, so how this runner batches it under pipelining (whole schedules of 240
    micro-batches per rank) must not refuse it."""
    cfg = compose(["model=deepseek_v3_671b", "model.scale=full", "+gpu=h200",
                   "parallel.dp_shard=64", "parallel.ep=64", "parallel.pp=4", "plan_only=true"])
    assert validate(cfg).model.full.eval_samples == 1024
    with pytest.raises(ConfigError, match="model.full.eval_samples"):   # a run would batch it
        validate(compose(["model=deepseek_v3_671b", "model.scale=full", "+gpu=h200",
                          "parallel.dp_shard=64", "parallel.ep=64", "parallel.pp=4",
                          "model.full.n_layers=4"]))
