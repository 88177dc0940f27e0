"""Bad input fails before anything runs, naming the field and what is allowed."""
import os
import stat

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from conftest import ROOT, compose, train
from pinchpoint.errors import ConfigError
from pinchpoint.runner.validation import validate

BAD = [  # (overrides, field named in the error, words of the allowed values)
    (["dataset.batch_size=-8"], "dataset.batch_size", "positive integer"),
    (["checkpoint.interval=-1"], "checkpoint.interval", ">= 0"),
    (["storage=nfs", "storage.emulation.read_mb_per_s=0"], "storage.emulation.read_mb_per_s",
     "bandwidth > 0"),
    (["train.evals_per_epoch=0"], "train.evals_per_epoch", "positive integer"),
    (["dataset.num_days=1"], "dataset.num_days", ">= 2"),
    (["dataset.target_margin=0"], "dataset.target_margin", "(0, 0.5)"),
    (["storage.cache_clear=sometimes"], "storage.cache_clear", "none, fadvise, drop_caches"),
    (["model.scale=huge"], "model.scale", "proxy, full"),
    (["model.proxy.top_mlp=[64,2]"], "model.proxy.top_mlp", "ending at 1"),
    (["dataset.num_workers=2", "dataset.prefetch=0"], "dataset.prefetch", ">= 1"),
    (["train.device=cuda"], "train.device", "no CUDA"),
    (["dataset=criteo_multihot", "dataset.path=/nonexistent"], "dataset.path", "folder"),
    (["model.scale=full"], "model.scale", "GiB"),
    (["dataset.target_auroc=1.5"], "dataset.target_auroc", "(0.5, 1]"),
    # parallel (DLRM-specific rules)
    (["parallel=ep8", "parallel.dp_replicate=32", "parallel.ep=32",
      "dataset.batch_size=4096"], "parallel.ep", "at most 26"),
    (["parallel=ddp4", "dataset.batch_size=1022"], "dataset.batch_size", "multiple of"),
    (["parallel.tp=2"], "parallel.tp", "1 for DLRM"),
    (["parallel.world_size=-2"], "parallel.world_size", "positive integer"),
    (["parallel=ep4", "parallel.dp_shard=2"], "parallel.dp_shard", "replicated"),
    (["parallel=ddp2", "parallel.world_size=4"], "parallel.world_size",
     "product of the degrees"),
    (["parallel=ddp2", "parallel.ep=3"], "parallel.ep", "a divisor of world_size / pp = 2"),
    (["parallel=ep4", "parallel.ep=2"], "parallel.ep", "sharded over every rank"),
    (["model=llama2_70b_lora", "model.proxy.recompute=true"], "model.proxy.recompute",
     "not read by llama2_70b_lora: set model.recompute=true"),
    (["parallel.backend=mpi"], "parallel.backend", "gloo"),
    (["parallel=ddp2", "parallel.pp=2"], "parallel.pp", "1 for DLRM"),
]


@pytest.mark.parametrize("overrides,field,allowed", BAD, ids=[b[1] + str(i) for i, b in
                                                             enumerate(BAD)])
def test_bad_value_names_field(tmp_path, overrides, field, allowed):
    cfg = compose(overrides, tmp_path / "out")
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert err.value.field == field
    assert field in str(err.value) and allowed in str(err.value)
    assert not (tmp_path / "out").exists()  # nothing was created


def test_forced_unknown_key_is_refused(tmp_path):
    cfg = compose(["+dataset.shuffle_buffer=3"], tmp_path)  # '+' bypasses Hydra's schema check
    with pytest.raises(ConfigError, match="dataset.shuffle_buffer=3 is not allowed: a field of "
                                          "CriteoDatasetConfig"):
        validate(cfg)


def test_unwritable_storage_root(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, stat.S_IRUSR | stat.S_IXUSR)
    if os.access(locked, os.W_OK):
        pytest.skip("running as root: permissions are not enforced")
    cfg = compose([f"storage.root={locked}/tier"], tmp_path / "out")
    with pytest.raises(ConfigError, match="storage.root"):
        validate(cfg)


def test_storage_root_under_a_file_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cfg = compose([f"storage.root={blocker}/tier"], tmp_path / "out")
    with pytest.raises(ConfigError, match=r"storage.root=.*writable directory"):
        validate(cfg)


@pytest.mark.parametrize("override,error,words", [
    ("model=resnet", ConfigCompositionException, "dlrm_dcnv2"),   # unknown option: lists them
    ("dataset.batch_size=lots", ValidationError, "dataset.batch_size"),
    ("dataset.shuffle_buffer=3", ConfigCompositionException, "shuffle_buffer"),
    ("model.proxy.embedding_dim=1.5", ValidationError, "embedding_dim"),
])
def test_compose_time_errors(tmp_path, override, error, words):
    with pytest.raises(Exception) as err:
        compose([override], tmp_path)
    chain = [err.value, err.value.__cause__, err.value.__context__]
    assert any(isinstance(e, error) for e in chain if e is not None), repr(err.value)
    assert any(words in str(e) for e in chain if e is not None)


def test_train_py_reports_bad_input_without_running(tmp_path):
    out = tmp_path / "out"
    proc = train(["dataset.batch_size=-8"], out, check=False, seed_store=False)
    assert proc.returncode == 2
    assert "Invalid config: dataset.batch_size=-8 is not allowed: a positive integer" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (out / "storage").exists() and not (out / "mlflow.db").exists()


def test_truncated_dataset_fails_before_training(tmp_path):
    """A damaged real dataset is named before run_start; nothing is trained or half-written."""
    import numpy as np

    from pinchpoint.data import criteo
    real = tmp_path / "criteo"
    real.mkdir()
    hot = compose([], tmp_path).model.proxy.multi_hot_sizes
    for day in range(2):
        criteo.write_day(str(real), day, np.zeros((64, 13), np.float32),
                         np.zeros((64, 1), np.int32), [np.zeros((64, h), np.int32) for h in hot])
    npz = criteo.day_files(str(real), 1)["sparse_multi_hot"]
    with open(npz, "r+b") as f:
        f.truncate(os.path.getsize(npz) - 100)
    out = tmp_path / "out"
    proc = train(["dataset=criteo_multihot", f"dataset.path={real}", "dataset.num_days=2",
                  "dataset.samples_per_day=64", "dataset.batch_size=32",
                  "tracking.system_metrics=false"], out, check=False)
    assert proc.returncode != 0
    assert "day_1_sparse_multi_hot.npz" in proc.stdout + proc.stderr
    logs = list(out.glob("runs/*/mlperf.log"))
    assert all("run_start" not in p.read_text() for p in logs)
