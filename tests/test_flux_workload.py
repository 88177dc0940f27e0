"""FLUX.1 as a registered workload: bad input is refused before launch naming the field or file,
the planner describes the full-scale model for both pipelines, and train.py runs both
pipelines end to end (smoke scale), recording the data_wait split."""
from __future__ import annotations

import glob
import json
import os
import tarfile

import pytest

from conftest import compose, train
from pinchpoint.errors import ConfigError, DataError
from pinchpoint.runner.validation import validate

SMOKE = ["model=flux1", "model.scale=smoke"]


def refused(overrides, out) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        validate(compose(SMOKE + overrides, out))
    return err.value


def test_resolution_not_divisible_by_vae_factor_times_patch(out):
    err = refused(["model.smoke.image_size=24"], out)
    assert err.field == "model.smoke.image_size" and "multiple of 16" in str(err)


def test_hidden_not_divisible_by_heads(out):
    err = refused(["model.smoke.num_heads=3"], out)
    assert err.field == "model.smoke.hidden_size" and "num_heads=3" in str(err)


def test_replicate_times_shard_must_be_world_size(out):
    err = refused(["parallel.dp_replicate=2", "parallel.dp_shard=2", "parallel.world_size=2"],
                  out)
    assert err.field == "parallel.world_size" and "product of the degrees" in str(err)


def test_tensor_parallel_and_uneven_validation_set_are_refused(out):
    assert refused(["parallel.tp=2"], out).field == "parallel.tp"
    assert refused(["model.smoke.eval_samples=30"], out).field == "model.smoke.eval_samples"
    assert refused(["dataset.pipeline=jpeg"], out).field == "dataset.pipeline"


def _real(out, pipeline: str, make) -> list[str]:
    """A real-data folder laid out as the workload expects, broken by ``make``."""
    root = out / "real"
    for split in ("train", "val"):
        os.makedirs(root / pipeline / split, exist_ok=True)
        make(root / pipeline / split, split)
    return [f"dataset={'flux_raw' if pipeline == 'raw' else 'flux_preprocessed'}",
            "dataset.synthetic=false", f"dataset.path={root}"]


def test_real_tar_shard_without_captions_fails_before_launch(out):
    def make(folder, split):
        with tarfile.open(folder / "shard-00000.tar", "w") as tar:
            png = folder / "000.png"
            png.write_bytes(b"\x89PNG not really")
            tar.add(png, arcname="000.png")
    overrides = _real(out, "raw", make)
    with pytest.raises(DataError, match=r"shard-00000.tar: sample '000' has no caption"):
        validate(compose(SMOKE + overrides, out))


def test_real_preprocessed_shard_missing_column_fails_before_launch(out):
    import pyarrow as pa

    def make(folder, split):
        table = pa.table({"__key__": ["a"], "t5_encodings": [b"x"], "clip_encodings": [b"x"],
                          "mean": [b"x"]})
        with pa.OSFile(str(folder / "part-00000.arrow"), "wb") as sink, \
                pa.ipc.new_file(sink, table.schema) as w:
            w.write_table(table)
    overrides = _real(out, "preprocessed", make)
    with pytest.raises(DataError, match="part-00000.arrow: missing column.*logvar"):
        validate(compose(SMOKE + overrides, out))


def test_full_scale_plan_for_both_pipelines(out, capsys):
    # 64 ranks x 16 per rank: the reference's global batch of 1,024 (a full-scale batch below
    # the smallest RCP, 512, is refused).
    train(["model=flux1", "model.scale=full", "parallel=hsdp2x2", "parallel.dp_replicate=4",
           "parallel.dp_shard=16", "plan_only=true"], out)


def _summary(out) -> dict:
    with open(sorted(glob.glob(f"{out}/runs/*/phase_summary.json"))[-1]) as f:
        return json.load(f)


@pytest.mark.parametrize("dataset", ["flux_preprocessed", "flux_raw"])
def test_smoke_trains_and_records_the_data_wait_split(dataset, out):
    proc = train(SMOKE + [f"dataset={dataset}", "train.max_steps=4",
                          "tracking.system_metrics=false"], out, timeout=400)
    s = _summary(out)
    assert s["steps"] == 4 and s["status"] in ("success", "aborted"), proc.stdout[-2000:]
    m = s
    assert m["data_read_seconds"] > 0 and m["data_decode_seconds"] > 0
    assert m["dataset_bytes_per_sample"] > 0 and m["dataset_bytes_on_tier"] > 0
    if dataset == "flux_raw":
        assert m["data_encode_seconds"] > 0
    else:
        assert m["data_encode_seconds"] == 0
    log = sorted(glob.glob(f"{out}/runs/*/mlperf.log"))[-1]
    keys = [json.loads(x.split(":::MLLOG ")[1])["key"] for x in open(log) if ":::MLLOG" in x]
    assert "averaged_validation_loss" in keys and "submission_benchmark" in keys
