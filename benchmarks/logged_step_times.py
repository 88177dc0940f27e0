"""Logged step times of published MLPerf Training results, beside the planner's step: what
separates a step-model error from a convergence or evaluation one.

    python benchmarks/logged_step_times.py --repo PATH/training_results_v5.1 \\
        --benchmark llama2_70b_lora [--planned [--round v5.1]]

``--repo`` is a clone (or a bare git directory, read with ``git show``) of
github.com/mlcommons/training_results_vX.Y. Each system's result_0.txt gives one figure:
- NeMo and the AMD/MangoBoost PyTorch implementations log ``tracked_stats`` with a
  ``throughput`` (samples/s): step = global batch / its median;
- later NeMo logs only ``train_loss`` every few steps with ``samples_count``: step = global
  batch x the median seconds per sample between two of them (evaluations fall between blocks,
  not between loss lines, so they do not count).
``--planned`` adds the planner's step for the rows of benchmarks/data/published_results.md of
that round and benchmark (their own layout and inputs), and the ratio.
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
    gbs, rates, losses = None, [], []
    for e in events(lines):
        key, value, meta = e.get("key"), e.get("value"), e.get("metadata") or {}
        if key == "global_batch_size":
            gbs = value
        elif key == "tracked_stats" and isinstance(value, dict):
            if "throughput" in value:
                rates.append(float(value["throughput"]))
            elif "train_loss" in value and "samples_count" in meta:
                losses.append((meta["samples_count"], e["time_ms"]))
    if not gbs:
        return None, "no global_batch_size"
    if rates:
        return gbs / statistics.median(rates), "throughput"
    per_sample = [(t2 - t1) / 1000 / (s2 - s1)
                  for (s1, t1), (s2, t2) in zip(losses, losses[1:]) if s2 > s1]
    if per_sample:
        return gbs * statistics.median(per_sample), "train_loss timestamps"
    return None, "no throughput or train_loss with samples_count"


def _git(repo: Path, *args: str) -> Optional[str]:
    """git's output, or None where it fails (a snapshot may list a file it does not hold)."""
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else None


def result_files(repo: Path, benchmark: str) -> dict[tuple[str, str], Optional[str]]:
    """{(submitter, system): text of its result_0.txt, None if not stored} for ``benchmark``."""
    pattern = re.compile(rf"^([^/]+)/results/([^/]+)/{re.escape(benchmark)}/result_0\.txt$")
    out = {}
    listing = _git(repo, "ls-tree", "-r", "--name-only", "HEAD")
    if listing is None:
        raise SystemExit(f"{repo}: not a git repository (a clone of training_results_vX.Y)")
    for path in listing.split():
        m = pattern.match(path)
        if m:
            out[m.groups()] = _git(repo, "show", f"HEAD:{path}")
    return out


def planned_steps(round_: str, benchmark: str) -> dict[str, float]:
    """{system (the table's 'submitter / system' tail): the planner's step} for the
    calibration rows of that round and benchmark."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import planner_vs_published as pvp
    rows = [r for r in pvp.load_rows() if r["round"] == round_ and r["benchmark"] == benchmark]
    return {r["system"].split(" / ", 1)[1]: r["plan"].step_s
            for r in pvp.predict(pvp.plannable(rows))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", required=True, help="a clone of mlcommons/training_results_vX.Y")
    ap.add_argument("--benchmark", required=True, help="e.g. llama2_70b_lora, flux1")
    ap.add_argument("--planned", action="store_true",
                    help="add the planner's step for the calibration rows of this round")
    ap.add_argument("--round", help="the results' round, e.g. v5.1 (default: read from the "
                    "repository's name, training_results_v5.1)")
    args = ap.parse_args()
    repo = Path(args.repo)
    round_ = args.round
    if args.planned and not round_:
        m = re.search(r"training_results_(v\d+\.\d+)", repo.resolve().as_posix())
        if not m:
            ap.error("--planned needs --round (the repository's name does not say it)")
        round_ = m.group(1)
    planned = planned_steps(round_, args.benchmark) if args.planned else {}
    print(f"{'submitter':24} {'system':44} {'logged s':>9} {'planned s':>9} {'ratio':>6}  how")
    for (submitter, system), text in sorted(result_files(repo, args.benchmark).items()):
        step, how = step_seconds(text.splitlines()) if text is not None else (None, "not stored")
        plan = planned.get(system)
        cells = [f"{v:9.3f}" if v else f"{'-':>9}" for v in (step, plan)]
        ratio = f"{plan / step:6.2f}" if plan and step else f"{'':6}"
        print(f"{submitter[:24]:24} {system[:44]:44} {cells[0]} {cells[1]} {ratio}  {how}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
