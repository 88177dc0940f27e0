"""Llama 3.1 8B and 405B (MLPerf small and large LLM pretraining)."""
from pinchpoint.workloads.llama31.config import LlamaModelConfig
from pinchpoint.plan.rules import EvalSkip, MLPerfRules
from pinchpoint.workloads.registry import WorkloadSpec, register

# 405B skips floor(0.0026 x GBS + 12) evaluations at the start of a run, the reference's rule
# (github.com/mlcommons/training, large_language_model_pretraining/nemo); was
# plan/time_to_train.py's EVALS_SKIPPED, and absent from the runtime.
RULES = {"llama31_8b": MLPerfRules(benchmark="llama31_8b"),
         "llama31_405b": MLPerfRules(benchmark="llama31_405b", eval_skip=EvalSkip(0.0026, 12))}

SMOKE = ("model.scale=smoke", "dataset.train_tokens=40000", "dataset.validation_tokens=4000",
         "dataset.target_margin=3.0")

# Across 2 nodes: 8B as HSDP (shard inside a node, replicate across), 405B as TP inside a node
# with FSDP across.
for _name, _cls, _layout in (
        ("llama31_8b", "Llama31_8B", ("parallel=hsdp2x2",)),
        ("llama31_405b", "Llama31_405B", ("parallel=tp2", "parallel.dp_shard=2"))):
    register(WorkloadSpec(name=_name, workload=f"pinchpoint.workloads.llama31.workload:{_cls}",
                          planner="pinchpoint.workloads.llama31.plan:plan_run",
                          model_schema=LlamaModelConfig, schema_name="llama31",
                          smoke=SMOKE, multi_node_layout=_layout,
                          rules=RULES[_name]))
