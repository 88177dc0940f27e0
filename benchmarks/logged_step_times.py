"""Logged step times of published MLPerf Training results, beside the planner's step: what
separates a step-model error from a convergence or evaluation one.

    python benchmarks/logged_step_times.py --repo PATH/training_results_v5.1 \\
        --benchmark llama2_70b_lora [--planned [--round v5.1]]

``--repo`` is a clone (or a bare git directory, read with ``git show``) of
github.com/mlcommons/training_results_vX.Y. Each system's first result log gives one figure:
- NeMo and the AMD/MangoBoost PyTorch implementations log ``tracked_stats`` with a
  ``throughput`` (samples/s): step = global batch / its median;
- NeMo's pretraining logs (Llama 3.1 8B and 405B, v5.1) log ``train_step_time`` every
  LOG_EVERY_N_STEPS steps: step = its median;
- HugeCTR's DLRM logs one throughput, at the end and over evaluations too: step = global
  batch x the median seconds per sample from one evaluation's end to the next one's start;
- later NeMo logs only ``train_loss`` every few steps with ``samples_count``: step = global
  batch x the median seconds per sample between two of them (evaluations fall between blocks,
  not between loss lines, so they do not count).
``--planned`` adds the planner's step for the rows of benchmarks/data/published_results.md of
that round and benchmark (their own layout and inputs), and the ratio. ``--layout`` instead
sets each row's layout beside the one its log says ran (``logged_layout``) and names what
differs: a configuration file in a submission's folder is not always the one that ran (Oracle's
8 x H200 LoRA folder holds config_DGXH100_1x8x4xtp4pp1cp1.sh; its logs say TP1 CP2).
Measured this way (v5.0 against v5.1, identical layout, precision and config): B200 8-GPU
LoRA 1.52 s -> 1.29 s; H200 3.13 s -> 3.15 s; GB200 CP8 0.24-0.26 s -> 0.20-0.21 s.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Optional

MARK = ":::MLLOG "
# The calibration's step targets (save_steps writes them, planner_vs_published reads them).
STEPS_FILE = Path(__file__).resolve().parent / "data" / "logged_steps.json"


def step_key(round_: str, benchmark: str, system: str) -> str:
    """A step target's key: 'round|benchmark|submitter / system' (the table's system column)."""
    return f"{round_}|{benchmark}|{system}"


def load_steps(path: Path = STEPS_FILE) -> dict[str, float]:
    """{step_key: seconds per step its result log records}; {} without the file."""
    if not path.exists():
        return {}
    return {k: v["step_s"] for k, v in json.loads(path.read_text()).items()}


def events(lines: Iterable[str]) -> Iterable[dict]:
    """The MLLOG records of a result file (rank prefixes like '0: ' allowed)."""
    for line in lines:
        i = line.find(MARK)
        if i < 0:
            continue
        try:
            yield json.loads(line[i + len(MARK):])
        except json.JSONDecodeError:
            continue


def step_seconds(lines: Iterable[str]) -> tuple[Optional[float], str]:
    """(seconds per optimizer step, how it was measured) or (None, why not)."""
    gbs, train_samples, rates, steps, losses, evals = None, None, [], [], [], []
    for e in events(lines):
        key, value, meta = e.get("key"), e.get("value"), e.get("metadata") or {}
        if key == "global_batch_size":
            gbs = value
        elif key == "train_samples":
            train_samples = value
        elif key in ("eval_start", "eval_stop"):
            evals.append((key, meta.get("samples_count"), meta.get("epoch_num"), e["time_ms"]))
        elif key == "tracked_stats" and isinstance(value, dict):
            if "throughput" in value:
                rates.append(float(value["throughput"]))
            elif "train_step_time" in value:
                steps.append(float(value["train_step_time"]))
            elif "train_loss" in value and "samples_count" in meta:
                losses.append((meta["samples_count"], e["time_ms"]))
    if not gbs:
        return None, "no global_batch_size"
    # a throughput logged while training; HugeCTR's DLRM logs one at the end, over the whole
    # run with its evaluations (nyx_n1: 2.42 ms a step, 2.15 ms between evaluations)
    if len(rates) >= 3:
        return gbs / statistics.median(rates), "throughput"
    if steps:
        return statistics.median(steps), "train_step_time"
    for spans, how in ((zip(losses, losses[1:]), "train_loss timestamps"),
                       (_between_evaluations(evals, train_samples), "between evaluations")):
        per_sample = [(t2 - t1) / 1000 / (p2 - p1) for (p1, t1), (p2, t2) in spans if p2 > p1]
        if per_sample:
            return gbs * statistics.median(per_sample), how
    return None, "no throughput, train_step_time or train_loss with samples_count"


def _between_evaluations(evals: list, train_samples: Optional[int]) -> list[tuple]:
    """((position, ms), (position, ms)) from one evaluation's end to the next one's start:
    training only. Positions are samples_count, or epoch_num x train_samples (DLRM's
    fractional epochs)."""
    def position(samples, epoch):
        if samples is not None:
            return float(samples)
        return float(epoch) * train_samples if epoch is not None and train_samples else None
    out = []
    for (k1, s1, e1, t1), (k2, s2, e2, t2) in zip(evals, evals[1:]):
        p1, p2 = position(s1, e1), position(s2, e2)
        if k1 == "eval_stop" and k2 == "eval_start" and p1 is not None and p2 is not None:
            out.append(((p1, t1), (p2, t2)))
    return out


# What ran, as NeMo prints it at start: its composed YAML ("0:   context_parallel_size: 2") and
# Megatron's TransformerConfig repr ("0:                 context_parallel_size=2,"). The first
# occurrence counts (the model's; the data configs below it repeat micro_batch_size).
LAYOUT_KEYS = {"tp": "tensor_model_parallel_size", "cp": "context_parallel_size",
               "mbs": "micro_batch_size", "fp8_attention": "fp8_dot_product_attention",
               "fp8_activation_store": "activation_func_fp8_input_store",
               "cuda_graph": "enable_cuda_graph", "fp8_param_gather": "fp8_param_gather"}
# The GEMM precision, from the composed YAML only ("0:   fp4: false"): Megatron's reprs print
# fp8='e4m3' and unrelated objects carry fp8=False.
PRECISION_KEYS = {"fp4": "fp4", "fp8": "fp8"}
_WORDS = {"true": True, "false": False, "null": None, "none": None}


def _value(text: str):
    return int(text) if text.isdigit() else _WORDS.get(text.lower(), text)


def logged_layout(lines: Iterable[str]) -> dict[str, tuple[object, int]]:
    """{name: (value, line number)} of the layout a NeMo log records (LAYOUT_KEYS), plus the
    MLLOG ``global_batch_size`` and ``gradient_accumulation_steps`` ("accumulation"). A log
    without NeMo's config dump (most NVIDIA and AMD logs) gives only the MLLOG two."""
    patterns = {name: re.compile(rf"\b{key}(?::\s*|=)([A-Za-z0-9]+)")
                for name, key in LAYOUT_KEYS.items()}
    patterns.update({name: re.compile(rf"^\s*(?:\d+:)?\s+{key}:\s*([A-Za-z0-9]+)\s*$")
                     for name, key in PRECISION_KEYS.items()})
    mllog = {"global_batch_size": "global_batch", "gradient_accumulation_steps": "accumulation"}
    found: dict[str, tuple[object, int]] = {}
    wanted = len(patterns) + len(mllog)
    for number, line in enumerate(lines, 1):
        if len(found) == wanted:
            break
        if MARK in line:
            for e in events([line]):
                name = mllog.get(e.get("key"))
                if name and name not in found:
                    found[name] = (e.get("value"), number)
            continue
        for name, pattern in patterns.items():
            m = pattern.search(line) if name not in found else None
            if m:
                found[name] = (_value(m.group(1)), number)
    return found


