"""Llama 2 70B LoRA (MLPerf Training llama2_70b_lora): parameter-efficient fine-tuning of a
frozen pretrained base on GovReport-format parquet."""
from pinchpoint.workloads.llama2_70b_lora.config import (GovReportDatasetConfig,
                                                         Llama2LoraModelConfig)
from pinchpoint.plan.rules import EvalSkip, MLPerfRules
from pinchpoint.workloads.registry import WorkloadSpec, register

# The reference's eval_delay: the first evaluation at floor(0.125 x GBS + 2) eval intervals (it
# runs; the ones before are skipped: at GBS 8 the first at step 144, eval every 48 steps). Was
# the workload's Sizes.first_eval_step, and absent from the planner.
# The reference fine-tunes through accelerate + DeepSpeed ZeRO-3 (per-layer parameter gathers:
# planned as fsdp2); NeMo submissions replicate the frozen base (plan.stack=megatron).
RULES = MLPerfRules(benchmark="llama2_70b_lora", eval_skip=EvalSkip(0.125, 2, offset=1),
                    reference_stack="fsdp2")

register(WorkloadSpec(
    name="llama2_70b_lora",
    workload="pinchpoint.workloads.llama2_70b_lora.workload:Llama2LoraWorkload",
    planner="pinchpoint.workloads.llama2_70b_lora.plan:describe",
    rules=RULES, model_schema=Llama2LoraModelConfig, datasets={"govreport": GovReportDatasetConfig},
    smoke=("model.scale=smoke", "dataset.train_sequences=64", "dataset.validation_sequences=8",
           "dataset.target_margin=3.0", "model.base_pretrain.sequences=64",
           "model.base_pretrain.seq_len=32"),
    two_rank_layout="parallel=fsdp2",
    multi_node_layout=("parallel=hsdp2x2", "model.smoke.global_batch_size=8")))
