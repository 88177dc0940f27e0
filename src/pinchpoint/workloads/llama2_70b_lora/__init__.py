"""Llama 2 70B LoRA (MLPerf Training llama2_70b_lora): parameter-efficient fine-tuning of a
frozen pretrained base on GovReport-format parquet."""
from pinchpoint.workloads.llama2_70b_lora.config import (GovReportDatasetConfig,
                                                         Llama2LoraModelConfig)
from pinchpoint.workloads.registry import WorkloadSpec, register

register(WorkloadSpec(
    name="llama2_70b_lora",
    workload="pinchpoint.workloads.llama2_70b_lora.workload:Llama2LoraWorkload",
    planner="pinchpoint.workloads.llama2_70b_lora.plan:describe",
    model_schema=Llama2LoraModelConfig, datasets={"govreport": GovReportDatasetConfig},
    smoke=("model.scale=smoke", "dataset.train_sequences=64", "dataset.validation_sequences=8",
           "dataset.target_margin=3.0", "model.base_pretrain.sequences=64",
           "model.base_pretrain.seq_len=32"),
    two_rank_layout="parallel=fsdp2",
    multi_node_layout=("parallel=hsdp2x2", "model.smoke.global_batch_size=8")))
