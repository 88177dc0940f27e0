"""The ``plan`` config group's schema: what the planner needs beyond the model and the layout.
Plain dataclasses (no Hydra, no torch) so the run schema can import it cheaply."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional


@dataclass
class PlanConfig:
    # Arithmetic precision of the matmuls: bf16 | fp8 | nvfp4 | mxfp4 (null: the model's).
    # The runtime trains in fp32/bf16; fp8 and 4-bit are planned only (what the submissions use).
    precision: Optional[str] = None
    # Interleaved 1F1B: model chunks per pipeline rank (Megatron's virtual pipeline size).
    virtual_stages: int = 1
    # Count the embedding / the output layer + loss as one transformer layer each when splitting
    # the stack (Megatron's account_for_embedding/loss_in_pipeline_split, NVIDIA's ASYM_PP_*):
    # how 126 layers + 2 split evenly over PP8 x VP8 = 64 chunks of 2.
    embedding_as_layer: bool = False
    loss_as_layer: bool = False
    # Explicit layers per chunk (pp x virtual_stages entries, in schedule order); null = even.
    layers_per_chunk: Optional[List[int]] = None
    # Fraction of each collective's time hidden behind compute (0 = fully exposed, 1 = fully
    # hidden); null = the calibrated value in pinchpoint.plan.calibration.
    overlap_data_parallel: Optional[float] = None
    overlap_tensor_parallel: Optional[float] = None
    overlap_context_parallel: Optional[float] = None
    overlap_pipeline: Optional[float] = None
    # CTAs NCCL may use per communicator (dp, tp, cp, pp), as NeMo's
    # conf/nccl/custom_communicator_cta.yaml sets max_ctas: a capped communicator drives only
    # part of NVLink (plan/network.py capped). Default: the MLPerf NeMo recipes' dp and pp caps,
    # with which plan/calibration.py was fitted; null = NCCL's own choice (enough to saturate).
    nccl_max_ctas: Dict[str, Optional[int]] = field(
        default_factory=lambda: {"dp": 8, "tp": None, "cp": None, "pp": 2})
    # Seconds between run_start and the first step that the clock counts (MLPerf starts the
    # clock after init_stop: model build and checkpoint load are outside it).
    init_in_clock_s: float = 0.0
