"""What recording torch's own collectives costs: tokens/s of the Llama 3.1 8B proxy shape on 2 gloo
ranks, per layout (FSDP2, TP 2 with sequence parallel, PP 2 1F1B), with and without
``profile.trace_torch_collectives()``, in alternating rounds (off/on, then on/off, ...) so drift
on a shared machine hits both sides alike. Both sides run the runner's phase marks; only the
trace differs. Also prints what the trace saw: communication fraction and bytes per step per
kind beside the analytic volume (tests/test_comm_trace.py explains the formulas).

    python benchmarks/comm_trace_overhead.py [--rounds 8] [--steps 4]

On a shared 2-core machine the step-time spread swamps a small cost, so the trace's cost per
collective is also measured where noise is low (one process, a 1-rank gloo group, thousands of
tiny all-reduces and functional all-reduces, traced and not, alternating), and multiplied by
each layout's collectives per step to give the expected slowdown.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import test_comm_trace as layouts  # noqa: E402  (the layouts and volumes the tests check)

from pinchpoint.parallel.collectives import CollectiveProfile  # noqa: E402
from pinchpoint.telemetry.phases import PhaseTimer  # noqa: E402
from pinchpoint.workloads.llama31.model import LlamaArgs  # noqa: E402

# conf/model/llama31_8b.yaml, proxy: GBS 16 of micro-batches of 8, seq 128.
PROXY = LlamaArgs(dim=128, n_layers=2, n_heads=8, n_kv_heads=2, ffn_dim=448, vocab_size=256,
                  max_seq_len=8192)
GLOBAL_BATCH, MICRO_BATCH, SEQ = 16, 8, 128
LAYOUTS = ("fsdp2", "tp2", "pp2")


def shape(layout: str) -> "layouts.Shape":
    """FSDP2 splits the global batch over its 2 replicas; TP and PP ranks see all of it."""
    local = GLOBAL_BATCH // 2 if layout == "fsdp2" else GLOBAL_BATCH
    return layouts.Shape(PROXY, SEQ, MICRO_BATCH, local // MICRO_BATCH)


def timed_steps(step, optimizer, data, profile: CollectiveProfile, traced: bool) -> float:
    phases = profile.phases
    dist.barrier()
    start = time.perf_counter()
    with profile.trace_torch_collectives() if traced else contextlib.nullcontext():
        for tokens in data:
            phases.mark("data_wait")
            optimizer.zero_grad()
            step(tokens)
            phases.mark("forward_backward")
            optimizer.step()
            phases.mark("optimizer")
            phases.end_step(0)
    return time.perf_counter() - start


def run_layout(layout: str, rank: int, rounds: int, steps: int) -> dict:
    s = shape(layout)
    model, step = layouts.build(layout, rank, s)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    data = layouts.batches(s, steps)
    for tokens in data[:2]:                         # warm-up: allocator, pipeline shapes
        step(tokens)
        optimizer.step()
    phases = PhaseTimer()
    phases.begin()
    traced_profile = CollectiveProfile(phases)
    seconds = {"off": [], "on": []}
    for r in range(rounds):
        for mode in (("off", "on") if r % 2 == 0 else ("on", "off")):
            profile = traced_profile if mode == "on" else CollectiveProfile(phases)
            seconds[mode].append(timed_steps(step, optimizer, data, profile, mode == "on"))
    traced_steps = rounds * steps
    return {"seconds": seconds, "per_step": traced_profile.per_step(traced_steps),
            "communication_s": sum(v.seconds for v in traced_profile.stats.values()),
            "traced_s": sum(seconds["on"]), "analytic": layouts.analytic_bytes(layout, s)}


def _rank(rank: int, store: str, out: str, rounds: int, steps: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", store=dist.FileStore(store, 2), rank=rank, world_size=2)
    try:
        result = {layout: run_layout(layout, rank, rounds, steps) for layout in LAYOUTS}
        if rank == 0:
            with open(out, "w") as f:
                json.dump(result, f)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def per_call_cost(calls: int = 2000, rounds: int = 9) -> dict[str, float]:
    """Seconds the trace adds to one synchronous c10d all-reduce and to one functional
    all-reduce + wait (DTensor's path): medians over alternating rounds."""
    import torch.distributed._functional_collectives as funcol
    folder = tempfile.mkdtemp(prefix="comm_trace_cost_")
    dist.init_process_group("gloo", store=dist.FileStore(os.path.join(folder, "store"), 1),
                            rank=0, world_size=1)
    try:
        tensor, group = torch.ones(1), dist.group.WORLD
        ops = {"c10d": lambda: dist.all_reduce(tensor),
               "functional": lambda: funcol.all_reduce(tensor, "sum", group).wait()}
        out = {}
        for name, op in ops.items():
            seconds = {False: [], True: []}
            for r in range(rounds):
                for traced in ((False, True) if r % 2 == 0 else (True, False)):
                    phases = PhaseTimer()
                    phases.begin()
                    profile = CollectiveProfile(phases)
                    with profile.trace_torch_collectives() if traced else contextlib.nullcontext():
                        start = time.perf_counter()
                        for _ in range(calls):
                            op()
                        seconds[traced].append((time.perf_counter() - start) / calls)
            out[name] = statistics.median(seconds[True]) - statistics.median(seconds[False])
            out[f"{name}_untraced"] = statistics.median(seconds[False])
        return out
    finally:
        dist.destroy_process_group()


def report(results: dict, steps: int, cost: dict[str, float]) -> None:
    tokens = GLOBAL_BATCH * SEQ * steps
    print(f"Llama 3.1 8B proxy shape, 2 gloo ranks, {os.cpu_count()} cores; "
          f"{len(results['fsdp2']['seconds']['on'])} alternating rounds of {steps} steps")
    print(f"{'layout':<7}{'tokens/s off':>22}{'tokens/s on':>22}{'on/off':>8}"
          f"{'paired on/off':>22}{'comm frac':>10}")
    for layout, r in results.items():
        off = [tokens / x for x in r["seconds"]["off"]]
        on = [tokens / x for x in r["seconds"]["on"]]
        paired = sorted(a / b for a, b in zip(on, off))
        q = statistics.quantiles(paired, n=4) if len(paired) > 1 else [paired[0]] * 3
        print(f"{layout:<7}{_spread(off):>22}{_spread(on):>22}"
              f"{statistics.median(on) / statistics.median(off):>8.3f}"
              f"{f'{q[1]:.3f} [{q[0]:.3f}-{q[2]:.3f}]':>22}"
              f"{r['communication_s'] / r['traced_s']:>10.3f}")
    print(f"\ntrace cost per collective (1-rank gloo, medians): c10d all_reduce "
          f"+{cost['c10d'] * 1e6:.1f} us (on {cost['c10d_untraced'] * 1e6:.1f} us), "
          f"functional all_reduce + wait +{cost['functional'] * 1e6:.1f} us "
          f"(on {cost['functional_untraced'] * 1e6:.1f} us)")
    each = max(cost["c10d"], cost["functional"])
    for layout, r in results.items():
        calls = sum(v for k, v in r["per_step"].items() if k.endswith("_calls_per_step"))
        step_s = statistics.median(r["seconds"]["off"]) / steps
        print(f"  {layout:<6}{calls:5.0f} collectives/step x {each * 1e6:.1f} us = "
              f"{calls * each * 1e3:.2f} ms per {step_s * 1e3:.0f} ms step: "
              f"expected slowdown {calls * each / step_s:.2%}")
    print("\nbytes per step on rank 0, traced vs analytic")
    for layout, r in results.items():
        for kind, volume in r["analytic"].items():
            got = r["per_step"][f"comm_{kind}_bytes_per_step"]
            calls = r["per_step"][f"comm_{kind}_calls_per_step"]
            print(f"  {layout:<6}{kind:<16}{got:>14,.0f}{volume:>14,.0f}  "
                  f"ratio {got / volume:.4f}  ({calls:.0f} calls/step)")


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.0f} [{min(values):.0f}-{max(values):.0f}]"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="comm_trace_overhead_")
    out = os.path.join(folder, "result.json")
    mp.start_processes(_rank, args=(os.path.join(folder, "store"), out, args.rounds, args.steps),
                       nprocs=2, start_method="spawn", join=True)
    torch.set_num_threads(1)
    cost = per_call_cost()
    with open(out) as f:
        report(json.load(f), args.steps, cost)


if __name__ == "__main__":
    main()
