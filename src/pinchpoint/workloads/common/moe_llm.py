"""The decoder-LLM workload with mixture-of-experts layers: the shared step of
``DecoderLLMWorkload`` plus expert parallelism, the balancing loss, the expert-bias rule and
router statistics. GPT-OSS and DeepSeek V3 subclass it with their model.

Expert parallelism (``parallel.ep``) borrows the data-parallel ranks: each group of ``ep``
consecutive data-parallel ranks (same pipeline stage, cp and tp coordinates) splits every MoE
layer's experts, tokens travel with all-to-all (pinchpoint.parallel.expert). FSDP/HSDP shards
and averages everything else; expert weights are left out of it (``ignored_params``) and get
their data-parallel mean from ``scale_expert_gradients`` instead; the gradient-norm clip adds
the expert shards' squares over the EP group.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from pinchpoint.parallel.clip import squared_grad_norm
from pinchpoint.parallel.expert import (apply_expert_parallel, expert_parameters,
                                        scale_expert_gradients, shard_expert_state,
                                        unshard_expert_state)
from pinchpoint.workloads.common import moe, moe_tp
from pinchpoint.workloads.common.llm import DecoderLLMWorkload


def data_parallel_groups(dims) -> dict[str, Any]:
    """This rank's process groups over its data-parallel peers (same pp, cp, tp): all of them
    ("dp"), its expert-parallel group ("ep": ``ep`` consecutive dp ranks, or every (dp/ep)-th
    under ``parallel.placement.ep=across``) and the ranks that hold the same experts
    ("replica": the same position in every ep group). Every rank creates every group in the
    same order, as torch.distributed requires."""
    from pinchpoint.parallel.placement import dp_rows, ep_groups

    me = dist.get_rank()
    layout = dims.layout()   # the world mesh's rank grid (ParallelDims.build_mesh uses it too)
    out: dict[str, Any] = {}
    for row in dp_rows(layout.grid):
        blocks = ep_groups(row, dims.ep, layout.placement["ep"])
        replicas = [list(r) for r in zip(*blocks)]
        for kind, groups in (("dp", [row]), ("ep", blocks), ("replica", replicas)):
            for ranks in groups:
                group = dist.new_group(ranks)
                if me in ranks:
                    out[kind] = group
    return out


class MoEDecoderWorkload(DecoderLLMWorkload):
    # Routing has data-dependent shapes (tokens per expert, all-to-all splits) and Python-side
    # statistics: no full graph per block; runner/validation.py refuses train.compile.
    compiles_blocks = False

    def __init__(self, inputs):
        super().__init__(inputs)
        self.expert_parallel = None
        self.groups: dict[str, Any] = {}
        self._router_sums: dict[str, float] = {}
        self._router_steps = 0

    # --- what a MoE model provides ---------------------------------------------------------------
    def shape(self):
        """The planner's MoEShape for this scale (parameter counts without allocating)."""
        raise NotImplementedError

    @property
    def aux_loss_coeff(self) -> float:
        return self.arch.aux_loss_coeff

    @property
    def bias_update_rate(self) -> float:
        return 0.0

    # --- layout ------------------------------------------------------------------------------------
    def build(self) -> None:
        super().build()
        counts = self.shape().counts()
        self.inputs.measurements.update({"total_parameters": counts["total"],
                                         "active_parameters": counts["active"]})
        # The balancing loss's gradient per micro-batch, divided as the LM loss's is: by the
        # step's micro-batches, or under pipelining by the schedule (it scales the gradients).
        micro = 1 if self.layout.schedule is not None else self.grad_accumulation
        for layer in moe.moe_layers(self.model):
            layer.aux_loss_scale = self.aux_loss_coeff / micro

    def before_sharding(self, stage: nn.Module) -> set:
        """Split the experts over the EP group (before FSDP2) and keep FSDP off them."""
        self.groups = data_parallel_groups(self.dims)
        if self.dims.ep == 1:
            return set()
        self.expert_parallel = apply_expert_parallel(moe.moe_layers(stage), self.groups["ep"],
                                                     self.inputs.collectives)
        return set(expert_parameters(moe.moe_layers(stage)))

    # --- the step ----------------------------------------------------------------------------------
    def clip_gradients(self, max_norm: float) -> float:
        # MoE layers ran on TP sequence shards: their gradients are partial until summed.
        if self.dims.tp > 1:
            moe_tp.sum_gradients_over_tp(self.model, self.inputs.collectives,
                                         self.layout.mesh["tp"].get_group())
        if self.expert_parallel is not None:
            scale_expert_gradients(moe.moe_layers(self.model), self.dims.dp,
                                   self.inputs.collectives, self.groups.get("replica"))
        elif self.dims.tp == 1:
            return super().clip_gradients(max_norm)
        return self._clip_with_experts(max_norm)

    def _clip_with_experts(self, max_norm: float) -> float:
        """Global gradient norm = the rest (DTensors reduced over their meshes; plain MoE and
        MLA gradients are equal on every TP rank, counted once) + expert shards summed over the
        EP group (+ pipeline stages), then every gradient scaled."""
        experts = {id(p) for p in expert_parameters(moe.moe_layers(self.model))} \
            if self.expert_parallel is not None else set()
        grads = [p.grad for p in self.params if p.grad is not None and id(p) not in experts]
        own = [p.grad for p in self.params if p.grad is not None and id(p) in experts]
        square = squared_grad_norm(grads, self.ctx.device)
        if self.expert_parallel is not None:
            sparse = torch.nn.utils.get_total_norm(own, 2.0) ** 2 if own else torch.zeros(())
            square = square + self.inputs.collectives.all_reduce(
                sparse.to(square.device).float().clone(), group=self.groups["ep"])
        if self.layout.pp_group is not None:
            self.inputs.collectives.all_reduce(square, group=self.layout.pp_group)
        norm = float(square.sqrt())
        coef = min(1.0, max_norm / (norm + 1e-6))
        if coef < 1.0:
            for g in grads + own:
                g.mul_(coef)
        return norm

    def after_step(self) -> None:
        counts = moe.step_counts(self.model).to(self.ctx.device)
        if self.bias_update_rate and counts.numel():
            if self.ctx.distributed and self.dims.dp > 1:
                self.inputs.collectives.all_reduce(counts, group=self.groups["dp"])
            moe.update_expert_bias(self.model, self.bias_update_rate, list(counts))
        self._record_router(counts)
        moe.reset_step_counts(self.model)

    def _record_router(self, counts: torch.Tensor) -> None:
        stats = moe.router_summary(self.model, counts if counts.numel() else None)
        if not stats:
            return
        self._router_steps += 1
        meas = self.inputs.measurements
        for key, value in stats.items():
            self._router_sums[key] = self._router_sums.get(key, 0.0) + value
            meas[key] = self._router_sums[key] / self._router_steps     # mean over steps
            meas[f"{key}_last"] = value
        meas["moe_load_imbalance_max"] = max(meas.get("moe_load_imbalance_max", 0.0),
                                             stats["moe_load_imbalance"])
        if self.expert_parallel is not None:
            meas["moe_all_to_all_offrank_bytes_per_step"] = \
                self.expert_parallel.offrank_bytes / max(self.step, 1)

    def extra_hyperparameters(self) -> dict[str, Any]:
        return {"expert_parallelism": self.dims.ep,
                "moe_aux_loss_coeff": self.aux_loss_coeff}

    def state_dict(self) -> dict[str, Any]:
        """The shared LLM state; with EP, expert weights and moments are saved as the global
        (experts, ...) tensors they are slices of, so any EP degree (or none) can resume."""
        state = super().state_dict()
        if self.expert_parallel is not None:
            shard_expert_state(state, self.expert_parallel)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(unshard_expert_state(state))
