"""Llama 3.1 (8B / 405B) behind the Workload protocol: the shared decoder-LLM step with the
Llama model and its tensor-parallel plan."""
from __future__ import annotations


from torch import nn

from pinchpoint.workloads.common.llm import DecoderLLMWorkload
from pinchpoint.workloads.llama31 import validation
from pinchpoint.workloads.llama31.model import Llama, LlamaArgs
from pinchpoint.workloads.llama31.parallelize import apply_tp


def llama_args(arch) -> LlamaArgs:
    return LlamaArgs(dim=arch.dim, n_layers=arch.n_layers, n_heads=arch.n_heads,
                     n_kv_heads=arch.n_kv_heads, ffn_dim=arch.ffn_dim, vocab_size=arch.vocab_size,
                     max_seq_len=arch.max_seq_len, rope_theta=arch.rope_theta)


class LlamaWorkload(DecoderLLMWorkload):
    @classmethod
    def validate(cls, run) -> None:
        validation.validate(run)

    def build_model(self) -> nn.Module:
        return Llama(llama_args(self.arch))

    def apply_tensor_parallel(self, stage: nn.Module, tp_mesh) -> None:
        apply_tp(stage, tp_mesh)


class Llama31_8B(LlamaWorkload):
    pass


class Llama31_405B(LlamaWorkload):
    pass
