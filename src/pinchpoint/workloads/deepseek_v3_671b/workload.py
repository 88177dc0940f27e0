"""DeepSeek V3 671B behind the Workload protocol: the shared MoE decoder step with the
DeepSeek V3 model (MLA, group-limited sigmoid routing, shared expert, sequence-wise balancing
loss, expert-bias updates); validation and the full-scale plan."""
from __future__ import annotations


from torch import nn

from pinchpoint.errors import require
from pinchpoint.workloads.common.moe_llm import MoEDecoderWorkload
from pinchpoint.workloads.common.moe_validation import validate_moe
from pinchpoint.workloads.deepseek_v3_671b import plan
from pinchpoint.workloads.deepseek_v3_671b.model import DeepSeekArgs, DeepSeekV3
from pinchpoint.workloads.deepseek_v3_671b.parallelize import apply_tp


class DeepSeekV3_671B(MoEDecoderWorkload):

    @classmethod
    def validate(cls, run) -> None:
        validate_moe(run, _validate_architecture, plan.shape, _tp_splits)

    def shape(self):
        return plan.shape(self.arch)

    @property
    def bias_update_rate(self) -> float:
        return self.arch.bias_update_rate

    def build_model(self) -> nn.Module:
        return DeepSeekV3(DeepSeekArgs.from_scale(self.arch))

    def apply_tensor_parallel(self, stage: nn.Module, tp_mesh) -> None:
        apply_tp(stage, tp_mesh, self.inputs.collectives)


def _validate_architecture(s: str, a) -> None:
    _validate_routing(s, a)
    _validate_mla(s, a)
    require(a.n_dense_layers, f"{s}.n_dense_layers", lambda v: 0 <= v < a.n_layers,
            f"between 0 and n_layers - 1 = {a.n_layers - 1} (at least one MoE layer)")
    require(a.bias_update_rate, f"{s}.bias_update_rate", lambda v: v >= 0, "a rate >= 0")


def _validate_routing(s: str, a) -> None:
    require(a.num_groups, f"{s}.num_groups", lambda v: v > 0 and a.num_experts % v == 0,
            f"a divisor of num_experts={a.num_experts} (experts split into equal groups)")
    require(a.top_groups, f"{s}.top_groups", lambda v: 0 < v <= a.num_groups,
            f"between 1 and num_groups={a.num_groups}")
    per_group = a.num_experts // a.num_groups
    require(a.top_k, f"{s}.top_k", lambda v: v <= a.top_groups * per_group,
            f"at most top_groups x experts per group = {a.top_groups} x {per_group} (a token "
            "chooses its experts inside its top groups)")
    require(a.shared_experts, f"{s}.shared_experts", lambda v: v >= 0, "an integer >= 0")


def _validate_mla(s: str, a) -> None:
    for key in ("q_lora_rank", "kv_lora_rank"):
        require(getattr(a, key), f"{s}.{key}", lambda v: isinstance(v, int) and 0 < v < a.dim,
                f"a rank between 1 and dim - 1 = {a.dim - 1} (a low-rank latent narrower than "
                "the hidden size)")
    for key in ("qk_nope_head_dim", "v_head_dim"):
        require(getattr(a, key), f"{s}.{key}", lambda v: isinstance(v, int) and v > 0,
                "a positive integer")
    require(a.qk_rope_head_dim, f"{s}.qk_rope_head_dim",
            lambda v: isinstance(v, int) and v > 0 and v % 2 == 0,
            "a positive even width (RoPE pairs)")


def _tp_splits(a) -> dict[str, str]:
    splits = {"n_heads": "each rank takes whole attention heads"}
    if a.n_dense_layers:
        splits["dense_ffn_dim"] = "the dense layers' SwiGLU is split by hidden columns"
    return splits
