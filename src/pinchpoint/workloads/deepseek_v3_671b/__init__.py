"""DeepSeek V3 671B (MLPerf large MoE pretraining): MLA + MoE decoder with expert parallelism."""
from pinchpoint.workloads.deepseek_v3_671b.config import DeepSeekModelConfig
from pinchpoint.plan.rules import MLPerfRules
from pinchpoint.workloads.registry import WorkloadSpec, register

# A run in seconds (conformance suite, sweep smoke tests): the smoke scale on a small corpus.
SMOKE = ("model.scale=smoke", "dataset.train_tokens=40000", "dataset.validation_tokens=4000",
         "dataset.target_margin=3.0")

# The conformance suite checkpoints in the EP + FSDP2 layout and resumes in one process.
register(WorkloadSpec(name="deepseek_v3_671b",
                      workload="pinchpoint.workloads.deepseek_v3_671b.workload:DeepSeekV3_671B",
                      planner="pinchpoint.workloads.deepseek_v3_671b.plan:plan_run",
                      model_schema=DeepSeekModelConfig, smoke=SMOKE,
                      # RCP file rcps_deepseekv3_671b.json counts samples (its "Epochs" key)
                      rules=MLPerfRules(benchmark="deepseekv3_671b"),
                      two_rank_layout="parallel=ep2fsdp2",
                      multi_node_layout=("parallel=ep2fsdp2", "parallel.pp=2")))
