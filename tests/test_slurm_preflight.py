"""Pre-flight and Slurm request building, against sinfo text (no cluster needed)."""
from __future__ import annotations

import pytest

from conftest import compose
from pinchpoint.cluster import preflight
from pinchpoint.cluster.request import container_srun_args, mem_mb, slurm_request
from pinchpoint.errors import ConfigError
from pinchpoint.runner.validation import validate

# sinfo -h -N -o "%P|%a|%l|%n|%c|%m|%G": two partitions, a GPU one with a 4 h limit.
SINFO = """\
cpu*|up|infinite|c1|32|128000|(null)
cpu*|up|infinite|c2|32|128000|(null)
gpu|up|4:00:00|g1|64|512000|gpu:a100:8(S:0-1)
gpu|up|4:00:00|g2|64|512000|gpu:a100:8(S:0-1)
gpu|up|4:00:00|g3|64|512000|gpu:a100:8(S:0-1),nvme:1
down|down|1-00:00:00|d1|8|1000|(null)
"""


@pytest.fixture
def info() -> preflight.ClusterInfo:
    return preflight.ClusterInfo(preflight.parse_sinfo(SINFO), has_pyxis=False,
                                 qos={"normal", "high"}, accounts={"research"})


def slurm(*overrides: str, tmp_path=None):
    return compose(["cluster=slurm", *overrides], output_root=tmp_path)


def test_sinfo_is_read_per_partition(info):
    cpu, gpu = info.partitions["cpu"], info.partitions["gpu"]
    assert info.default is cpu and len(cpu.nodes) == 2 and cpu.cpus == 32
    assert cpu.max_time_min is None and gpu.max_time_min == 240
    assert gpu.gpus == 8 and len(gpu.nodes) == 3 and gpu.mem_mb == 512000
    assert not info.partitions["down"].up and info.partitions["down"].max_time_min == 1440


def test_parsers():
    assert preflight.time_min("30:00") == 30 and preflight.time_min("2-00:00:00") == 2880
    assert preflight.time_min("UNLIMITED") is None and preflight.time_min("1:30:30") == 91
    assert preflight.gpus("gpu:2,gpu:v100:1") == 3 and preflight.gpus("(null)") == 0
    assert mem_mb("16G") == 16384 and mem_mb("500M") == 500 and mem_mb("1024") == 1024


@pytest.mark.parametrize("overrides, field, says", [
    (["cluster.partition=nope"], "cluster.partition", "one of cpu, down, gpu"),
    (["cluster.partition=down"], "cluster.partition", "is up"),
    (["cluster.nodes=3"], "cluster.nodes", "1 to 2 (partition cpu has 2 node(s))"),
    (["cluster.cpus_per_task=33"], "cluster.cpus_per_task", "at most 32"),
    (["parallel=ddp2", "cluster.cpus_per_task=17"], "cluster.cpus_per_task", "at most 16"),
    (["cluster.gpus_per_node=1"], "cluster.gpus_per_node", "at most 0"),
    (["cluster.partition=gpu", "cluster.gpus_per_node=9"], "cluster.gpus_per_node", "at most 8"),
    (["cluster.partition=gpu", "cluster.time_limit_min=241"], "cluster.time_limit_min",
     "at most 240"),
    (["cluster.mem=200G"], "cluster.mem", "at most 128000M"),
    (["cluster.qos=urgent"], "cluster.qos", "one of high, normal"),
    (["cluster.account=other"], "cluster.account", "one of research"),
    (["cluster.container.image='nvcr.io#nvidia/pytorch:25.01-py3'"], "cluster.container.image",
     "pyxis"),
])
def test_requests_the_cluster_cannot_give_are_refused_naming_the_field(info, overrides, field,
                                                                       says, tmp_path):
    with pytest.raises(ConfigError) as err:
        preflight.check(slurm(*overrides, tmp_path=tmp_path), info)
    assert err.value.field == field and says in str(err.value)


@pytest.mark.parametrize("overrides, field, says", [
    (["cluster.time_limit_min=0"], "cluster.time_limit_min", "minutes > 0"),
    (["parallel=ddp2", "cluster.nodes=3"], "cluster.nodes", "a divisor of parallel.world_size=2"),
    (["parallel=ddp2", "cluster.tasks_per_node=1"], "cluster.tasks_per_node",
     "parallel.world_size / cluster.nodes = 2 / 1"),
    (["cluster.mem=lots"], "cluster.mem", "16G"),
    (["cluster.array_parallelism=0"], "cluster.array_parallelism", "positive"),
])
def test_static_checks_need_no_cluster(overrides, field, says, tmp_path):
    with pytest.raises(ConfigError) as err:
        validate(slurm(*overrides, tmp_path=tmp_path))
    assert err.value.field == field and says in str(err.value)


def test_a_fitting_request_passes_and_becomes_submitit_arguments(info, tmp_path):
    cfg = slurm("parallel=ddp2", "cluster.partition=gpu", "cluster.gpus_per_node=2",
                "cluster.cpus_per_task=4", "cluster.mem=64G", "cluster.time_limit_min=30",
                "cluster.qos=high", "+cluster.sbatch.exclusive=true",
                "cluster.srun=['--cpu-bind=none']", "cluster.max_num_timeout=5",
                tmp_path=tmp_path)
    validate(cfg)
    preflight.check(cfg, info)
    req = slurm_request(cfg, "pinchpoint-test")
    assert req.init == {"max_num_timeout": 5}
    p = req.params
    assert p["ntasks_per_node"] == 2 and p["nodes"] == 1 and p["gpus_per_node"] == 2
    assert p["partition"] == "gpu" and p["time"] == 30 and p["mem"] == "64G"
    assert p["additional_parameters"] == {"exclusive": True}
    assert p["srun_args"] == ["--cpu-bind=none"] and "account" not in p


def test_container_options_become_srun_arguments(tmp_path):
    cfg = slurm("cluster.container.image=/shared/pytorch.sqsh",
                "cluster.container.mounts=[/data:/data,/ckpt:/ckpt:rw]",
                "cluster.container.workdir=/work", "cluster.container.python=/usr/bin/python",
                tmp_path=tmp_path)
    assert container_srun_args(cfg.cluster.container) == [
        "--container-image=/shared/pytorch.sqsh", "--container-mounts=/data:/data,/ckpt:/ckpt:rw",
        "--container-workdir=/work"]
    assert slurm_request(cfg, "x").init["python"] == "/usr/bin/python"


def test_unknown_cluster_field_fails_at_compose_time(tmp_path):
    with pytest.raises(Exception, match="partitions"):
        slurm("cluster.partitions=gpu", tmp_path=tmp_path)
