"""train.compile=true: each transformer block compiled (torchtitan's way: after TP, before FSDP2)
for the dense LLMs and FLUX.1, through inductor on this CPU; refused, naming the field, where it
cannot run (DLRM has no blocks, MoE routing has data-dependent shapes, TP fails in backward on
this torch). FSDP2's collectives stay outside the compiled blocks: the trace counts them all."""
from __future__ import annotations

import json

import pytest

import harness
from conftest import compose, train
from pinchpoint.errors import ConfigError
from pinchpoint.runner.validation import validate

LLAMA = ["model=llama31_8b", "model.scale=smoke", "tracking.enabled=false",
         "tracking.system_metrics=false"]


@pytest.mark.parametrize("overrides, why", [
    (["train.compile=true"], "dlrm_dcnv2"),
    (["model=gpt_oss_20b", "model.scale=smoke", "train.compile=true"], "gpt_oss_20b"),
    (["model=deepseek_v3_671b", "model.scale=smoke", "train.compile=true"],
     "deepseek_v3_671b"),
    ([*LLAMA, "parallel=tp2", "train.compile=true"], "parallel.tp=2"),
])
def test_refused_where_blocks_are_not_compiled(tmp_path, overrides, why):
    with pytest.raises(ConfigError) as err:
        validate(compose(overrides, tmp_path))
    assert err.value.field == "train.compile" and why in str(err.value)
    if not why.startswith("parallel."):
        assert "llama31_8b, llama2_70b_lora and flux1" in str(err.value)


@pytest.mark.parametrize("overrides", [
    [*LLAMA, "train.compile=true"], [*LLAMA, "parallel=fsdp2", "train.compile=true"],
    ["model=flux1", "model.scale=smoke", "train.compile=true"],
    ["model=llama2_70b_lora", "model.scale=smoke", "train.compile=true"]])
def test_accepted_where_blocks_are_compiled(tmp_path, overrides):
    validate(compose(overrides, tmp_path))


def _compiled_steps(cfg, ctx, steps):
    import torch
    from torch._dynamo.eval_frame import OptimizedModule
    from torch._dynamo.utils import counters
    counters.clear()
    w = harness.ready(cfg, ctx)
    blocks = list(w.model.layers.values())
    out = harness.train_steps(w, steps, warmup=0)
    out["compiled_blocks"] = sum(isinstance(b, OptimizedModule) for b in blocks)
    out["blocks"] = len(blocks)
    out["graphs"] = counters["stats"]["unique_graphs"]
    out["eager_fallbacks"] = sum(counters["recompiles_limit"].values()) \
        if "recompiles_limit" in counters else 0
    torch._dynamo.reset()
    return out


def test_llama_blocks_compile_and_train_as_eager(tmp_path):
    """One process: every block an OptimizedModule, one graph for all of them (parameters are
    graph inputs), the same losses as eager to float tolerance."""
    root = str(tmp_path)
    eager = harness.run_layout(LLAMA, root, 2)["losses"]
    compiled = harness.run_layout([*LLAMA, "train.compile=true"], root, 2, _compiled_steps)
    assert compiled["compiled_blocks"] == compiled["blocks"] > 1
    assert 1 <= compiled["graphs"] < compiled["blocks"] * 2, compiled
    assert compiled["eager_fallbacks"] == 0
    assert compiled["losses"] == pytest.approx(eager, abs=1e-4)


@pytest.mark.slow
def test_fsdp2_collectives_outside_compiled_blocks_are_all_counted(tmp_path):
    """Compiled per block before fully_shard, FSDP2's all-gathers and reduce-scatters run in
    its hooks, outside the graphs: the trace counts the same calls and bytes as eager."""
    counts = {}
    for compiled in ("false", "true"):
        out = tmp_path / compiled
        train([*LLAMA, "parallel=fsdp2", "train.max_steps=2", f"train.compile={compiled}"],
              out, timeout=600)
        summary = json.loads(next((out / "runs").glob("*/phase_summary.json")).read_text())
        counts[compiled] = {k: v for k, v in summary.items() if k.startswith("comm_") and
                            k.endswith(("_calls_per_step", "_bytes_per_step"))}
    assert counts["true"] == counts["false"]
    assert counts["true"]["comm_all_gather_calls_per_step"] > 0
    assert counts["true"]["comm_reduce_scatter_calls_per_step"] > 0


@pytest.mark.full
def test_flux_blocks_compile(tmp_path):
    def body(cfg, ctx, steps):
        from torch._dynamo.eval_frame import OptimizedModule
        w = harness.ready(cfg, ctx)
        blocks = [*w.model.double_blocks, *w.model.single_blocks]
        out = harness.train_steps(w, steps, warmup=0)
        out["compiled"] = all(isinstance(b, OptimizedModule) for b in blocks)
        return out
    flux = ["model=flux1", "model.scale=smoke", "tracking.enabled=false"]
    eager = harness.run_layout(flux, str(tmp_path), 2)["losses"]
    compiled = harness.run_layout([*flux, "train.compile=true"], str(tmp_path), 2, body)
    assert compiled["compiled"]
    assert compiled["losses"] == pytest.approx(eager, rel=1e-3)
