"""Pre-flight for DLRM-DCNv2: the full MLPerf model described without allocating it."""
import json

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


def test_plan_only_prints_without_allocating(tmp_path):
    proc = train(["model.scale=full", "plan_only=true"], tmp_path / "out")
    plan = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert plan["full"]["parameters"]["total"] > 26e9
    assert not (tmp_path / "out" / "storage").exists()
