"""Side by side in one run (python benchmarks/dlrm_overhead_and_loader.py [--steps N]):

1. Instrumentation overhead: training samples/s of the full pinchpoint run (phase timer, MLPerf
   log, timeline, prefetching loader, MLflow with system metrics) against the same model, data
   and steps written as a bare PyTorch loop. Eval time is excluded from both. Runs alternate
   (bare, instrumented, bare, ...) and the medians are compared. Goal: >= 0.98x.
2. Loader: samples/s and MB/s of the Criteo reader with mmap on/off, cold cache (pages evicted
   with posix_fadvise) and warm, against the raw sequential read rate of the same files.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def compose_cfg(out: Path, steps: int, batch: int, prefetch: int = 2, system_metrics=True):
    from conftest import compose
    return compose([f"tracking.system_metrics={str(system_metrics).lower()}", f"train.max_steps={steps}",
                    "train.evals_per_epoch=1", f"dataset.batch_size={batch}",
                    f"dataset.prefetch={prefetch}", "train.progress_every_s=1000"], out)


def instrumented(cfg, out: Path) -> float:
    from pinchpoint.parallel.context import RankContext
    from pinchpoint.runner.info import JobInfo
    from pinchpoint.runner.session import Session

    job = JobInfo(output_dir=str(out / f"runs/bench-{time.time_ns()}"))
    os.makedirs(job.output_dir)
    session = Session(cfg, RankContext(), job)
    s = session.run()
    return s["samples"] / (s["train_loop_seconds"] - s["phase_eval_s"])


def bare(cfg, folder: str, steps: int) -> float:
    """The same training as a plain loop: memmap slices, forward, backward, Adagrad."""
    from pinchpoint.data.criteo import open_splits
    from pinchpoint.workloads.dlrm_dcnv2.model import DLRMDCNv2

    arch = cfg.model.proxy
    model = DLRMDCNv2(arch.num_embeddings_per_feature, arch.embedding_dim, arch.bottom_mlp,
                      arch.dcn_num_layers, arch.dcn_low_rank_dim, arch.top_mlp, seed=cfg.seed)
    opt = torch.optim.Adagrad(model.parameters(), lr=arch.learning_rate, eps=1e-8)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    b = cfg.dataset.batch_size
    started = time.perf_counter()
    train, _ = open_splits(folder, cfg.dataset.num_days, arch.multi_hot_sizes, cfg.dataset.mmap)
    for step in range(steps):
        batch = train.read(step * b, b)
        dense = torch.from_numpy(batch.dense)
        sparse = [torch.from_numpy(s) for s in batch.sparse]
        labels = torch.from_numpy(batch.labels[:, 0].astype(np.float32))
        opt.zero_grad(set_to_none=True)
        loss_fn(model(dense, sparse), labels).backward()
        opt.step()
    return steps * b / (time.perf_counter() - started)


def overhead(out: Path, steps: int, repeats: int, batch: int) -> None:
    from pinchpoint.data import synthetic_criteo

    cfg = compose_cfg(out, steps, batch)
    from pinchpoint.config import validate
    validate(cfg)
    folder, _ = synthetic_criteo.ensure(os.path.join(cfg.storage.root, "datasets"),
                                        _gen_params(cfg))
    synchronous = compose_cfg(out, steps, batch, prefetch=0)  # loads inline, like the bare loop
    quiet = compose_cfg(out, steps, batch, prefetch=0, system_metrics=False)
    results = {"bare PyTorch loop": [], "pinchpoint, prefetch=0": [],
               "pinchpoint, prefetch=0, no sys metrics": [],
               "pinchpoint, prefetch=2 (default)": []}
    for _ in range(repeats):
        results["bare PyTorch loop"].append(bare(cfg, folder, steps))
        results["pinchpoint, prefetch=0"].append(instrumented(synchronous, out))
        results["pinchpoint, prefetch=0, no sys metrics"].append(instrumented(quiet, out))
        results["pinchpoint, prefetch=2 (default)"].append(instrumented(cfg, out))
    medians = {k: statistics.median(v) for k, v in results.items()}
    base = medians["bare PyTorch loop"]
    print(f"\n== instrumentation overhead ({steps} steps x batch {batch}, {repeats} alternating "
          "runs each, medians; eval excluded) ==")
    for name, runs in results.items():
        print(f"{name:<40}{medians[name]:>10,.0f} samples/s  {medians[name] / base:6.3f}x bare"
              "   runs: " + ", ".join(f"{x:,.0f}" for x in runs))
    print("goal: pinchpoint, prefetch=0 >= 0.98x bare (same synchronous loading)")


def _gen_params(cfg) -> dict:
    from omegaconf import OmegaConf
    d, a = cfg.dataset, cfg.model.proxy
    return {"num_embeddings_per_feature": list(a.num_embeddings_per_feature),
            "multi_hot_sizes": list(a.multi_hot_sizes), "num_days": d.num_days,
            "samples_per_day": d.samples_per_day,
            "teacher": OmegaConf.to_container(d.teacher)}


def evict(files) -> None:
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)


def raw_read_mb_per_s(files) -> float:
    evict(files)
    started, total = time.perf_counter(), 0
    buf = bytearray(8 << 20)
    for path in files:
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                total += n
    return total / 1e6 / (time.perf_counter() - started)


def loader(out: Path, batch: int) -> None:
    from pinchpoint.data import criteo, synthetic_criteo

    cfg = compose_cfg(out, 1, batch)
    folder, _ = synthetic_criteo.ensure(os.path.join(cfg.storage.root, "datasets"),
                                        _gen_params(cfg))
    hot = list(cfg.model.proxy.multi_hot_sizes)
    days = cfg.dataset.num_days
    files = [p for d in range(days) for p in criteo.day_files(folder, d).values()]
    raw = raw_read_mb_per_s(files)
    print(f"\n== Criteo loader, batch {batch}, {days - 1} training days "
          f"({sum(os.path.getsize(f) for f in files) / 1e6:.0f} MB on disk) ==")
    print(f"{'raw sequential read (cold)':<32}{raw:>10,.0f} MB/s")
    import gc
    for mmap in (True, False):
        for cache in ("cold", "warm"):
            train = None
            gc.collect()  # drop the previous pass's memory maps: mapped pages cannot be evicted
            if cache == "cold":
                evict(files)
            started = time.perf_counter()
            train, _ = criteo.open_splits(folder, days, hot, mmap)
            nbytes = samples = 0
            for start in range(0, len(train) - batch + 1, batch):
                b = train.read(start, batch)
                nbytes += b.nbytes
                samples += batch
            seconds = time.perf_counter() - started
            print(f"{f'mmap={str(mmap).lower():<5} {cache}':<32}{nbytes / 1e6 / seconds:>10,.0f} "
                  f"MB/s {samples / seconds:>12,.0f} samples/s  ({nbytes / 1e6 / seconds / raw:.2f}x raw)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2048)
    args = parser.parse_args()
    import logging
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "outputs"
        overhead(out, args.steps, args.repeats, args.batch)
        loader(out, args.batch)


if __name__ == "__main__":
    main()
