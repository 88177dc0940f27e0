"""Layers shared by several workloads (the decoder-LLM training step, its config schemas)."""
from pinchpoint.workloads.common.config import MegatronDatasetConfig
from pinchpoint.workloads.registry import register_dataset

register_dataset("megatron", MegatronDatasetConfig)
