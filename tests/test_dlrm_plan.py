"""Pre-flight for DLRM-DCNv2: the full MLPerf model described without allocating it, and its
step model (embedding gathers bound by HBM bandwidth, all-to-all, dense MLPs)."""
import json

import pytest

from conftest import compose, train

REF_ROWS = [40000000, 39060, 17295, 7424, 20265, 3, 7122, 1543, 63, 40000000, 3067956, 405282,
            10, 2209, 11938, 155, 4, 976, 14, 40000000, 40000000, 40000000, 590152, 12973, 108,
            36]


def test_full_scale_parameter_count():
    from omegaconf import OmegaConf

    from pinchpoint.workloads.dlrm_dcnv2.plan import describe
    plan = describe(OmegaConf.to_object(compose(["model=dlrm"]).model))["full"]
    d, inter = 128, 27 * 128
    bottom = 13 * 512 + 512 + 512 * 256 + 256 + 256 * 128 + 128
    dcn = 3 * (inter * 512 + 512 * inter + inter)
    widths = [inter, 1024, 1024, 512, 256, 1]
    top = sum(a * b + b for a, b in zip(widths, widths[1:]))
    assert plan["embedding_rows"] == sum(REF_ROWS) == 204_184_588
    assert plan["parameters"]["embedding"] == sum(REF_ROWS) * d
    assert plan["parameters"]["total"] == sum(REF_ROWS) * d + bottom + dcn + top
    assert plan["ids_per_sample"] == 214
    assert 97 < plan["weights_bytes"] / 2**30 < 98  # ~97 GiB fp32, as the reference says


def test_step_terms_by_hand():
    from omegaconf import OmegaConf

    from pinchpoint.plan import calibration, network
    from pinchpoint.plan.hardware import preset
    from pinchpoint.workloads.dlrm_dcnv2.plan import parameter_counts, step_terms
    arch = OmegaConf.to_object(compose(["model=dlrm"]).model).full
    h200 = preset("h200")
    t = step_terms(arch, 55296, 8, 8, h200)["terms_s"]
    hbm = 4.8e12 * calibration.MEMORY_FRACTION
    # one fp32 row gathered forward, four transfers in the Adagrad update, over 8 table shards
    embedding = 5 * 55296 * 214 * 128 * 4 / 8 / hbm
    # activations: inputs, bottom MLP, interaction, 3 cross layers (2 x 3456 + rank 512), top
    # MLP, in fp16, written and read forward and backward (6 passes)
    values = 13 + (512 + 256 + 128) + 27 * 128 + 3 * (2 * 27 * 128 + 512) + (1024 + 1024 +
                                                                               512 + 256 + 1)
    activations = 55296 / 8 * values * 2 * 6 / hbm
    assert t["memory"] == pytest.approx(embedding + activations)
    dense = 6 * parameter_counts(arch)["dense"] * 55296 / 8
    assert t["compute"] == pytest.approx(
        dense / (989e12 * calibration.ACHIEVED_FRACTION[("hopper", "bf16")]))
    s = network.span(8, 1, 8)
    local = 55296 / 8
    a2a = network.all_to_all_s(local * 214 * 4, s, h200) + \
        2 * network.all_to_all_s(local * 26 * 128 * 2, s, h200)
    assert t["ep"] == pytest.approx(a2a)
    # 64 GPUs across 8 HGX nodes: the all-to-all leaves NVLink and grows
    wide = step_terms(arch, 135168, 64, 64, h200)["terms_s"]
    assert wide["ep"] / (135168 / 64) > t["ep"] / local


def test_plan_only_prints_without_allocating(tmp_path):
    proc = train(["model.scale=full", "plan_only=true", "model.full.global_batch_size=55296",
                  "parallel.dp_replicate=8", "parallel.ep=8", "+gpu=b200"], tmp_path / "out")
    plan = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert plan["details"]["scales"]["full"]["parameters"]["total"] > 26e9
    assert plan["gpu"] == "B200" and plan["fits"] and plan["global_batch"] == 55296
    t = plan["time_to_train"]
    assert t["evaluations"] >= 1 and t["total_s"] > t["train_s"] > 0
    assert not (tmp_path / "out" / "storage").exists()
