"""The emulated cluster's two link levels as gloo sees them, measured: the planner's inputs for
benchmarks/planner_vs_emulated.py.

    export SLURM_CONF=/tmp/pinchpoint-cluster/slurm.conf
    python benchmarks/emulated_links.py [--gbps 0.0625,0.25,1] [--json emulated_links.json]

One Slurm job per shaped rate (2 nodes x 2 ranks, nodes to itself, gloo over eth0, the link
shaped as a run with fabric.gbps shapes it). Every rank joins one 2-rank group at a time, both
groups running at once, as a layout's groups do:

    intra   {0,1} {2,3}   each node's pair over its loopback (the 'NVLink' level)
    inter   {0,2} {1,3}   pairs across the boundary: both ranks of a node share its one link

and times an all-reduce of 4 B (latency: gloo's ring takes 2 steps for 2 ranks, so half of it is
one hop) and of 1, 4 and 16 MiB (rate). Rate per rank = bytes each rank sends per call (S for a
2-rank ring all-reduce) / seconds per call (the slowest rank's, nccl-tests' convention); across
the boundary both ranks of a node send at once, so the link's rate is twice that. Reported: the
intra-node rate, the inter-node link rate over the shaped rate, the hop latency per level.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from types import SimpleNamespace

SIZES = (4, 1 << 20, 4 << 20, 16 << 20)
PATTERNS = {"intra": ([0, 1], [2, 3]), "inter": ([0, 2], [1, 3])}
MIN_SECONDS = 1.0     # per (pattern, size): enough calls to average the 2 cores' jitter


def worker(gbps: float | None) -> None:
    import torch.distributed as dist

    from pinchpoint.cluster import fabric
    from pinchpoint.cluster.accounting import expand_hostlist

    rank, world = int(os.environ["SLURM_PROCID"]), int(os.environ["SLURM_NTASKS"])
    local = int(os.environ["SLURM_LOCALID"])
    os.environ.update(MASTER_ADDR=expand_hostlist(os.environ["SLURM_JOB_NODELIST"])[0],
                      MASTER_PORT=os.environ.get("BENCH_PORT", "29611"),
                      GLOO_SOCKET_IFNAME="eth0")
    import torch
    torch.set_num_threads(1)
    if local == 0:
        fabric.apply(SimpleNamespace(gbps=gbps, burst_kb=256), "eth0")
    from datetime import timedelta
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=600))
    groups = {name: [dist.new_group(g) for g in pair] for name, pair in PATTERNS.items()}
    out = {}
    for name, pair in PATTERNS.items():
        mine = next(g for g, ranks in zip(groups[name], pair) if rank in ranks)
        out[name] = {str(size): _time_all_reduce(dist, torch, mine, size) for size in SIZES}
    gathered: list = [None] * world
    dist.all_gather_object(gathered, out)
    if local == 0:
        fabric.apply(SimpleNamespace(gbps=None, burst_kb=256), "eth0")   # leave it as found
    if rank == 0:
        print("RESULT " + json.dumps({"gbps": gbps, "ranks": gathered}), flush=True)
    dist.destroy_process_group()


def _time_all_reduce(dist, torch, group, size: int) -> float:
    """Seconds per call on this rank: one warm-up, then calls until MIN_SECONDS have passed,
    their count agreed with the group's peer first (both must make the same calls)."""
    x = torch.ones(max(1, size // 4))
    dist.all_reduce(x, group=group)
    start = time.perf_counter()
    dist.all_reduce(x, group=group)
    one = max(time.perf_counter() - start, 1e-6)
    n = torch.tensor([min(2000, max(3, int(MIN_SECONDS / one)))])
    dist.all_reduce(n, op=dist.ReduceOp.MAX, group=group)
    dist.barrier()
    start = time.perf_counter()
    for _ in range(int(n)):
        dist.all_reduce(x, group=group)
    return (time.perf_counter() - start) / int(n)


def run_job(gbps: float | None) -> dict:
    cmd = ["srun", "-N2", "--ntasks-per-node=2", "--exclusive", "--time=20",
           "--job-name=pinchpoint-links", sys.executable, os.path.abspath(__file__), "--worker",
           "--gbps", "none" if gbps is None else str(gbps)]
    env = {**os.environ, "BENCH_PORT": str(29500 + int(time.time()) % 400)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise SystemExit(f"srun failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n"
                     f"{proc.stderr[-3000:]}")


def summarize(job: dict) -> dict:
    """Per pattern and size: seconds per call (slowest rank) and the rate each rank sends at."""
    out = {"gbps": job["gbps"], "patterns": {}}
    for name in PATTERNS:
        rows = {}
        for size in SIZES:
            t = max(r[name][str(size)] for r in job["ranks"])
            rows[size] = {"seconds": t, "rank_MB_per_s": size / t / 1e6}
        out["patterns"][name] = rows
    big = max(SIZES)
    intra, inter = out["patterns"]["intra"], out["patterns"]["inter"]
    out["intra_node_MB_per_s"] = intra[big]["rank_MB_per_s"]
    out["intra_node_hop_s"] = intra[4]["seconds"] / 2
    out["inter_node_hop_s"] = inter[4]["seconds"] / 2
    out["link_MB_per_s"] = 2 * inter[big]["rank_MB_per_s"]   # both ranks of a node send
    if job["gbps"]:
        out["shaped_MB_per_s"] = job["gbps"] * 1e9 / 8 / 1e6
        out["link_over_shaped"] = out["link_MB_per_s"] / out["shaped_MB_per_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--gbps", default="0.0625,0.25,1",
                    help="shaped rates, Gbit/s ('none' = unshaped)")
    ap.add_argument("--json", default="emulated_links.json")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    rates = [None if r == "none" else float(r) for r in args.gbps.split(",")]
    if args.worker:
        worker(rates[0])
        return
    if not os.environ.get("SLURM_CONF"):
        raise SystemExit("set SLURM_CONF to the N-node cluster's (launchers/slurm_up.sh --nodes 3 "
                         "prints it)")
    summaries = [summarize(run_job(g)) for g in rates]
    print(f"{'shaped':>9} {'pattern':>7} {'bytes':>9} {'s/call':>9} {'MB/s/rank':>10}")
    for s in summaries:
        for name, rows in s["patterns"].items():
            for size, r in rows.items():
                print(f"{str(s['gbps']):>9} {name:>7} {size:>9} {r['seconds']:>9.5f} "
                      f"{r['rank_MB_per_s']:>10.2f}")
    for s in summaries:
        print(f"\n{s['gbps']} Gbit: intra-node {s['intra_node_MB_per_s']:.1f} MB/s per rank, "
              f"hop {s['intra_node_hop_s'] * 1e3:.3f} ms; link {s['link_MB_per_s']:.1f} MB/s"
              + (f" = {s['link_over_shaped']:.3f} x shaped" if s.get("link_over_shaped") else "")
              + f", hop {s['inter_node_hop_s'] * 1e3:.3f} ms")
    with open(args.json, "w") as f:
        json.dump(summaries, f, indent=1)
    print(f"\nJSON: {args.json}")


if __name__ == "__main__":
    main()
