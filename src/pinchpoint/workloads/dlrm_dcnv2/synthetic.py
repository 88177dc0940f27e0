"""Synthetic Criteo multi-hot data labelled by a planted teacher, so the best AUROC is known.

The teacher is a fixed random DLRM-DCNv2 (small widths) over the same tables. Each table gets a
random importance (log-normal scale), ids follow a power law (``rows * u**skew``, popular ids
first, like Criteo's), dense features are log(count + 3) as in the reference preprocessing.
Labels are Bernoulli(sigmoid(teacher logit)): the label noise is the Bernoulli draw itself, so
the teacher's own probability is the Bayes-optimal score and its validation AUROC is the best
any model can reach. That number goes into the manifest; the proxy target sits a margin below.

Generated once per storage root (data/generated.py: one folder per parameter hash, checksum
manifest written last).
"""
from __future__ import annotations

import logging
import os
import time
from typing import Sequence

import numpy as np
import torch

from pinchpoint.data import generated
from pinchpoint.data.criteo import NUM_DENSE, day_files, write_day
from pinchpoint.data.generated import params_hash
from pinchpoint.storage.atomic import sha256_file
from pinchpoint.workloads.dlrm_dcnv2.model import DLRMDCNv2

log = logging.getLogger(__name__)
FORMAT_VERSION = 2  # bump when the generator changes, so old data is not reused


class Teacher:
    def __init__(self, rows: Sequence[int], hotness: Sequence[int], dim: int, logit_std: float,
                 logit_bias: float, seed: int):
        gen = torch.Generator().manual_seed(seed)
        self.model = DLRMDCNv2(rows, dim, [4 * dim, dim], 1, dim, [4 * dim, 1], seed=seed).eval()
        with torch.no_grad():
            for table, hot in zip(self.model.sparse.tables, hotness):
                importance = float(torch.randn((), generator=gen).exp())
                table.weight.normal_(0.0, importance / hot ** 0.5, generator=gen)
        self.logit_std, self.logit_bias = logit_std, logit_bias
        self.center, self.scale = 0.0, 1.0

    @torch.no_grad()
    def raw(self, dense: np.ndarray, sparse: Sequence[np.ndarray]) -> np.ndarray:
        out = []
        for lo in range(0, len(dense), 65536):
            d = torch.from_numpy(dense[lo:lo + 65536])
            s = [torch.from_numpy(x[lo:lo + 65536]) for x in sparse]
            out.append(self.model(d, s).numpy())
        return np.concatenate(out)

    def calibrate(self, raw: np.ndarray) -> None:
        self.center, self.scale = float(raw.mean()), float(raw.std() + 1e-12)

    def probability(self, raw: np.ndarray) -> np.ndarray:
        logit = (raw - self.center) / self.scale * self.logit_std + self.logit_bias
        return 1.0 / (1.0 + np.exp(-logit))


def _features(rng: np.random.Generator, n: int, rows: Sequence[int], hotness: Sequence[int],
              skew: float, count_scales: np.ndarray):
    counts = np.floor(rng.exponential(count_scales, size=(n, NUM_DENSE)))
    dense = np.log(counts + 3.0).astype(np.float32)
    sparse = [np.minimum((r * rng.random((n, h)) ** skew).astype(np.int32), r - 1)
              for r, h in zip(rows, hotness)]
    return dense, sparse


def generate(folder: str, params: dict) -> dict:
    """Write all days into ``folder`` (must not exist yet); returns the manifest."""
    rows, hotness = params["num_embeddings_per_feature"], params["multi_hot_sizes"]
    t = params["teacher"]
    teacher = Teacher(rows, hotness, t["embedding_dim"], t["logit_std"], t["logit_bias"], t["seed"])
    count_scales = np.random.default_rng(t["seed"]).lognormal(1.0, 1.0, NUM_DENSE)
    os.makedirs(folder)
    n, days = params["samples_per_day"], params["num_days"]
    files, positives, best_auroc = {}, 0, None
    for day in range(days):
        rng = np.random.default_rng([t["seed"], day])
        dense, sparse = _features(rng, n, rows, hotness, t["id_skew"], count_scales)
        raw = teacher.raw(dense, sparse)
        if day == 0:
            teacher.calibrate(raw)
        prob = teacher.probability(raw)
        labels = (rng.random(n) < prob).astype(np.int32).reshape(n, 1)
        positives += int(labels.sum())
        if day == days - 1:  # validation = first half of the last day
            from sklearn.metrics import roc_auc_score
            half = n // 2
            best_auroc = float(roc_auc_score(labels[:half, 0], prob[:half]))
        for path in write_day(folder, day, dense, labels, sparse).values():
            files[os.path.basename(path)] = {"bytes": os.path.getsize(path),
                                             "sha256": sha256_file(path)}
    return {"format": "criteo_multihot", "format_version": FORMAT_VERSION, "params": params,
            "params_hash": params_hash(params), "files": files, "best_auroc": best_auroc,
            "positive_rate": positives / (n * days), "created": time.time()}


def ensure(datasets_dir: str, params: dict, verify_checksums: bool = False) -> tuple[str, dict]:
    """Folder and manifest of the dataset for ``params``, generating it if absent (safe under
    concurrency and crashes: see data/generated.py)."""
    params = dict(params, format_version=FORMAT_VERSION)
    folder, manifest, fresh = generated.ensure(datasets_dir, "synthetic_criteo", params, generate,
                                               verify_checksums)
    if fresh:
        log.info("best reachable AUROC %.4f", manifest["best_auroc"])
    return folder, manifest


def expected_files(num_days: int) -> list[str]:
    return [os.path.basename(p) for d in range(num_days) for p in day_files("", d).values()]
