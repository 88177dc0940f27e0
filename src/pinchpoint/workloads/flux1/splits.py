"""A FLUX.1 split on disk as the configured pipeline reads it: raw tar shards (``raw/<split>``)
or preprocessed columnar shards (``preprocessed/<split>``), indexed and checked (a DataError
names the file). The workload opens its splits here, and the pre-launch validation opens real
data here too, before any rank starts."""
from __future__ import annotations

import os

from pinchpoint.workloads.flux1 import plan as flux_plan
from pinchpoint.workloads.flux1.data_preprocessed import ExpectedShapes, PreprocessedShards
from pinchpoint.workloads.flux1.data_raw import RawShards


def open_split(dataset, arch, folder: str, split: str, val: bool, tier):
    """The split's shards of the configured pipeline, indexed and checked (DataError)."""
    if dataset.pipeline == "raw":
        return RawShards(os.path.join(folder, "raw", split), tier, need_timestep=val)
    side = flux_plan.latent_side(arch)
    expect = ExpectedShapes((arch.t5.max_tokens, arch.t5.d_model), (arch.clip.hidden_size,),
                            (arch.vae.latent_channels, side, side))
    return PreprocessedShards(os.path.join(folder, "preprocessed", split),
                              dataset.columnar_format, expect, dataset.mmap, tier,
                              need_timestep=val)
