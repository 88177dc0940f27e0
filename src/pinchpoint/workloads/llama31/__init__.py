"""Llama 3.1 8B and 405B (MLPerf small and large LLM pretraining)."""
from pinchpoint.workloads.llama31.config import LlamaModelConfig
from pinchpoint.workloads.registry import WorkloadSpec, register

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
                          smoke=SMOKE, multi_node_layout=_layout))
