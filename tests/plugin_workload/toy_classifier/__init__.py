from pinchpoint.plan.rules import MLPerfRules
from pinchpoint.workloads.registry import WorkloadSpec, register

from toy_classifier.config import ToyDatasetConfig, ToyModelConfig

register(WorkloadSpec(name="toy_classifier", workload="toy_classifier.workload:ToyWorkload",
                      model_schema=ToyModelConfig, datasets={"toy_points": ToyDatasetConfig},
                      smoke=(), rules=MLPerfRules(benchmark="toy_classifier")))
