"""``train.compile=true``: each block compiled on its own, as torchtitan's ``apply_compile``
does -- ``torch.compile(block, fullgraph=True)`` put back in place of the block, after tensor
parallelism (and the model's activation checkpointing flag) and before FSDP2, so that
``fully_shard`` wraps the compiled block: FSDP2's all-gathers and reduce-scatters run in its
hooks, outside the compiled graph, where the collective trace sees them; tensor parallelism's
DTensor collectives run inside it, where the trace does not (parallel/comm_trace.py).

Blocks of one model share one compiled graph (parameters are graph inputs, torch's default
``inline_inbuilt_nn_modules``), so a model compiles once per block type and grad mode (training;
evaluation under no_grad compiles again). Inductor is the backend: on CPU it needs a C++
compiler (g++), on CUDA Triton.
"""
from __future__ import annotations

from torch import nn


def compile_blocks(*containers: nn.Module) -> int:
    """Replace every child of each container (an nn.ModuleDict or nn.ModuleList of blocks) by
    its compiled self; returns how many blocks were compiled. Parameter names gain no prefix in
    distributed checkpoints (``get_state_dict`` drops torch.compile's ``_orig_mod``)."""
    import torch
    count = 0
    for blocks in containers:
        for name, block in list(blocks.named_children()):
            blocks.register_module(name, torch.compile(block, fullgraph=True))
            count += 1
    return count
