"""Planner vs published MLPerf Training results: predicted time-to-train over the published
score for every row of benchmarks/data/published_results.md (v5.0, v5.1 and v6.0; its header
says where the scores come from), with the shipped constants, refitted, and cross-validated
leaving one submitter out.

    python benchmarks/planner_vs_published.py          # the table with the shipped constants
    python benchmarks/planner_vs_published.py --fit    # refit pinchpoint/plan/calibration.py
    python benchmarks/planner_vs_published.py --cv     # + leave-one-submitter-out ratios

Inputs per row that are not fitted, each read from the row's own columns (never from code that
recognises a system): the GPU preset (datasheet peaks and bandwidths, conf/gpu/*.yaml), the
layout, precision and per-submission facts (whose collectives, NCCL CTA caps, TP overlap off,
FP8 attention, FP8 parameter gather, recompute) from the submission's files (the source column
names file and lines), the model (conf/model/*.yaml through Hydra, as train.py composes it),
steps to converge from the RCP files of the row's ruleset, the benchmark's eval cadence.
Fitted: the constants in pinchpoint/plan/calibration.py (FITTED below), shared by every row of
an architecture and precision. A row whose layout was not read is listed, never fitted.

Step targets: a published time-to-train is the steps a submission's runs took x its step +
its evaluations; the steps vary with the seeds (Dell's 8 x B200 Llama 3.1 8B runs stopped at
184,320 samples, the RCP mean is 161,109), and fitting the step model to time-to-train alone
makes it absorb that. Where a row's result log gives its step (benchmarks/data/logged_steps.json,
written by logged_step_times.py --save from the logs in training_results_v5.0 and _v5.1), the
fit's residual is the planned step over the logged one; elsewhere (v6.0) the time-to-train
ratio. Both are reported; the goal and the cross-validation are on time-to-train.

Leave-one-submitter-out: for each submitter, the constants are refitted from the same neutral
start on every other submitter's rows and that submitter's rows predicted. A constant no row
left in the fold informs stays at the start value and the fold says so.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import math
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from pinchpoint.errors import ConfigError  # noqa: E402
from pinchpoint.plan import calibration  # noqa: E402
from pinchpoint.plan.hardware import preset, preset_for_device  # noqa: E402
from pinchpoint.workloads import plan_point  # noqa: E402
from logged_step_times import load_steps, step_key  # noqa: E402

COPY = ROOT / "benchmarks" / "data" / "published_results.md"
RULESETS = {"v5.0": "5.0.0", "v5.1": "5.1.0", "v6.0": "6.0.0"}
MODELS = {"deepseekv3_671b": "deepseek_v3_671b"}     # benchmark name -> conf/model/<name>
# what each key of the inputs column sets (plan.* unless it names another group)
INPUT_KEYS = {"stack": "plan.stack", "fp8_attention": "plan.fp8_attention",
              "fp8_param_gather": "plan.fp8_param_gather",
              "overlap_tp": "plan.overlap_tensor_parallel", "recompute": None, "asym": None,
              "healing_after": None, "overlap_ep": "plan.overlap_expert_parallel",
              "expert_load_imbalance": "plan.expert_load_imbalance",
              "recompute_modules": "plan.recompute_modules",
              "recompute_layers": "plan.recompute_layers",
              "fp8_activation_store": "plan.fp8_activation_store"}


# --- the rows -------------------------------------------------------------------------------
def load_rows(path: Path | None = None) -> list[dict]:
    """Every result row: | round | benchmark | submitter / system | accelerator | GPUs (nodes x
    per node) | GBS | score (min) | runs | layout | precision | inputs | source |."""
    rows = []
    for line in (path or COPY).read_text().splitlines():
        if not re.match(r"\| v\d", line):
            continue
        c = [x.strip() for x in line.strip().strip("|").split("|")]
        gpus = int(c[4].split()[0])
        nodes, per_node = map(int, re.search(r"\((\d+)x(\d+)\)", c[4]).groups())
        rows.append({"round": c[0], "benchmark": c[1], "system": c[2],
                     "submitter": c[2].split(" / ")[0], "accelerator": c[3], "gpus": gpus,
                     "nodes": nodes, "per_node": per_node, "global_batch": int(c[5]),
                     "published_min": float(c[6]), "runs": c[7],
                     "layout": _layout(c[8]), "precision": c[9], "inputs": _inputs(c[10]),
                     "source": c[11]})
    steps = load_steps()
    for r in rows:
        r["logged_step_s"] = steps.get(step_key(r["round"], r["benchmark"], r["system"]))
    return rows


def _layout(text: str) -> dict | None:
    """'tp4 pp8 vp8 cp2 ep1 mbs1' -> degrees; 'not read' -> None (listed, not planned)."""
    if text.startswith("not read"):
        return None
    return {k: int(v) for k, v in re.findall(r"([a-z]+)(\d+)", text)}


def _inputs(text: str) -> dict[str, str]:
    """'stack=megatron ctas.dp=8 overlap_tp=0' -> {key: value}; '-' -> {}."""
    return dict(item.split("=", 1) for item in text.split() if item != "-")


def preset_for(accelerator: str) -> str:
    """The conf/gpu preset of an accelerator column (plan/hardware.py's device-name mapping)."""
    name = preset_for_device(accelerator)
    if name is None:
        raise KeyError(accelerator)
    return name


def overrides_for(row: dict, precision: str | None = None) -> list[str]:
    """The Hydra overrides that plan this row (what `pinchpoint plan` would be given), in the
    row's precision or ``precision``."""
    bench, lay, n, gbs = row["benchmark"], row["layout"], row["gpus"], row["global_batch"]
    precision = precision or row["precision"]
    model = MODELS.get(bench, bench)
    out = [f"model={model}", "model.scale=full", f"+gpu={preset_for(row['accelerator'])}",
           f"mlperf.ruleset={RULESETS[row['round']]}", "plan.below_smallest_rcp=true"]
    if bench == "dlrm_dcnv2":     # HugeCTR: embeddings over every GPU, MLPs data-parallel
        return out + [f"parallel.dp_replicate={n}", f"parallel.ep={n}",
                      f"model.full.global_batch_size={gbs}"]
    tp, pp, cp, ep = (lay.get(k, 1) for k in ("tp", "pp", "cp", "ep"))
    dp = n // (tp * pp * cp)
    out += [f"parallel.dp_shard={dp}", f"parallel.tp={tp}", f"parallel.pp={pp}",
            f"parallel.cp={cp}", f"parallel.ep={ep}", f"plan.precision={precision}",
            f"plan.virtual_stages={lay.get('vp', 1)}"]
    if bench == "flux1":
        out.append(f"model.full.batch_size={gbs // dp}")
    else:
        out += [f"model.full.global_batch_size={gbs}",
                f"model.full.micro_batch_size={lay.get('mbs', 1)}"]
    inputs = row["inputs"]
    ctas = {k.removeprefix("ctas."): v for k, v in inputs.items() if k.startswith("ctas.")}
    out.append("plan.nccl_max_ctas={" + ",".join(f"{k}:{ctas.get(k, 'null')}" for k in
                                                  ("dp", "tp", "cp", "pp", "all")) + "}")
    for key, value in inputs.items():
        if key.startswith("ctas.") or INPUT_KEYS.get(key, "") is None:
            continue
        if key not in INPUT_KEYS:
            raise ValueError(f"{row['system']}: unknown input {key!r} (one of "
                             f"{sorted(INPUT_KEYS)} or ctas.<dp|tp|cp|pp|all>)")
        out.append(f"{INPUT_KEYS[key]}={value}")
    if "recompute" in inputs:
        where = "model.recompute" if bench in ("llama2_70b_lora",) else "model.full.recompute"
        out.append(f"{where}={inputs['recompute']}")
    elif bench.startswith("llama31"):
        out.append("model.full.recompute=false")
    if inputs.get("asym") == "true":
        out += ["plan.embedding_as_layer=true", "plan.loss_as_layer=true"]
    return out


_COMPOSED: dict[tuple, object] = {}


def row_config(row: dict, precision: str | None = None):
    """The row's run config, composed by Hydra from conf/ as `pinchpoint plan` composes it
    (once per row and precision: the fit plans each many times)."""
    from pinchpoint.sweepers.plan_grid import compose
    key = tuple(overrides_for(row, precision))
    if key not in _COMPOSED:
        _COMPOSED[key] = compose(list(key), conf=ROOT / "conf")
    return _COMPOSED[key]


# --- prediction -----------------------------------------------------------------------------
def predict(rows: list[dict], configs: list | None = None) -> list[dict]:
    out = []
    configs = configs or [row_config(row) for row in rows]
    for row, cfg in zip(rows, configs):
        p = plan_point(cfg)
        minutes = p.time_to_train.minutes
        healing = row["inputs"].get("healing_after")
        if healing:   # NVFP4 until step `healing`, FP8 after (NVIDIA's HEALING_ITER)
            t = p.time_to_train
            fp8 = plan_point(row_config(row, "fp8")).time_to_train
            minutes += max(0.0, t.steps - float(healing)) * (fp8.step_s - t.step_s) / 60
        logged = row.get("logged_step_s")
        # a row trained partly in another precision (healing) has no single planned step
        step_ratio = p.step_s / logged if logged and not healing else None
        out.append({**row, "predicted_min": minutes, "ratio": minutes / row["published_min"],
                    "step_ratio": step_ratio, "dominant": p.dominant, "fits": p.fits,
                    "plan": p})
    return out


def plannable(rows: list[dict]) -> list[dict]:
    """Rows with a layout that the planner accepts; the others get row["refused"] (why)."""
    out = []
    for r in rows:
        if r["layout"] is None:
            r["refused"] = "layout not read from the submission"
            continue
        try:
            plan_point(row_config(r))
        except ConfigError as err:
            r["refused"] = f"the planner refuses it: {err}"
            continue
        out.append(r)
    return out


def summary(ratios: list[float]) -> str:
    if not ratios:
        return "no rows"
    within = sum(0.75 <= x <= 1.25 for x in ratios)
    errors = [abs(x - 1) for x in ratios]
    logs = [abs(math.log(x)) for x in ratios]
    return (f"{within}/{len(ratios)} within +-25 % ({within / len(ratios):.0%}); median "
            f"|error| {statistics.median(errors):.1%}; mean |log ratio| "
            f"{sum(logs) / len(logs):.3f}; worst {min(ratios):.2f} / {max(ratios):.2f}")


def print_table(results: list[dict], cv: dict | None = None, skipped: list[dict] = ()) -> None:
    print(f"{'round':5} {'benchmark':15} {'system':44} {'GPUs':>5} {'GBS':>6} {'prec':5} "
          f"{'pred min':>9} {'pub min':>8} {'ratio':>6} {'LOSO':>6} {'step':>5}  dominant")
    for r in results:
        loso = f"{cv[id_of(r)]:6.2f}" if cv and id_of(r) in cv else f"{'':6}"
        step = f"{r['step_ratio']:5.2f}" if r.get("step_ratio") else f"{'':5}"
        print(f"{r['round']:5} {r['benchmark']:15} {r['system'][:44]:44} {r['gpus']:5d} "
              f"{r['global_batch']:6d} {r['precision'][:5]:5} {r['predicted_min']:9.2f} "
              f"{r['published_min']:8.2f} {r['ratio']:6.2f} {loso} {step}  {r['dominant']}"
              f"{'' if r['fits'] else ' (does not fit)'}")
    for r in skipped:
        print(f"{r['round']:5} {r['benchmark']:15} {r['system'][:44]:44} {r['gpus']:5d} "
              f"{r['global_batch']:6d} {'':5} {'':>9} {r['published_min']:8.2f}  not planned: "
              f"{r['refused'][:120]}")
    print(f"\nfitted:  {summary([r['ratio'] for r in results])}")
    if cv:
        print(f"LOSO:    {summary(list(cv.values()))}")
    steps = [r["step_ratio"] for r in results if r.get("step_ratio")]
    print(f"step:    {summary(steps)} (planned over logged step, the rows whose log gives it)")
    for bench in sorted({r["benchmark"] for r in results}):
        sub = [r for r in results if r["benchmark"] == bench]
        line = f"  {bench:15} fitted {summary([r['ratio'] for r in sub])}"
        if cv:
            line += f"\n  {'':15} LOSO   {summary([cv[id_of(r)] for r in sub])}"
        print(line)


def id_of(row: dict) -> tuple:
    return (row["round"], row["benchmark"], row["system"], row["gpus"])


def print_constants() -> None:
    print("\nconstants (pinchpoint/plan/calibration.py):")
    for (arch, prec), v in calibration.ACHIEVED_FRACTION.items():
        print(f"  achieved fraction {arch:9} {prec:5} {v:.3f}")
    for k, v in calibration.OVERLAP.items():
        print(f"  overlap {k:17} {v:.3f}")
    print(f"  memory fraction {calibration.MEMORY_FRACTION:.3f}; DLRM step overhead "
          f"{calibration.DLRM_STEP_OVERHEAD_S * 1e3:.3f} ms")
    print(f"  layer overhead {calibration.LAYER_OVERHEAD_S * 1e3:.3f} ms per layer and "
          f"micro-batch; an MoE layer's {calibration.MOE_LAYER_OVERHEAD_S * 1e3:.3f} ms more")
    print(f"  MMDiT (FLUX.1) matmuls at {calibration.MMDIT_EFFICIENCY:.3f} x the achieved fraction")


# --- fitting --------------------------------------------------------------------------------
# (table, key, which rows inform it: a predicate over a row)
FITTED = [
    ("ACHIEVED_FRACTION", ("hopper", "fp8"), lambda r: _arch(r) == "hopper"),
    ("ACHIEVED_FRACTION", ("blackwell", "fp8"),
     lambda r: _arch(r) == "blackwell" and r["precision"] in ("fp8", "mxfp8", "bf16")),
    ("ACHIEVED_FRACTION", ("blackwell", "fp4"),
     lambda r: _arch(r) == "blackwell" and r["precision"] in ("nvfp4", "mxfp4")),
    ("ACHIEVED_FRACTION", ("cdna4", "fp8"), lambda r: _arch(r) == "cdna4"),
    ("ACHIEVED_FRACTION", ("cdna3", "fp8"), lambda r: _arch(r) == "cdna3"),
    ("OVERLAP", "data_parallel", lambda r: r["benchmark"] != "dlrm_dcnv2"),
    ("DLRM_STEP_OVERHEAD_S", None, lambda r: r["benchmark"] == "dlrm_dcnv2"),
    ("LAYER_OVERHEAD_S", None, lambda r: r["benchmark"] != "dlrm_dcnv2"),
    ("MOE_LAYER_OVERHEAD_S", None,
     lambda r: r["benchmark"] in ("gpt_oss_20b", "deepseekv3_671b")),
    ("MMDIT_EFFICIENCY", None, lambda r: r["benchmark"] == "flux1"),
]
SCALARS = [name for name, key, _ in FITTED if key is None]   # module-level floats
BOUNDS = {"ACHIEVED_FRACTION": (0.05, 0.95), "OVERLAP": (0.0, 1.0),
          "DLRM_STEP_OVERHEAD_S": (0.0, 0.01), "LAYER_OVERHEAD_S": (0.0, 0.01),
          "MOE_LAYER_OVERHEAD_S": (0.0, 0.02), "MMDIT_EFFICIENCY": (0.3, 1.5)}
NEUTRAL_START = {"ACHIEVED_FRACTION": 0.4, "OVERLAP": 0.5, "DLRM_STEP_OVERHEAD_S": 0.0005,
                 "LAYER_OVERHEAD_S": 0.0005, "MOE_LAYER_OVERHEAD_S": 0.0005,
                 "MMDIT_EFFICIENCY": 1.0}


def _arch(row: dict) -> str:
    """The architecture of the row's preset (its calibrated fractions' key)."""
    return preset(preset_for(row["accelerator"])).architecture


def _set(values) -> None:
    for (name, key, _), v in zip(FITTED, values):
        if key is None:
            setattr(calibration, name, float(v))
        else:
            getattr(calibration, name)[key] = float(v)
    # Architecture-wide fallbacks follow their fitted precision ('assumed' in calibration.py).
    t = calibration.ACHIEVED_FRACTION
    for arch in ("hopper", "blackwell", "cdna4"):
        t[(arch, "bf16")] = t[(arch, "fp8")]
    t[("cdna4", "fp4")] = t[("cdna4", "fp8")]
    t[("cdna3", "bf16")] = t[("cdna3", "fp8")]


def _get() -> list[float]:
    return [getattr(calibration, n) if k is None else getattr(calibration, n)[k]
            for n, k, _ in FITTED]


@contextlib.contextmanager
def constants_kept():
    """Restore the shipped constants after a fit (the CV's folds refit them)."""
    saved = (copy.deepcopy(calibration.ACHIEVED_FRACTION), copy.deepcopy(calibration.OVERLAP),
             {name: getattr(calibration, name) for name in SCALARS})
    try:
        yield
    finally:
        calibration.ACHIEVED_FRACTION.clear()
        calibration.ACHIEVED_FRACTION.update(saved[0])
        calibration.OVERLAP.clear()
        calibration.OVERLAP.update(saved[1])
        for name, value in saved[2].items():
            setattr(calibration, name, value)


def fit(rows: list[dict], start: list[float] | None = None) -> tuple[list[float], list[str]]:
    """Least squares on log(planned / logged step) where a row's log gives its step, else
    log(predicted / published time-to-train), over ``rows``; returns the constants (also set)
    and the names of those no row informs (left at their start)."""
    from scipy.optimize import least_squares

    configs = [row_config(row) for row in rows]
    informed = [any(pred(r) for r in rows) for _, _, pred in FITTED]
    x = list(start or _get())
    free = [i for i, ok in enumerate(informed) if ok]

    def residuals(values):
        full = list(x)
        for i, v in zip(free, values):
            full[i] = v
        _set(full)
        return [math.log(r["step_ratio"] or r["ratio"]) for r in predict(rows, configs)]
    lo = [BOUNDS[FITTED[i][0]][0] for i in free]
    hi = [BOUNDS[FITTED[i][0]][1] for i in free]
    x0 = [min(max(x[i], a + 1e-6), b - 1e-6) for i, a, b in zip(free, lo, hi)]
    res = least_squares(residuals, x0, bounds=(lo, hi), diff_step=1e-3)
    for i, v in zip(free, res.x):
        x[i] = float(v)
    _set(x)
    unused = [f"{n}{'' if k is None else list(k) if isinstance(k, tuple) else [k]}"
              for (n, k, _), ok in zip(FITTED, informed) if not ok]
    return x, unused


def leave_one_submitter_out(rows: list[dict]) -> tuple[dict, dict]:
    """{row id: cross-validated ratio}, {submitter: constants its fold could not fit}."""
    start = [NEUTRAL_START[n] for n, _, _ in FITTED]
    ratios, unfitted = {}, {}
    for submitter in sorted({r["submitter"] for r in rows}):
        held = [r for r in rows if r["submitter"] == submitter]
        with constants_kept():
            _, unused = fit([r for r in rows if r["submitter"] != submitter], start)
            for r in predict(held):
                ratios[id_of(r)] = r["ratio"]
        if unused:
            unfitted[submitter] = unused
    return ratios, unfitted


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fit", action="store_true", help="refit the constants first")
    ap.add_argument("--cv", action="store_true", help="leave-one-submitter-out ratios too")
    ap.add_argument("--rows", help="a markdown table of published results in the same columns "
                    "(default: benchmarks/data/published_results.md)")
    args = ap.parse_args()
    rows = load_rows(Path(args.rows) if args.rows else None)
    ok = plannable(rows)
    start = time.perf_counter()
    if args.fit:
        values, _ = fit(ok)
        print("fitted (paste into pinchpoint/plan/calibration.py):")
        for (name, key, _), v in zip(FITTED, values):
            print(f"  {name}{'' if key is None else [key]} = {v:.5g}")
    cv, unfitted = leave_one_submitter_out(ok) if args.cv else (None, {})
    results = predict(ok)
    print_table(results, cv, [r for r in rows if "refused" in r])
    for submitter, names in unfitted.items():
        print(f"  LOSO fold {submitter}: no other row informs {', '.join(names)} (left at "
              "the neutral start)")
    print_constants()
    print(f"({len(ok)} rows planned, {len(rows) - len(ok)} listed, not planned; "
          f"{time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
