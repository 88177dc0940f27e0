"""GPT-OSS 20B (MLPerf small MoE pretraining): MoE decoder with expert parallelism."""
from pinchpoint.workloads.gpt_oss_20b.config import GptOssModelConfig
from pinchpoint.plan.rules import MLPerfRules
from pinchpoint.workloads.registry import WorkloadSpec, register

# A run in seconds (conformance suite, sweep smoke tests): the smoke scale on a small corpus.
SMOKE = ("model.scale=smoke", "dataset.train_tokens=40000", "dataset.validation_tokens=4000",
         "dataset.target_margin=3.0")

# The conformance suite checkpoints in the EP + FSDP2 layout and resumes in one process.
register(WorkloadSpec(name="gpt_oss_20b",
                      workload="pinchpoint.workloads.gpt_oss_20b.workload:GptOss20B",
                      planner="pinchpoint.workloads.gpt_oss_20b.plan:plan_run",
                      model_schema=GptOssModelConfig, smoke=SMOKE,
                      rules=MLPerfRules(benchmark="gpt_oss_20b"),
                      two_rank_layout="parallel=ep2fsdp2",
                      multi_node_layout=("parallel=ep2fsdp2", "parallel.dp_shard=4")))
