"""The planner meets the measurement: for every layout of the cross-node experiments, the
planner's communication seconds per step against what the runs on the emulated cluster
measured, at each shaped fabric rate.

    python benchmarks/emulated_links.py --json emulated_links.json      # the two link levels
    python benchmarks/planner_vs_emulated.py [--links emulated_links.json] \\
        [--examples /tmp/examples] [--store more/mlflow.db ...] [--rates 0.0625,0.25] \\
        [--json planner_vs_emulated.json]

Runs: the finished 2-node points of the four named sweeps (flux_hsdp_fabric, dlrm_ep_fabric,
llama_tp_across_nodes, dense_vs_moe_fabric) in their MLflow stores, EXAMPLES/<sweep>/mlflow.db
and any --store (read-only), each point's config_resolved.yaml and phase_summary.json from its
output folder.

Planner inputs, none fitted: the run's own config (model scale, degrees, batch, precision),
which groups cross nodes (parallel/placement.py, from the run's placement), and the System:
    intra-node rate   gloo's loopback rate between the ranks of a node (emulated_links.py)
    inter-node rate   the shaped rate x the link's measured payload fraction (emulated_links.py)
    hop latency       per level, a 4-byte all-reduce's step (emulated_links.py)
    gpus_per_nic      the ranks of a node (the emulated node has one link for all of them)
    collectives       gloo (flat rings in rank order, reduce-scatter as an all-reduce)
The planner's terms come from each workload's own planner (which collectives, how many bytes,
on which group) timed by plan/network.py: Llama through plan/llm.py (stack fsdp2), GPT-OSS
plan/moe.py, DLRM its step_terms (fp32 on the wire, as the runner sends), FLUX.1 its
communication_per_step.

Measured: the `communication` phase per step, the time ranks are blocked in collectives (gloo
on CPU overlaps nothing), training steps only: the phase also holds the final eval's
collectives (19 s of a 65 s Llama TP-across run at 0.0625 Gbit/s), which rank 0's per-kind
figures leave out, so rank 0's eval share comes off. It includes waiting for a slower rank, so
the figure held against the planner is the least-blocked rank's (communication_s_min / steps
less that share): the rank that waits least for the others' compute. Rank 0's per-kind seconds
(training only) show where it went. Where a point ran more than once (seeds, reruns), the
least-blocked repeat stands for it (the others' share of the machine only ever adds blocked
time); the JSON keeps every run.

The floor column is the least the same layout was blocked at any rate (the fast ones, where
the wire explains little of it): a point whose measured figure is under twice its floor is
marked 'waiting': CPU contention and stragglers on 2 shared cores, not the fabric, set it. A
point during which another Slurm job ran on the third node (sacct) shared those cores: marked
'shared' with the overlap in seconds (processes outside Slurm are not seen).

Target: planned / measured within 1 +- 0.25 at each layout's two slowest rates (--rates: a
fixed list instead), where the wire is most of what ranks wait for; every rate's count is
printed too.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sqlite3
import statistics
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pinchpoint.plan import network  # noqa: E402
from pinchpoint.plan.config_access import namespace  # noqa: E402
from pinchpoint.plan.hardware import system_from  # noqa: E402

SWEEPS = ("flux_hsdp_fabric", "dlrm_ep_fabric", "llama_tp_across_nodes", "dense_vs_moe_fabric")
KINDS = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "broadcast", "send_recv")
TARGET = 0.25
WAITING = 2.0     # measured under this x the layout's floor: waiting, not the wire, sets it


# --- inputs: the two link levels -----------------------------------------------------------------
def link_inputs(path: Path) -> dict:
    """From emulated_links.py's jobs (medians over message sizes of 1 MiB and up, and over
    jobs): the intra-node rate (MB/s per rank), the link's payload fraction of the shaped rate
    at each rate measured (and over all of them, for a rate not measured), the hop per level."""
    jobs = json.loads(path.read_text())
    intra, fractions, hop_in, hop_out = [], {}, [], []
    for job in jobs:
        big = [k for k in job["patterns"]["intra"] if int(k) >= 1 << 20]
        intra += [job["patterns"]["intra"][k]["rank_MB_per_s"] for k in big]
        if job.get("gbps"):
            shaped = job["gbps"] * 1e9 / 8 / 1e6
            fractions.setdefault(job["gbps"], []).extend(
                2 * job["patterns"]["inter"][k]["rank_MB_per_s"] / shaped for k in big)
        hop_in.append(job["intra_node_hop_s"])
        hop_out.append(job["inter_node_hop_s"])
    return {"intra_node_MB_per_s": statistics.median(intra),
            "link_over_shaped": {g: statistics.median(f) for g, f in fractions.items()},
            "link_over_shaped_all": statistics.median(sum(fractions.values(), [])),
            "intra_node_hop_s": statistics.median(hop_in),
            "inter_node_hop_s": statistics.median(hop_out), "jobs": len(jobs)}


def link_fraction(links: dict, gbps: float) -> float:
    """One payload fraction for every rate: the median over all rates and sizes (per rate the
    samples scatter with TCP's stalls more than they differ: 0.81-0.97 at 0.0625 Gbit/s)."""
    return links["link_over_shaped_all"]


def emulated_system(cfg, links: dict, gbps: float, ranks_per_node: int):
    """The run's GPU preset with the emulated cluster's links and gloo's algorithms."""
    return dataclasses.replace(
        system_from(cfg.gpu), intra_node_gb_per_s=links["intra_node_MB_per_s"] / 1e3,
        inter_node_gb_per_s=gbps / 8 * link_fraction(links, gbps), nvlink_domain=ranks_per_node,
        gpus_per_node=ranks_per_node, gpus_per_nic=ranks_per_node, collectives="gloo",
        intra_node_hop_s=links["intra_node_hop_s"], inter_node_hop_s=links["inter_node_hop_s"])


# --- the runs -------------------------------------------------------------------------------------
def finished_points(store: Path) -> list[tuple[Path, str]]:
    """(output folder, Slurm job id) of the store's finished point runs (read-only: sweeps may
    be writing)."""
    if not store.exists():
        return []
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    rows = db.execute("select t.value, j.value from runs r "
                      "join tags t on t.run_uuid = r.run_uuid "
                      "join tags k on k.run_uuid = r.run_uuid "
                      "left join tags j on j.run_uuid = r.run_uuid and j.key = 'slurm_job_id' "
                      "where r.status = 'FINISHED' and t.key = 'output_dir' and "
                      "k.key = 'pinchpoint.kind' and k.value = 'point'").fetchall()
    return [(Path(v), job) for v, job in rows if (Path(v) / "phase_summary.json").exists()]


def slurm_jobs() -> dict[str, tuple[float, float, str]]:
    """Every job in accounting: raw id -> (start, end, nodes); {} where sacct cannot say."""
    try:
        out = subprocess.run(["sacct", "-a", "-X", "-n", "-P", "-S", "2020-01-01",
                              "-o", "JobIDRaw,Start,End,NodeList"], capture_output=True,
                             text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    jobs = {}
    for line in out.splitlines():
        job, start, end, nodes = line.split("|")
        if start[:1].isdigit() and end[:1].isdigit():
            jobs[job] = (datetime.fromisoformat(start).timestamp(),
                         datetime.fromisoformat(end).timestamp(), nodes)
    return jobs


def shared_seconds(job: str | None, jobs: dict) -> float:
    """Seconds during which another job ran beside this one (the cores are the machine's)."""
    if job not in jobs:
        return math.nan
    start, end, _ = jobs[job]
    return sum(max(0.0, min(end, e) - max(start, s)) for other, (s, e, _) in jobs.items()
               if other != job)


def load_point(folder: Path):
    cfg = namespace(yaml.safe_load((folder / "config_resolved.yaml").read_text()))
    summary = json.loads((folder / "phase_summary.json").read_text())
    if cfg.cluster.nodes < 2 or not cfg.fabric.gbps:
        return None
    return cfg, summary


# --- the planner's terms --------------------------------------------------------------------------
def group_spans(cfg, ranks_per_node: int) -> dict:
    """network.Span of every group dimension as the run placed it (parallel/placement.py),
    plus the experts' replica group (ranks holding the same experts)."""
    from pinchpoint.parallel.placement import Placement, placement_of
    p = cfg.parallel
    sizes = {d: getattr(p, d) for d in ("pp", "dp_replicate", "dp_shard", "cp", "tp")}
    place = Placement(sizes, p.ep, cfg.cluster.nodes, placement_of(p))
    out = {}
    for dim in ("tp", "dp_shard", "dp_replicate", "ep"):
        if place.size(dim) > 1:
            out[dim] = _span(place.groups(dim), ranks_per_node)
    if p.ep > 1:   # member i of every EP group of a data-parallel row holds the same experts
        ep_groups = place.groups("ep")
        rows = [[g[i] for g in ep_groups if len(g) == p.ep] for i in range(p.ep)]
        out["expert_replicate"] = _span(rows, ranks_per_node)
    return out


def _span(groups, ranks_per_node: int):
    """The widest span among a dimension's groups (the one whose crossing paces the step)."""
    return max((network.group_span(g, ranks_per_node) for g in groups),
               key=lambda s: (s.outside, s.size))


def planned(cfg, system, spans: dict) -> dict[str, float]:
    """Seconds per step of each communication term the workload's planner plans."""
    name = cfg.model.name
    if name == "flux1":
        from pinchpoint.workloads.flux1.plan import communication_per_step
        return communication_per_step(cfg.model.proxy if cfg.model.scale == "proxy" else
                                      getattr(cfg.model, cfg.model.scale),
                                      cfg.parallel.dp_replicate, cfg.parallel.dp_shard, system,
                                      spans)
    if name == "dlrm_dcnv2":
        from pinchpoint.plan import config_access as access
        from pinchpoint.workloads.dlrm_dcnv2.plan import step_terms
        p = cfg.parallel
        world = p.world_size
        terms = step_terms(access.scale(cfg), cfg.dataset.batch_size, world, p.ep, system,
                           getattr(cfg.model, "num_dense_features", 13), wire_bytes=4)
        return dict(terms["communication_s"])
    if name.startswith("llama31"):
        from pinchpoint.plan import llm
        from pinchpoint.workloads.llama31 import plan as llama
        lay = dataclasses.replace(llama.layout_from(cfg), stack="fsdp2", spans=spans)
        terms = llm.step_terms(getattr(cfg.model, cfg.model.scale), lay, system)
        return {k: v for k, v in terms["communication_s"].items() if v}
    if name == "gpt_oss_20b":
        from pinchpoint.plan import moe
        from pinchpoint.workloads.gpt_oss_20b.plan import shape
        lay = moe.layout_from(cfg)
        lay.spans = spans
        comm = moe.communication_per_step(shape(getattr(cfg.model, cfg.model.scale)), lay,
                                          system)
        return {k: v["seconds"] for k, v in comm.items()}
    raise SystemExit(f"no planner wired here for {name}")


# --- a point --------------------------------------------------------------------------------------
def layout_name(cfg) -> str:
    p = cfg.parallel
    moved = {d: v for d, v in vars(p.placement).items()
             if v not in ("auto", "inside") or (d in ("dp_shard", "ep") and v == "inside")}
    text = f"{cfg.model.name} {p.name}" + (f" ep{p.ep}" if p.ep > 1 and "ep" not in p.name
                                            else "")
    if p.tp > 1 and p.dp_shard > 1 and "dp_shard" not in p.name:
        text += f" dp_shard{p.dp_shard}"
    text += "".join(f" {d}:{v}" for d, v in sorted(moved.items()))
    if cfg.model.name == "dlrm_dcnv2":
        text += f" batch {cfg.dataset.batch_size}"
    return text


def measured(summary: dict) -> dict:
    """Training collectives' blocked seconds per step. The communication phase also carries
    the eval's collectives (the profile's eval section is carved into it), the per-kind
    figures do not: rank 0's eval share (phase minus its kinds) comes off every rank's."""
    steps = summary["steps"]
    kinds = {k: {"seconds": summary[f"comm_{k}_seconds_per_step"],
                 "calls": summary[f"comm_{k}_calls_per_step"],
                 "bytes": summary[f"comm_{k}_bytes_per_step"],
                 "inter_node_bytes": summary[f"comm_{k}_inter_node_bytes_per_step"]}
             for k in KINDS if summary.get(f"comm_{k}_calls_per_step")}
    rank0 = sum(k["seconds"] for k in kinds.values())
    evals = max(0.0, summary["phase_communication_s"] / steps - rank0)
    return {"steps": steps, "eval_s": evals, "rank0_s": rank0,
            "min_s": summary["communication_s_min"] / steps - evals,
            "max_s": summary["communication_s_max"] / steps - evals,
            "kinds": kinds}


def evaluate(folder: Path, links: dict, shared_s: float = math.nan) -> dict | None:
    point = load_point(folder)
    if point is None:
        return None
    cfg, summary = point
    ranks_per_node = cfg.parallel.world_size // cfg.cluster.nodes
    system = emulated_system(cfg, links, cfg.fabric.gbps, ranks_per_node)
    spans = group_spans(cfg, ranks_per_node)
    terms = planned(cfg, system, spans)
    m = measured(summary)
    # the links' own counters over the loop (eval and the final gathers included)
    m["link_tx_bytes_per_node_step"] = summary.get("fabric_tx_bytes_measured", 0.0) / \
        cfg.cluster.nodes / m["steps"]
    predicted = sum(terms.values())
    return {"sweep": cfg.tracking.experiment, "layout": layout_name(cfg),
            "gbps": cfg.fabric.gbps, "folder": str(folder), "measured": m,
            "planned_terms_s": terms, "planned_s": predicted,
            "ratio": predicted / m["min_s"] if m["min_s"] else math.nan,
            "shared_s": shared_s,
            "spans": {k: dataclasses.asdict(v) for k, v in spans.items()}}


def least_disturbed(runs: list[dict]) -> list[dict]:
    """One row per (sweep, layout, rate): the repeat with the least blocked time, and how many
    repeats there were with their spread."""
    groups: dict = {}
    for run in runs:
        groups.setdefault((run["sweep"], run["layout"], run["gbps"]), []).append(run)
    rows = []
    for group in groups.values():
        best = min(group, key=lambda r: r["measured"]["min_s"])
        figures = [r["measured"]["min_s"] for r in group]
        rows.append({**best, "repeats": len(group), "repeats_min_s": [min(figures),
                                                                       max(figures)]})
    return rows


def add_floors(points: list[dict]) -> None:
    """Each layout's floor: the least it was blocked at any rate (at the fast rates, where the
    wire explains little of it; the least of them, as noise on 2 shared cores only adds)."""
    floors: dict = {}
    for p in points:
        best = floors.get(p["layout"])
        if best is None or p["measured"]["min_s"] < best["measured"]["min_s"]:
            floors[p["layout"]] = p
    for p in points:
        floor = floors[p["layout"]]
        p["floor_s"] = floor["measured"]["min_s"]
        p["floor_gbps"] = floor["gbps"]
        p["is_floor"] = p is floor
        p["waiting"] = p["measured"]["min_s"] < WAITING * p["floor_s"] and not p["is_floor"]


# --- output ---------------------------------------------------------------------------------------
ABBREVIATIONS = {"all_reduce": "AR", "all_gather": "AG", "reduce_scatter": "RS",
                 "all_to_all": "A2A", "broadcast": "BC", "send_recv": "P2P"}


def mark_targets(points: list[dict], rates: list[float] | None) -> None:
    """Which points the target is held at: ``rates``, else each layout's two slowest."""
    for p in points:
        if rates:
            p["target"] = p["gbps"] in rates
        else:
            mine = sorted({q["gbps"] for q in points if q["layout"] == p["layout"]})
            p["target"] = p["gbps"] in mine[:2]


def print_table(points: list[dict]) -> None:
    for sweep in SWEEPS:
        rows = sorted((p for p in points if p["sweep"] == sweep),
                      key=lambda p: (p["layout"], p["gbps"]))
        if not rows:
            continue
        print(f"\n{sweep}: communication seconds per step (* = a target point)")
        print(f"{'layout':42} {'Gbit/s':>7} {'measured':>8} {'rank 0':>7} {'floor':>6} "
              f"{'planned':>8} {'ratio':>6}  rank 0 by kind | planner's terms")
        for p in rows:
            print(_row(p, p["target"]))


def _row(p: dict, target: bool) -> str:
    m = p["measured"]
    kinds = " ".join(f"{ABBREVIATIONS[k]} {v['seconds']:.3f}" for k, v in m["kinds"].items())
    terms = " ".join(f"{k} {v:.3f}" for k, v in p["planned_terms_s"].items() if v)
    repeats = f" (best of {p['repeats']})" if p["repeats"] > 1 else ""
    return (f"{p['layout'][:42]:42} {p['gbps']:>6g}{'*' if target else ' '} "
            f"{m['min_s']:>8.4f} {m['rank0_s']:>7.4f} {p['floor_s']:>6.3f} "
            f"{p['planned_s']:>8.4f} {p['ratio']:>6.2f}  {kinds} | {terms}"
            + ("  (waiting)" if p["waiting"] else "  (floor)" if p["is_floor"] else "")
            + (f"  (shared {p['shared_s']:.0f} s)" if p["shared_s"] > 1 else "") + repeats)


def within(p: dict) -> bool:
    return abs(p["ratio"] - 1) <= TARGET


def print_summary(points: list[dict]) -> None:
    print(f"\nplanned / measured within +-{TARGET:.0%}, by rate:")
    for rate in sorted({p["gbps"] for p in points}):
        at = [p for p in points if p["gbps"] == rate]
        waiting = sum(p["waiting"] or p["is_floor"] for p in at)
        print(f"  {rate:>7g} Gbit/s: {sum(map(within, at))}/{len(at)} "
              f"({waiting} waiting-dominated or the floor)")
    chosen = [p for p in points if p["target"]]
    print(f"target points: {sum(map(within, chosen))}/{len(chosen)} within +-{TARGET:.0%}")
    for p in sorted(chosen, key=lambda p: (p["layout"], p["gbps"])):
        if not within(p):
            print(f"  outside: {p['layout']} at {p['gbps']:g} Gbit/s: ratio {p['ratio']:.2f}; "
                  + why(p))


def why(p: dict) -> str:
    """An under-prediction no larger than the layout's floor is blocked time the fabric does
    not explain (the planner has no term for it); anything else is the planner's."""
    gap = p["measured"]["min_s"] - p["planned_s"]
    if gap < 0:
        return f"over by {-gap:.3f} s"
    beside = "within" if gap <= p["floor_s"] else "beyond"
    return (f"under by {gap:.3f} s, {beside} the layout's floor of {p['floor_s']:.3f} s "
            f"({p['floor_gbps']:g} Gbit/s)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--links", default=str(ROOT / "benchmarks" / "data" / "emulated_links.json"),
                    help="benchmarks/emulated_links.py's JSON (default: the one measured here)")
    ap.add_argument("--examples", default="/tmp/examples", help="folder of the sweeps' stores")
    ap.add_argument("--store", action="append", default=[],
                    help="another MLflow sqlite store with points of these sweeps (repeatable)")
    ap.add_argument("--rates", help="rates to hold the target at (default: each layout's two "
                    "slowest)")
    ap.add_argument("--json", default="planner_vs_emulated.json")
    args = ap.parse_args()
    links = link_inputs(Path(args.links))
    rates = [float(r) for r in args.rates.split(",")] if args.rates else None
    fractions = ", ".join(f"{v:.3f} at {g:g}" for g, v in sorted(links["link_over_shaped"].items()))
    print(f"inputs ({links['jobs']} link jobs): intra-node {links['intra_node_MB_per_s']:.0f} "
          f"MB/s per rank; link = shaped x {links['link_over_shaped_all']:.3f} (by rate: "
          f"{fractions} Gbit/s); hops {links['intra_node_hop_s'] * 1e3:.3f} intra / "
          f"{links['inter_node_hop_s'] * 1e3:.3f} inter-node ms")
    stores = [Path(args.examples) / sweep / "mlflow.db" for sweep in SWEEPS] + \
        [Path(s) for s in args.store]
    jobs = slurm_jobs()
    runs = [p for store in stores for folder, job in finished_points(store)
            if (p := evaluate(folder, links, shared_seconds(job, jobs))) is not None
            and p["sweep"] in SWEEPS]
    points = least_disturbed(runs)
    add_floors(points)
    mark_targets(points, rates)
    print_table(points)
    print_summary(points)
    every = [{"sweep": r["sweep"], "layout": r["layout"], "gbps": r["gbps"],
              "folder": r["folder"], "shared_s": r["shared_s"], "planned_s": r["planned_s"],
              **{k: r["measured"][k] for k in ("min_s", "rank0_s", "eval_s")}} for r in runs]
    Path(args.json).write_text(json.dumps({"inputs": links, "rates": rates, "points": points,
                                           "runs": every}, indent=1, default=float))
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
