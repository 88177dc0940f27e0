"""FLUX.1 (MLPerf Training text_to_image): rectified-flow MMDiT from raw images + captions or
from preprocessed encodings."""
from pinchpoint.workloads.flux1.config import FluxDatasetConfig, FluxModelConfig
from pinchpoint.plan.rules import EVAL_ACCURACY, MLPerfRules
from pinchpoint.workloads.registry import WorkloadSpec, register

register(WorkloadSpec(name="flux1", workload="pinchpoint.workloads.flux1.workload:FluxWorkload",
                      planner="pinchpoint.workloads.flux1.plan:plan_run",
                      model_schema=FluxModelConfig,
                      # flux1's rules name the metric averaged_validation_loss (was the
                      # workload's mlperf_eval_keys); evaluation every eval_every_samples
                      rules=MLPerfRules(benchmark="flux1", eval_keys=(
                          EVAL_ACCURACY, "averaged_validation_loss"),
                          reference_stack="fsdp2"),   # the reference is torchtitan's FSDP2
                      datasets={"flux": FluxDatasetConfig},
                      smoke=("model.scale=smoke",),
                      two_rank_layout="parallel=fsdp2"))
