"""The emulated fabric, measured: bus bandwidth of a 64 MiB all-reduce across 2 nodes at several
shaped rates, and every collective kind's modelled intra/inter-node bytes against the node links'
own counters.

    launchers/slurm_up.sh --nodes 3 && export SLURM_CONF=/tmp/pinchpoint-cluster/slurm.conf
    python benchmarks/fabric_allreduce.py [--gbps 1,0.5,0.2] [--mib 64] [--reps 3]

Each rate is one Slurm job (2 nodes x 2 ranks, nodes to itself) running this file with
``--worker``: the first rank of each node shapes its link (pinchpoint.cluster.fabric, as a run
with fabric.gbps does), then gloo runs each collective once to warm up and ``--reps`` times
measured. All-reduce bus bandwidth = S / t x 2(n-1)/n (nccl-tests' definition; t = the slowest
rank's time per call), held against the shaped rate. For every kind, each node's eth0 (inter-
node) and lo (intra-node) tx bytes over the measured calls are held against the sum of its
ranks' modelled sends (pinchpoint.parallel.traffic). Target: bus bandwidth within 10 % of the
shaped rate, bytes within 5 % of the model.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from types import SimpleNamespace

KINDS = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "broadcast", "send_recv")


# --- the worker: one rank of the job ---------------------------------------------------------------
def worker(gbps: float | None, mib: int, reps: int) -> None:
    import socket
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    from pinchpoint.cluster import fabric
    from pinchpoint.cluster.accounting import expand_hostlist
    from pinchpoint.parallel.traffic import NodeMap, Traffic

    rank, world = int(os.environ["SLURM_PROCID"]), int(os.environ["SLURM_NTASKS"])
    local = int(os.environ["SLURM_LOCALID"])
    os.environ.update(MASTER_ADDR=expand_hostlist(os.environ["SLURM_JOB_NODELIST"])[0],
                      MASTER_PORT=os.environ.get("BENCH_PORT", "29577"),
                      GLOO_SOCKET_IFNAME="eth0")
    torch.set_num_threads(1)
    if local == 0:
        fabric.apply(SimpleNamespace(gbps=gbps, burst_kb=256), "eth0")
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=600))
    hosts: list = [None] * world
    dist.all_gather_object(hosts, socket.gethostname())
    traffic = Traffic(NodeMap(hosts), rank, "gloo")
    n, size = world, mib << 20
    x = torch.ones(size // 4)
    shard, full, out = torch.ones(size // 4 // n), torch.empty(size // 4), torch.empty(size // 4 // n)
    calls = {
        "all_reduce": (lambda: dist.all_reduce(x), size, {}),
        "all_gather": (lambda: dist.all_gather_into_tensor(full, shard), size // n, {}),
        "reduce_scatter": (lambda: dist.reduce_scatter_tensor(out, x), size, {}),
        "all_to_all": (lambda: dist.all_to_all_single(full, x), size, {}),
        "broadcast": (lambda: dist.broadcast(x, 0), size, {"root": 0}),
        # a ring of sends: rank r to r+1 (the pipeline's pattern), across the boundary twice
        "send_recv": (lambda: _ring_send(dist, x, rank, n), size, {"peer": (rank + 1) % n}),
    }
    results = {}
    for kind in KINDS:
        fn, nbytes, where = calls[kind]
        fn()
        dist.barrier()
        before = {dev: fabric.counters(dev) for dev in ("eth0", "lo")}
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        seconds = (time.perf_counter() - start) / reps
        dist.barrier()
        after = {dev: fabric.counters(dev) for dev in ("eth0", "lo")}
        split = traffic.split(kind, nbytes, **where)
        mine = {"host": hosts[rank], "local": local, "seconds": seconds,
                "model_inter": split.inter_node * reps, "model_intra": split.intra_node * reps,
                "eth0_tx": after["eth0"]["eth0_tx_bytes"] - before["eth0"]["eth0_tx_bytes"],
                "lo_tx": after["lo"]["lo_tx_bytes"] - before["lo"]["lo_tx_bytes"]}
        gathered: list = [None] * world
        dist.all_gather_object(gathered, mine)
        results[kind] = gathered
    if local == 0:
        fabric.apply(SimpleNamespace(gbps=None, burst_kb=256), "eth0")   # leave it as found
    if rank == 0:
        print("RESULT " + json.dumps({"gbps": gbps, "mib": mib, "ranks": n, "results": results}),
              flush=True)
    dist.destroy_process_group()


def _ring_send(dist, x, rank: int, n: int) -> None:
    ops = [dist.P2POp(dist.isend, x, (rank + 1) % n), dist.P2POp(dist.irecv, x.clone(),
                                                                 (rank - 1) % n)]
    for work in dist.batch_isend_irecv(ops):
        work.wait()


# --- the driver --------------------------------------------------------------------------------------
def run_job(gbps: float | None, mib: int, reps: int) -> dict:
    cmd = ["srun", "-N2", "--ntasks-per-node=2", "--exclusive", "--time=20",
           "--job-name=pinchpoint-fabric-bench", sys.executable, os.path.abspath(__file__),
           "--worker", "--mib", str(mib), "--reps", str(reps),
           "--gbps", "none" if gbps is None else str(gbps)]
    env = {**os.environ, "BENCH_PORT": str(29500 + int(time.time()) % 400)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise SystemExit(f"srun failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n"
                     f"{proc.stderr[-3000:]}")


def summarize(job: dict) -> dict:
    n, size = job["ranks"], job["mib"] << 20
    out = {"gbps": job["gbps"], "kinds": {}}
    for kind, ranks in job["results"].items():
        t = max(r["seconds"] for r in ranks)
        nodes: dict[str, dict] = {}
        for r in ranks:
            node = nodes.setdefault(r["host"], {"model_inter": 0.0, "model_intra": 0.0})
            node["model_inter"] += r["model_inter"]
            node["model_intra"] += r["model_intra"]
            if r["local"] == 0:
                node["eth0_tx"], node["lo_tx"] = r["eth0_tx"], r["lo_tx"]
        out["kinds"][kind] = {"seconds": t, "nodes": nodes}
        if kind == "all_reduce":
            out["busbw_MB_per_s"] = size / t * 2 * (n - 1) / n / 1e6
    if job["gbps"]:
        out["shaped_MB_per_s"] = job["gbps"] * 1e9 / 8 / 1e6
        out["busbw_over_shaped"] = out["busbw_MB_per_s"] / out["shaped_MB_per_s"]
    return out


def ratio(measured: float, model: float) -> str:
    """measured / model; '-' where the model says nothing goes that way (a few control bytes
    may: the broadcast's receivers acknowledge what they get)."""
    return f"{measured / model:.4f}" if model else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--gbps", default="none,1,0.5,0.2",
                    help="rates to shape to, Gbit/s per direction ('none' = unshaped)")
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", default="fabric_allreduce.json")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    rates = [None if r == "none" else float(r) for r in args.gbps.split(",")]
    if args.worker:
        worker(rates[0], args.mib, args.reps)
        return
    if not os.environ.get("SLURM_CONF"):
        raise SystemExit("set SLURM_CONF to the N-node cluster's (launchers/slurm_up.sh --nodes 3 "
                         "prints it)")
    print(f"load average before: {os.getloadavg()[0]:.1f} (2 cores: CPU-bound rates are "
          "contention, shaped ones are the link)")
    summaries = [summarize(run_job(g, args.mib, args.reps)) for g in rates]
    print(f"\n{args.mib} MiB all-reduce, 2 nodes x 2 ranks, gloo over eth0 (tc tbf), "
          f"{args.reps} calls after one warm-up")
    print(f"{'shaped':>10} {'t/call s':>9} {'busbw MB/s':>11} {'shaped MB/s':>12} {'ratio':>7}")
    for s in summaries:
        shaped = s.get("shaped_MB_per_s")
        print(f"{(str(s['gbps']) + ' Gbit') if s['gbps'] else 'unshaped':>10} "
              f"{s['kinds']['all_reduce']['seconds']:>9.3f} {s['busbw_MB_per_s']:>11.1f} "
              f"{shaped if shaped else float('nan'):>12.1f} "
              f"{s.get('busbw_over_shaped', float('nan')):>7.3f}")
    print("\nbytes each node sent over the measured calls: link counters vs the model "
          "(measured / modelled)")
    print(f"{'shaped':>10} {'kind':>15} {'node':>6} {'eth0 tx MB':>11} {'model MB':>9} "
          f"{'ratio':>7} {'lo tx MB':>9} {'model MB':>9} {'ratio':>7}")
    for s in summaries:
        for kind, k in s["kinds"].items():
            for host, node in sorted(k["nodes"].items()):
                print(f"{(str(s['gbps']) + ' Gbit') if s['gbps'] else 'unshaped':>10} "
                      f"{kind:>15} {host:>6} {node['eth0_tx'] / 1e6:>11.2f} "
                      f"{node['model_inter'] / 1e6:>9.2f} "
                      f"{ratio(node['eth0_tx'], node['model_inter']):>7} "
                      f"{node['lo_tx'] / 1e6:>9.2f} {node['model_intra'] / 1e6:>9.2f} "
                      f"{ratio(node['lo_tx'], node['model_intra']):>7}")
    with open(args.json, "w") as f:
        json.dump(summaries, f, indent=1)
    print(f"\nload average after: {os.getloadavg()[0]:.1f}; JSON: {args.json}")


if __name__ == "__main__":
    main()
