"""GPT-OSS 20B behind the Workload protocol: the shared MoE decoder step with the GPT-OSS
model; validation and the full-scale plan (both the MLPerf and the published vocabulary)."""
from __future__ import annotations


from torch import nn

from pinchpoint.errors import require
from pinchpoint.workloads.common.moe_llm import MoEDecoderWorkload
from pinchpoint.workloads.common.moe_validation import validate_moe
from pinchpoint.workloads.gpt_oss_20b import plan
from pinchpoint.workloads.gpt_oss_20b.model import GptOss, GptOssArgs
from pinchpoint.workloads.gpt_oss_20b.parallelize import apply_tp


class GptOss20B(MoEDecoderWorkload):

    @classmethod
    def validate(cls, run) -> None:
        validate_moe(run, _validate_attention, plan.shape, _tp_splits)

    def shape(self):
        return plan.shape(self.arch)

    def build_model(self) -> nn.Module:
        return GptOss(GptOssArgs.from_scale(self.arch))

    def apply_tensor_parallel(self, stage: nn.Module, tp_mesh) -> None:
        apply_tp(stage, tp_mesh, self.inputs.collectives)


def _validate_attention(s: str, a) -> None:
    for key in ("n_kv_heads", "head_dim", "sliding_window"):
        require(getattr(a, key), f"{s}.{key}", lambda v: isinstance(v, int) and v > 0,
                "a positive integer" + (" (tokens a sliding-window layer looks back)"
                                        if key == "sliding_window" else ""))
    require(a.n_kv_heads, f"{s}.n_kv_heads", lambda v: a.n_heads % v == 0,
            f"a divisor of n_heads={a.n_heads} (grouped-query attention)")
    require(a.head_dim, f"{s}.head_dim", lambda v: v % 2 == 0, "an even width (RoPE pairs)")


def _tp_splits(a) -> dict[str, str]:
    return {"n_heads": "each rank takes whole query heads and their sinks",
            "n_kv_heads": "each rank takes whole key/value heads"}
