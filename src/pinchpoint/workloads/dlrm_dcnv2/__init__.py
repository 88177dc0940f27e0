"""DLRM-DCNv2 (MLPerf Training recommendation benchmark)."""
from pinchpoint.workloads.dlrm_dcnv2.config import CriteoDatasetConfig, DLRMModelConfig
from pinchpoint.workloads.registry import WorkloadSpec, register

register(WorkloadSpec(name="dlrm_dcnv2",
                      workload="pinchpoint.workloads.dlrm_dcnv2.workload:DLRMWorkload",
                      planner="pinchpoint.workloads.dlrm_dcnv2.plan:plan_run",
                      model_schema=DLRMModelConfig, datasets={"criteo": CriteoDatasetConfig},
                      smoke=("model.scale=smoke", "dataset.num_days=3",
                             "dataset.samples_per_day=8192", "dataset.batch_size=512",
                             "dataset.eval_batch_size=2048", "dataset.target_margin=0.3",
                             "train.evals_per_epoch=2"),
                      two_rank_layout="parallel=ep2",
                      multi_node_layout=("parallel=ep4",)))
