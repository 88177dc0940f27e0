"""Planner vs published MLPerf Training results: predicted time-to-train, published score, ratio,
for every row of benchmarks/data/published_results.md (MLPerf Training v5.0 and v5.1 results; its
header says where they come from).

    python benchmarks/planner_vs_published.py          # the table with the shipped constants
    python benchmarks/planner_vs_published.py --fit    # refit pinchpoint/plan/calibration.py

Inputs per row that are not fitted: the GPU preset (datasheet peaks and bandwidths,
conf/gpu/*.yaml), the layout and precision from the submission's config_*.sh (named below per
system), the model from conf/model/*.yaml, steps to converge from the RCP files of the row's
ruleset, the eval cadence of the benchmark. Fitted (and only with --fit): the constants in
pinchpoint/plan/calibration.py, shared by all rows of an architecture.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pinchpoint.plan import calibration  # noqa: E402
from pinchpoint.workloads import plan_point  # noqa: E402
from pinchpoint.plan.config_access import namespace  # noqa: E402
from pinchpoint.plan.hardware import PRESET_DIR  # noqa: E402

COPY = ROOT / "benchmarks" / "data" / "published_results.md"

# accelerator column -> preset file
ACCELERATORS = [("H200-NVL", "h200_nvl"), ("H200", "h200"), ("H100", "h100"), ("GB300", "gb300"),
                ("GB200", "gb200"), ("B300", "b300"), ("B200", "b200"), ("MI355X", "mi355x"),
                ("MI350X", "mi350x"), ("MI325X", "mi325x"), ("MI300X", "mi300x")]


def load_rows(path: Path | None = None) -> list[dict]:
    path = path or COPY
    rows = []
    for line in path.read_text().splitlines():
        if not line.startswith("| v5"):
            continue
        c = [x.strip() for x in line.strip("|").split("|")]
        nodes, per_node = map(int, re.match(r"\d+ \((\d+)x(\d+)\)", c[4]).groups())
        rows.append({"round": c[0], "benchmark": c[1], "system": c[2], "accelerator": c[3],
                     "gpus": int(c[4].split()[0]), "nodes": nodes, "per_node": per_node,
                     "global_batch": int(c[5]), "published_min": float(c[6])})
    return rows


def preset_for(accelerator: str) -> dict:
    for key, name in ACCELERATORS:
        if key in accelerator:
            return yaml.safe_load((PRESET_DIR / f"{name}.yaml").read_text())
    raise KeyError(accelerator)


# NeMo's per-communicator NCCL CTA caps, the same in every NeMo submission here (v5.0 and v5.1,
# conf/nccl/custom_communicator_cta.yaml via NCCL_CFG_PATH in config_common.sh): dp and dp_cp 8,
# tp 8, pp 2, cp 1. Applied: dp (the gradient reduce-scatter and parameter all-gather) and pp;
# tp only where its traffic goes through NCCL (Cisco, below: elsewhere TE's userbuffers carry it).
# cp is not applied: the planner's CP term is a BF16 K/V ring, while the two CP rows run FP8
# attention (HPE FP8_DPA=True); capped at one CTA it charges them 1.30x and 1.42x.
NEMO_CTAS = {"dp": 8, "pp": 2}


# Llama 3.1 8B v5.1 systems whose configs run FP8 on Blackwell (see _degrees).
DELL_FP8 = ("1xXE9780x8B300", "2xXE9680Lx8B200", "2xXE9685Lx8B200")


def layout_for(row: dict) -> dict:
    """Degrees, micro-batch, precision and NCCL caps from the submission's config_*.sh (file
    named)."""
    lay = _degrees(row)
    nemo = row["benchmark"] != "dlrm_dcnv2" and "AMD" not in row["accelerator"]
    lay["nccl_max_ctas"] = dict(NEMO_CTAS) if nemo else {}
    if "Cisco / hpf" in row["system"]:
        # Cisco's pretrain.py line 632: "# trainer.callbacks.append(get_overlap_callback(cfg))",
        # the only place that hands TP_COMM_OVERLAP to the model: TP2's all-gathers and
        # reduce-scatters run as plain NCCL collectives on the tp communicator (8 CTAs),
        # exposed. (hpf_n8 is TP1: no TP traffic.)
        lay["overlap_tp"] = 0.0
        lay["nccl_max_ctas"]["tp"] = 8
    return lay


def _degrees(row: dict) -> dict:
    gpu, n, sysname = row["accelerator"], row["gpus"], row["system"]
    if row["benchmark"] == "llama31_405b":
        # NVIDIA config_GB200_64x4x112xtp4pp8cp2_cg.sh / config_DGXH100_64x8x288xtp8pp8cp2.sh:
        # TP4 (GB200) or TP8 (Hopper), PP8, INTERLEAVED_PIPELINE=8, CP2, MBS 1, ASYM_PP_EMBED
        # and ASYM_PP_LOSS, FP8 (v5.0), TP comm overlap, no recompute. Nebius H200: NVIDIA's
        # H100 recipe (same NeMo container, 25.01).
        tp = 4 if "GB200" in gpu else 8
        return dict(tp=tp, pp=8, cp=2, vp=8, mbs=1, precision="fp8", asym=True)
    if row["benchmark"] == "llama31_8b":
        # v5.1 configs: AMD config_MI355X_1x8x1_8b.sh (GBS 32, MBS 2, TP1, FP8); Dell
        # config_1xXE9680Lx8B200 (MBS 2, TP1, config_common_fp4 = NVFP4); Cisco
        # config_DGXH100_8x8x1xtp1pp1cp1 and _16x8x1xtp2pp1cp1 (FP8); HPE
        # config_XD670_8x8x1xtp1pp1cp2_8b; Lambda config_GB300_18x4x1xtp1pp1cp2_8b (NVFP4).
        # FP8, not NVFP4, on three Dell Blackwell systems: their configs
        # (config_1xXE9780x8B300*, config_2xXE9680Lx8B200*, config_2xXE9685Lx8B200*) do not
        # source config_common_fp4.sh, and their logged step times match the FP8 runs.
        if "AMD" in gpu:
            return dict(tp=1, pp=1, cp=1, vp=1, mbs=2, precision="fp8")
        blackwell = "Blackwell" in gpu
        fp8_dell = any(k in sysname for k in DELL_FP8)
        precision = "nvfp4" if blackwell and not fp8_dell else "fp8"
        if "hpf_n16" in sysname:
            return dict(tp=2, pp=1, cp=1, vp=1, mbs=1, precision=precision)
        if row["global_batch"] < n or ("H200" in gpu and n == 64):
            return dict(tp=1, pp=1, cp=2, vp=1, mbs=1, precision=precision)
        mbs = row["global_batch"] // n
        return dict(tp=1, pp=1, cp=1, vp=1, mbs=min(mbs, 2), precision=precision)
    # DLRM-DCNv2 (HugeCTR): embeddings model-parallel over every GPU, MLPs data-parallel.
    return dict(tp=1, pp=1, cp=1, vp=1, mbs=row["global_batch"] // n, precision="bf16")


def row_config(row: dict):
    bench = row["benchmark"]
    model_file = "dlrm_dcnv2" if bench == "dlrm_dcnv2" else bench
    model = yaml.safe_load((ROOT / "conf" / "model" / f"{model_file}.yaml").read_text())
    model = {k: v for k, v in model.items() if k != "defaults"}
    model["scale"] = "full"
    lay = layout_for(row)
    ruleset = {"v5.0": "5.0.0", "v5.1": "5.1.0"}[row["round"]]
    n = row["gpus"]
    dp = n // (lay["tp"] * lay["pp"] * lay["cp"])
    if bench != "dlrm_dcnv2":
        model["full"].update(global_batch_size=row["global_batch"], micro_batch_size=lay["mbs"],
                             recompute=False)
        model.setdefault("pipeline_schedule", "1f1b")
        parallel = dict(dp_replicate=1, dp_shard=dp, tp=lay["tp"], pp=lay["pp"], cp=lay["cp"],
                        ep=1, world_size=None)
    else:
        model["full"]["global_batch_size"] = row["global_batch"]
        parallel = dict(dp_replicate=n, dp_shard=1, tp=1, pp=1, cp=1, ep=n, world_size=None)
    plan = dict(precision=lay["precision"], virtual_stages=lay["vp"],
                embedding_as_layer=lay.get("asym", False), loss_as_layer=lay.get("asym", False),
                layers_per_chunk=None, overlap_data_parallel=None,
                overlap_context_parallel=None, overlap_pipeline=None, init_in_clock_s=0.0,
                overlap_tensor_parallel=lay.get("overlap_tp"), nccl_max_ctas=lay["nccl_max_ctas"],
                # published runs below every RCP exist (405B v5.0 at 448-896 < 1008): MLPerf
                # scores them at the smallest reference's samples
                below_smallest_rcp=True)
    gpu = {**preset_for(row["accelerator"]), "reserved_gib": 6.0, "mfu": None}
    return namespace(dict(model=model, parallel=parallel, plan=plan, gpu=gpu,
                          mlperf=dict(ruleset=ruleset), train=dict(evals_per_epoch=20),
                          dataset=dict(batch_size=row["global_batch"])))


def predict(rows: list[dict], configs: list | None = None) -> list[dict]:
    out = []
    configs = configs or [row_config(row) for row in rows]
    for row, cfg in zip(rows, configs):
        p = plan_point(cfg)
        minutes = p.time_to_train.minutes
        out.append({**row, "predicted_min": minutes, "ratio": minutes / row["published_min"],
                    "dominant": p.dominant, "fits": p.fits, "plan": p})
    return out


def print_table(results: list[dict]) -> None:
    print(f"{'round':5} {'benchmark':13} {'system':46} {'GPUs':>5} {'GBS':>6} "
          f"{'pred min':>9} {'pub min':>8} {'ratio':>6}  dominant")
    for r in results:
        print(f"{r['round']:5} {r['benchmark']:13} {r['system'][:46]:46} {r['gpus']:5d} "
              f"{r['global_batch']:6d} {r['predicted_min']:9.2f} {r['published_min']:8.2f} "
              f"{r['ratio']:6.2f}  {r['dominant']}{'' if r['fits'] else ' (does not fit)'}")
    ratios = [r["ratio"] for r in results]
    within = sum(0.75 <= x <= 1.25 for x in ratios)
    logs = [abs(math.log(x)) for x in ratios]
    print(f"\n{within}/{len(ratios)} rows within +-25 %; worst ratio "
          f"{min(ratios):.2f} / {max(ratios):.2f}; mean |log ratio| {sum(logs) / len(logs):.3f}")


def print_constants() -> None:
    print("\nconstants (pinchpoint/plan/calibration.py):")
    for (arch, prec), v in calibration.ACHIEVED_FRACTION.items():
        print(f"  achieved fraction {arch:9} {prec:5} {v:.3f}")
    for k, v in calibration.OVERLAP.items():
        print(f"  overlap {k:17} {v:.3f}")
    print(f"  memory fraction {calibration.MEMORY_FRACTION:.3f}; DLRM step overhead "
          f"{calibration.DLRM_STEP_OVERHEAD_S * 1e3:.3f} ms")


FITTED = [("ACHIEVED_FRACTION", ("hopper", "fp8")), ("ACHIEVED_FRACTION", ("blackwell", "fp8")),
          ("ACHIEVED_FRACTION", ("blackwell", "fp4")), ("ACHIEVED_FRACTION", ("cdna4", "fp8")),
          ("OVERLAP", "data_parallel"), ("DLRM_STEP_OVERHEAD_S", None)]
BOUNDS = {"ACHIEVED_FRACTION": (0.05, 0.95), "OVERLAP": (0.0, 1.0),
          "MEMORY_FRACTION": (0.3, 0.85), "DLRM_STEP_OVERHEAD_S": (0.0, 0.01)}


def _set(values) -> None:
    for (name, key), v in zip(FITTED, values):
        if key is None:
            setattr(calibration, name, float(v))
        else:
            getattr(calibration, name)[key] = float(v)
    # Architecture-wide fallbacks follow their fitted precision ('assumed' in calibration.py).
    t = calibration.ACHIEVED_FRACTION
    for arch in ("hopper", "blackwell", "cdna4"):
        t[(arch, "bf16")] = t[(arch, "fp8")]
    t[("cdna4", "fp4")] = t[("cdna4", "fp8")]
    t[("cdna3", "fp8")] = t[("cdna3", "bf16")] = t[("cdna4", "fp8")]


def _get() -> list[float]:
    return [getattr(calibration, n) if k is None else getattr(calibration, n)[k]
            for n, k in FITTED]


def fit(rows: list[dict]) -> None:
    from scipy.optimize import least_squares

    configs = [row_config(row) for row in rows]

    def residuals(values):
        _set(values)
        return [math.log(r["ratio"]) for r in predict(rows, configs)]
    lo = [BOUNDS[n][0] for n, _ in FITTED]
    hi = [BOUNDS[n][1] for n, _ in FITTED]
    x0 = [min(max(v, a + 1e-6), b - 1e-6) for v, a, b in zip(_get(), lo, hi)]
    res = least_squares(residuals, x0, bounds=(lo, hi), diff_step=1e-3)
    _set(res.x)
    print("fitted (paste into pinchpoint/plan/calibration.py):")
    for (name, key), v in zip(FITTED, res.x):
        print(f"  {name}{'' if key is None else [key]} = {v:.5g}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fit", action="store_true", help="refit the constants first")
    ap.add_argument("--rows", help="a markdown table of published results in the same columns "
                    "(default: benchmarks/data/published_results.md)")
    args = ap.parse_args()
    rows = load_rows(Path(args.rows) if args.rows else None)
    if args.fit:
        fit(rows)
    start = time.perf_counter()
    results = predict(rows)
    print_table(results)
    print_constants()
    print(f"({len(rows)} rows planned in {time.perf_counter() - start:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
