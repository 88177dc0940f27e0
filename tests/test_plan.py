"""The pre-flight planner on the real configs: published parameter counts, memory refusal,
the plan_only JSON, memory model against the proxy's measured peak."""
from __future__ import annotations

import json

import pytest

from conftest import compose, train
from pinchpoint.errors import ConfigError
from pinchpoint.plan.llm import Layout
from pinchpoint.plan.memory import activation_bytes_per_layer, memory_per_device
from pinchpoint.workloads.llama31 import plan
from pinchpoint.runner.validation import validate

REFERENCE_405B = ["model=llama31_405b", "model.scale=full", "parallel.tp=8", "parallel.pp=9",
                  "parallel.dp_shard=2"]


def test_published_parameter_counts(out):
    eight = compose(["model=llama31_8b", "model.scale=full"], out)
    assert plan.parameter_counts(eight.model.full)["total"] == 8_030_261_248      # 8.03 B
    big = compose(["model=llama31_405b", "model.scale=full", "model.full.vocab_size=128256"],
                  out)
    assert round(plan.parameter_counts(big.model.full)["total"] / 1e9, 1) == 405.9
    mlperf = compose(["model=llama31_405b", "model.scale=full"], out)      # 32000-token vocab
    assert plan.parameter_counts(mlperf.model.full)["total"] < 405.9e9


def test_plan_only_prints_the_plan(out):
    proc = train([*REFERENCE_405B, "plan_only=true", "+gpu=h100"], out, timeout=120)
    p = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert p["gpu"] == "H100" and p["world_size"] == 144
    # 1F1B: the first of 9 stages holds 9 micro-batches (576 per step) in flight
    assert p["details"]["memory_per_device"]["worst_stage"]["micro_batches_in_flight"] == 9
    assert p["details"]["layers_per_chunk"] == [14] * 9
    assert p["fits"] and p["terms_s"]["compute"] > 0 and p["terms_s"]["bubble"] > 0
    assert p["time_to_train"]["total_s"] > p["time_to_train"]["train_s"] > 0


def test_a_layout_that_does_not_fit_is_refused_with_the_memory_it_needs(out):
    cfg = compose(["model=llama31_405b", "model.scale=full", "parallel.tp=8"], out)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert err.value.field == "gpu.memory_gib"
    need = plan.plan_run(cfg).memory_needed_gib
    assert f"at least {need + cfg.gpu.reserved_gib:.1f} GiB" in str(err.value)
    assert need > 5 * cfg.gpu.memory_gib   # 405 B parameters over 8 devices
    validate(compose(REFERENCE_405B, out))   # the reference layout passes (H200 default)


def test_memory_shrinks_with_each_degree_and_recompute(out):
    base = compose(["model=llama31_8b", "model.scale=full"], out)
    a = base.model.full

    def need(**kw):
        lay = Layout(**{"micro_batch": 2, "global_batch": 32, "seq_len": 8192, **kw})
        return memory_per_device(a, lay)["worst_stage"]["total_bytes"]
    one = need()
    assert need(dp_shard=8) < one and need(tp=4) < one and need(pp=4, global_batch=64) < one
    assert need(recompute=True) < one - 50 * 2**30   # recompute drops >50 GiB of activations
    # activations scale with micro-batch and sequence length
    lay = Layout(micro_batch=1, seq_len=4096)
    lay2 = Layout(micro_batch=2, seq_len=4096)
    assert activation_bytes_per_layer(a, lay2) == 2 * activation_bytes_per_layer(a, lay)


def test_memory_model_against_the_proxys_measured_peak(out):
    """Tensor accounting is a lower bound of the CPU peak: measured (benchmarks/
    llama_memory_model.py) it is 15-45 % under, the rest being autograd transients and
    allocator slack. Stated error: modelled within -50 % .. 0 % of measured."""
    from memory_probe import measure_peak_memory
    r = measure_peak_memory(["model=llama31_8b", "tracking.enabled=false",
                             "model.proxy.seq_len=512", "model.proxy.micro_batch_size=8",
                             "model.proxy.global_batch_size=8", "model.proxy.eval_samples=64",
                             "model.proxy.eval_every_samples=800",
                             "dataset.train_tokens=300000", "dataset.validation_tokens=40000"],
                            str(out))
    assert -0.5 < r["error"] < 0.0, r


def test_a_plan_only_sweep_is_planned_in_the_sweeper_not_launched(out):
    """-m plan_only=true: every point planned in the sweep's own process (one table and CSV),
    a point that does not fit marked, not fatal; no job is launched, nothing goes to MLflow."""
    import csv

    from conftest import mlflow_client
    proc = train(["-m", "plan_only=true", "model=llama31_405b", "model.scale=full", "+gpu=gb200",
                  "parallel.dp_shard=8", "parallel.tp=1,8", "parallel.pp=4,8"], out,
                 timeout=180)
    assert "4 points planned: 3 fit, 1 do not fit, 0 invalid" in proc.stdout
    assert "Launching" not in proc.stdout + proc.stderr
    (table,) = out.glob("sweeps/*/plan.csv")
    rows = list(csv.DictReader(table.open()))
    assert {(r["parallel.tp"], r["parallel.pp"]) for r in rows} == {
        ("1", "4"), ("1", "8"), ("8", "4"), ("8", "8")}
    assert [r["fits"] for r in rows].count("False") == 1
    client = mlflow_client(out)
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []
