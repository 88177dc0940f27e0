"""DLRM-DCNv2 (MLPerf Training recommendation benchmark)."""
from pinchpoint.workloads.dlrm_dcnv2.config import CriteoDatasetConfig, DLRMModelConfig
from pinchpoint.plan.rules import MLPerfRules
from pinchpoint.workloads.registry import WorkloadSpec, register

# Its RCPs count epochs of Criteo days 0-22 (was plan/rcp.py's EPOCH_SAMPLES); the reference
# evaluates train.evals_per_epoch (20) times per epoch on the first half of day 23 (was
# dlrm_dcnv2/plan.py's VALIDATION_SAMPLES).
RULES = MLPerfRules(benchmark="dlrm_dcnv2", eval_cadence="evals_per_epoch", rcp_unit="epochs",
                    epoch_samples=4_195_197_692,
                    constants={"validation_samples": 89_137_319})

register(WorkloadSpec(name="dlrm_dcnv2",
                      workload="pinchpoint.workloads.dlrm_dcnv2.workload:DLRMWorkload",
                      planner="pinchpoint.workloads.dlrm_dcnv2.plan:plan_run",
                      rules=RULES, model_schema=DLRMModelConfig, datasets={"criteo": CriteoDatasetConfig},
                      smoke=("model.scale=smoke", "dataset.num_days=3",
                             "dataset.samples_per_day=8192", "dataset.batch_size=512",
                             "dataset.eval_batch_size=2048", "dataset.target_margin=0.3",
                             "train.evals_per_epoch=2"),
                      two_rank_layout="parallel=ep2",
                      multi_node_layout=("parallel=ep4",)))