def layout_differences(row: dict, logged: dict[str, tuple[object, int]]) -> list[str]:
    """What a table row (planner_vs_published.load_rows) says that its log contradicts: TP,
    CP, micro-batch size, micro-batches per step (global batch / (micro-batch x dp)), FP8
    attention, the GEMM precision (fp4, fp8 or bf16) and, for FP8, the FP8 parameter gather,
    each as 'name table->log'."""
    lay, inputs = row["layout"] or {}, row["inputs"]
    tp, cp, pp, mbs = (lay.get(k, 1) for k in ("tp", "cp", "pp", "mbs"))
    table = {"tp": tp, "cp": cp, "mbs": mbs,
             "accumulation": row["global_batch"] * tp * cp * pp // (mbs * row["gpus"])}
    if "fp8_attention" in inputs:
        table["fp8_attention"] = inputs["fp8_attention"] == "true"
    precision = logged_precision(logged)
    if precision:
        table["precision"] = GEMM_PRECISION.get(row["precision"], row["precision"])
        logged = {**logged, "precision": (precision, None)}
    if table.get("precision") == "fp8" and "fp8_param_gather" in logged:
        table["fp8_param_gather"] = inputs.get("fp8_param_gather") == "true"
    out = []
    for name, want in table.items():
        if name in logged:
            got = logged[name][0]
            got = bool(got) if name in ("fp8_attention", "fp8_param_gather") else got
            if got != want:
                out.append(f"{name} {want}->{got}")
    return out


# The table's precision by the GEMM format NeMo's fp4/fp8 switches select (MXFP8 is an FP8
# recipe, NVFP4 the FP4 one).
GEMM_PRECISION = {"nvfp4": "fp4", "mxfp8": "fp8", "fp8": "fp8", "bf16": "bf16"}


def logged_precision(logged: dict[str, tuple[object, int]]) -> Optional[str]:
    """'fp4', 'fp8' or 'bf16' as the log's YAML fp4 and fp8 switches say; None where it
    prints neither."""
    fp4, fp8 = (logged.get(k, (None,))[0] for k in ("fp4", "fp8"))
    if fp4 is True:
        return "fp4"
    if fp8 is True:
        return "fp8"
    return "bf16" if fp8 is False else None


def _git(repo: Path, *args: str) -> Optional[str]:
    """git's output, or None where it fails (a snapshot may list a file it does not hold)."""
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else None


def result_files(repo: Path, benchmark: str) -> dict[tuple[str, str], tuple[str, Optional[str]]]:
    """{(submitter, system): (path, text of its first result log, None if not stored)} for
    ``benchmark``: result_0.txt, or the lowest-numbered one (Lambda's v5.1 runs start at 1)."""
    pattern = re.compile(rf"^([^/]+)/results/([^/]+)/{re.escape(benchmark)}/result_(\d+)\.txt$")
    first: dict[tuple[str, str], tuple[int, str]] = {}
    listing = _git(repo, "ls-tree", "-r", "--name-only", "HEAD")
    if listing is None:
        raise SystemExit(f"{repo}: not a git repository (a clone of training_results_vX.Y)")
    for path in listing.split():
        m = pattern.match(path)
        if m and (m.group(1, 2) not in first or int(m.group(3)) < first[m.group(1, 2)][0]):
            first[m.group(1, 2)] = (int(m.group(3)), path)
    return {key: (path, _git(repo, "show", f"HEAD:{path}")) for key, (_, path) in first.items()}


def save_steps(repo: Path, round_: str, benchmark: str, out: Path) -> int:
    """Merge every logged step of ``benchmark`` into the JSON file ``out`` (the calibration's
    step targets, benchmarks/data/logged_steps.json), keyed 'round|benchmark|submitter /
    system', each with how it was measured, the log and the repository's commit."""
    commit = (_git(repo, "rev-parse", "HEAD") or "").strip()
    data = json.loads(out.read_text()) if out.exists() else {}
    n = 0
    for (submitter, system), (path, text) in sorted(result_files(repo, benchmark).items()):
        step, how = step_seconds(text.splitlines()) if text is not None else (None, "")
        if step:
            data[step_key(round_, benchmark, f"{submitter} / {system}")] = {
                "step_s": float(f"{step:.5g}"), "how": how, "log": path, "commit": commit}
            n += 1
    out.write_text(json.dumps(dict(sorted(data.items())), indent=1) + "\n")
    return n


def _calibration():
    """benchmarks/planner_vs_published.py: the table's rows and how they are planned."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import planner_vs_published
    return planner_vs_published


def planned_steps(round_: str, benchmark: str) -> dict[str, float]:
    """{system (the table's 'submitter / system' tail): the planner's step} for the
    calibration rows of that round and benchmark."""
    pvp = _calibration()
    rows = [r for r in pvp.load_rows() if r["round"] == round_ and r["benchmark"] == benchmark]
    return {r["system"].split(" / ", 1)[1]: r["plan"].step_s
            for r in pvp.predict(pvp.plannable(rows))}


def compare_layouts(repo: Path, round_: str, benchmark: str) -> None:
    """Each table row of that round and benchmark beside the layout its first result log
    records; a row whose layout the table could not read says what its log does."""
    pvp = _calibration()
    logs = {system: text for (_, system), (_, text) in result_files(repo, benchmark).items()}
    print(f"{'system':44} {'logged (line)':58} differs")
    for row in pvp.load_rows():
        if row["round"] != round_ or row["benchmark"] != benchmark:
            continue
        text = logs.get(row["system"].split(" / ", 1)[1])
        if text is None:
            print(f"{row['system'][-44:]:44} {'no result log':58}")
            continue
        logged = logged_layout(text.splitlines())
        said = " ".join(f"{k}={v}:{n}" for k, (v, n) in logged.items() if k != "global_batch")
        differs = ("table: not read" if not row["layout"] else
                   ", ".join(layout_differences(row, logged)) or "-")
        print(f"{row['system'][-44:]:44} {said[:58]:58} {differs}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", required=True, help="a clone of mlcommons/training_results_vX.Y")
    ap.add_argument("--benchmark", required=True, help="e.g. llama2_70b_lora, flux1")
    ap.add_argument("--planned", action="store_true",
                    help="add the planner's step for the calibration rows of this round")
    ap.add_argument("--round", help="the results' round, e.g. v5.1 (default: read from the "
                    "repository's name, training_results_v5.1)")
    ap.add_argument("--layout", action="store_true",
                    help="the table rows' layouts beside what their logs say ran")
    ap.add_argument("--save", metavar="JSON",
                    help="merge the logged steps into this file (the calibration's step "
                    "targets: benchmarks/data/logged_steps.json)")
    args = ap.parse_args()
    repo = Path(args.repo)
    round_ = args.round
    if (args.planned or args.layout or args.save) and not round_:
        m = re.search(r"training_results_(v\d+\.\d+)", repo.resolve().as_posix())
        if not m:
            ap.error("--planned, --layout and --save need --round (the repository's name "
                     "does not say it)")
        round_ = m.group(1)
    if args.save:
        n = save_steps(repo, round_, args.benchmark, Path(args.save))
        print(f"{n} logged steps of {round_} {args.benchmark} saved to {args.save}")
        return 0
    if args.layout:
        compare_layouts(repo, round_, args.benchmark)
        return 0
    planned = planned_steps(round_, args.benchmark) if args.planned else {}
    print(f"{'submitter':24} {'system':44} {'logged s':>9} {'planned s':>9} {'ratio':>6}  how")
    for (submitter, system), (_, text) in sorted(result_files(repo, args.benchmark).items()):
        step, how = step_seconds(text.splitlines()) if text is not None else (None, "not stored")
        plan = planned.get(system)
        cells = [f"{v:9.3f}" if v else f"{'-':>9}" for v in (step, plan)]
        ratio = f"{plan / step:6.2f}" if plan and step else f"{'':6}"
        print(f"{submitter[:24]:24} {system[:44]:44} {cells[0]} {cells[1]} {ratio}  {how}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
