"""Compute and memory-bound time from work counts: FLOPs at the achieved fraction of the
tensor-core peak for a precision, bytes at the achieved fraction of HBM bandwidth. Generic:
any workload's planner (dense LLMs, MoE experts, DLRM's MLPs, FLUX's MMDiT) calls these."""
from __future__ import annotations

from dataclasses import replace
from typing import Optional

from pinchpoint.errors import ConfigError
from pinchpoint.plan import calibration
from pinchpoint.plan.hardware import PRECISIONS, System


def achieved_fraction(system: System, precision: str) -> float:
    """The user's ``gpu.mfu`` if set, else the calibrated fraction for this architecture and
    precision (falling back to the architecture's fp8 value) times the part's
    ``sustained_rate`` (GB300: what its power budget adds over GB200 at the same peak)."""
    if system.mfu:
        return float(system.mfu)
    kind = PRECISIONS.get(precision, precision)
    table = calibration.ACHIEVED_FRACTION
    fitted = table.get((system.architecture, kind),
                       table.get((system.architecture, "fp8"), table[("hopper", "fp8")]))
    return fitted * system.sustained_rate


def at_efficiency(system: System, efficiency: float) -> System:
    """``system`` as a workload whose kernels reach ``efficiency`` x the calibrated fraction
    sees it (calibration.MMDIT_EFFICIENCY): folded into the factor achieved_fraction applies,
    so a user's ``gpu.mfu`` stays that workload's own fraction."""
    return replace(system, sustained_rate=system.sustained_rate * efficiency)


def matmul_s(flops: float, system: System, precision: str) -> float:
    return flops / (system.peak_flops(precision) * achieved_fraction(system, precision))


def attention_s(flops: float, system: System, precision: str, score_flops: float,
                forward_passes: int = 1) -> float:
    """Fused attention of ``flops`` (forward + backward, the forward a third and the backward
    two thirds: the counting every planner uses), whose forward spends ``score_flops`` per
    score (2 x (qk + v head widths): QK^T and PV), plus ``forward_passes - 1`` recomputed
    forwards. Every pass exponentiates each score once (the forward's softmax; the backward
    recomputes P) on the special function units, which the tensor cores wait for, so a pass
    takes the longer of its matmuls and its exponentials: on Blackwell the FP8 attention
    forward is bound by the exponential (FlashAttention-4, Dao et al.; NVIDIA, "Making Softmax
    More Efficient with NVIDIA Blackwell Ultra": Blackwell Ultra doubles the SFU rate for it).
    Both run at the achieved fraction; a GPU without ``sfu_texp_per_s`` is bound by its
    matmuls only."""
    rate = system.sfu_exp_per_s
    if not rate or flops <= 0:
        return matmul_s(flops * (2 + forward_passes) / 3, system, precision)
    exp_s = flops / 3 / score_flops / (rate * achieved_fraction(system, precision))
    return forward_passes * max(matmul_s(flops / 3, system, precision), exp_s) + \
        max(matmul_s(2 * flops / 3, system, precision), exp_s)


def layer_overhead_s(layer_passes: float, moe_layer_passes: float = 0.0) -> float:
    """The fixed time of ``layer_passes`` layer forward + backward passes on a rank, of which
    ``moe_layer_passes`` are MoE layers (calibration.LAYER_OVERHEAD_S, MOE_LAYER_OVERHEAD_S:
    what does not shrink with a rank's tokens)."""
    return layer_passes * calibration.LAYER_OVERHEAD_S + \
        moe_layer_passes * calibration.MOE_LAYER_OVERHEAD_S


def memory_s(nbytes: float, system: System) -> float:
    return nbytes / (system.memory_bytes_per_s * calibration.MEMORY_FRACTION)


def attention_precision(system: System, precision: str, fp8: Optional[bool] = None) -> str:
    """Fused attention's precision: ``fp8`` when given (plan.fp8_attention, a submission's
    FP8_DPA; refused on a GPU without FP8 tensor cores), else FP8 when the matmuls run in FP8
    or 4-bit (the submissions' fp8 DPA) and BF16 otherwise; never in 4-bit."""
    if fp8 is not None:
        if fp8 and not system.peak_tflops_fp8:
            raise ConfigError("plan.fp8_attention", True, f"false on {system.name} (no FP8 "
                              "tensor cores)")
        return "fp8" if fp8 else "bf16"
    if PRECISIONS.get(precision) in ("fp8", "fp4") and system.peak_tflops_fp8:
        return "fp8"
    return "bf16"
