"""Llama 3.1 8B and 405B (MLPerf small and large LLM pretraining)."""
from pinchpoint.workloads.llama31.config import LlamaModelConfig
from pinchpoint.workloads.registry import WorkloadSpec, register

SMOKE = ("model.scale=smoke", "dataset.train_tokens=40000", "dataset.validation_tokens=4000",
         "dataset.target_margin=3.0")

for _name, _cls in (("llama31_8b", "Llama31_8B"), ("llama31_405b", "Llama31_405B")):
    register(WorkloadSpec(name=_name, workload=f"pinchpoint.workloads.llama31.workload:{_cls}",
                          model_schema=LlamaModelConfig, schema_name="llama31",
                          smoke=SMOKE))
