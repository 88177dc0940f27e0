"""A synthetic token corpus with known entropy, written as Megatron indexed datasets.

The planted teacher is a sparse second-order Markov source over the model's vocabulary:
after token a (two back: b) the next token is one of ``successors`` fixed random tokens of a,
chosen with probability softmax(g1[a, j] + g2[b, succ[a, j]]), and a document ends (EOD token)
with a fixed hazard. The b-term is what makes the target meaningful: a bigram model (no
attention to two tokens back) cannot reach it; the manifest records both numbers. Documents are
independent (context resets after EOD), so Megatron's shuffling and packing of documents does not
change the source, and the teacher's own negative log-likelihood of each validation token is the
best any model can do (a lower bound: a model does not see the token before a sample's first).

Generated once per storage root, in a folder named by a hash of the parameters: temp folder,
files, manifest last, rename (the synthetic_criteo pattern); a lock serialises generators.
"""
from __future__ import annotations

import logging
import os
import time

import numpy as np

from pinchpoint.data import megatron
from pinchpoint.data import generated
from pinchpoint.data.generated import params_hash
from pinchpoint.storage.atomic import sha256_file

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
TRAIN, VALIDATION = "synthetic_c4_train_text_document", "synthetic_c4_validation_text_document"


class Teacher:
    def __init__(self, vocab_size: int, successors: int, g1_std: float, g2_std: float,
                 g2_rank: int, mean_doc_tokens: float, seed: int):
        rng = np.random.default_rng(seed)
        self.vocab, self.eod = vocab_size, vocab_size - 1
        words = vocab_size - 1  # every token but EOD can follow
        self.succ = np.stack([rng.choice(words, successors, replace=False)
                              for _ in range(vocab_size)]).astype(np.int64)
        self.g1 = rng.normal(0.0, g1_std, (vocab_size, successors))
        # Low rank: a small decoder can represent it (a full-rank V x V table would need d ~ V).
        u, w = rng.normal(size=(vocab_size, g2_rank)), rng.normal(size=(vocab_size, g2_rank))
        self.g2 = g2_std * (u @ w.T) / np.sqrt(g2_rank)
        self.hazard = 1.0 / mean_doc_tokens

    def probabilities(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """(n, successors) probabilities of succ[a] given previous a and two-back b (no EOD)."""
        b = np.where(a == self.eod, self.eod, b)  # a document's context resets at EOD
        logits = self.g1[a] + self.g2[b[:, None], self.succ[a]]
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(1, keepdims=True)

    def streams(self, n_streams: int, steps: int, rng: np.random.Generator) -> np.ndarray:
        """(n_streams, steps) tokens, every stream starting right after an EOD."""
        out = np.empty((n_streams, steps), dtype=np.int64)
        a = np.full(n_streams, self.eod)
        b = np.full(n_streams, self.eod)
        for t in range(steps):
            p = self.probabilities(a, b)
            choice = (p.cumsum(1) < rng.random((n_streams, 1))).sum(1)
            nxt = self.succ[a, np.minimum(choice, p.shape[1] - 1)]
            end = (a != self.eod) & (rng.random(n_streams) < self.hazard)
            nxt = np.where(end, self.eod, nxt)
            out[:, t] = nxt
            b, a = a, nxt
        return out

    def nll(self, tokens: np.ndarray) -> np.ndarray:
        """-log p(tokens[t] | tokens[t-1], tokens[t-2]) for t >= 2 of one document stream that
        starts after an EOD (entries 0 and 1 use EOD as the missing context)."""
        prev = np.concatenate([[self.eod, self.eod], tokens[:-1]])
        a, b, x = prev[1:], prev[:-1], tokens
        out = np.empty(len(x))
        is_eod = x == self.eod
        at_start = a == self.eod
        out[is_eod] = -np.log(self.hazard)
        p = self.probabilities(a, b)
        hit = self.succ[a] == x[:, None]
        px = (p * hit).sum(1)
        keep = np.where(at_start, 1.0, 1.0 - self.hazard)
        with np.errstate(divide="ignore"):
            out[~is_eod] = -np.log(px[~is_eod] * keep[~is_eod])
        return out


def _documents(stream: np.ndarray, eod: int) -> list[np.ndarray]:
    """Complete documents (each ending with its EOD) of one stream."""
    ends = np.flatnonzero(stream == eod)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [stream[s:e + 1] for s, e in zip(starts, ends) if e >= s]


def _corpus(teacher: Teacher, tokens: int, rng: np.random.Generator) -> list[np.ndarray]:
    docs: list[np.ndarray] = []
    total = 0
    steps = int(40 / teacher.hazard)  # long streams: truncation waste (the last doc) is small
    while total < tokens:
        n = max(1, min(4096, (tokens - total) // steps + 1))
        for row in teacher.streams(n, steps, rng):
            for doc in _documents(row, teacher.eod):
                docs.append(doc)
                total += len(doc)
    return docs


def bigram_log_perplexity(train: list[np.ndarray], validation: np.ndarray, vocab: int) -> float:
    """Cross-entropy on validation of the best bigram model fit to the training corpus (add-0.01
    smoothing): what a model that ignores the token two back could reach at best."""
    stream = np.concatenate(train)
    counts = np.full((vocab, vocab), 0.01)
    np.add.at(counts, (stream[:-1], stream[1:]), 1.0)
    probs = counts / counts.sum(1, keepdims=True)
    return float(-np.log(probs[validation[:-1], validation[1:]]).mean())


def generate(folder: str, params: dict) -> dict:
    t = params["teacher"]
    teacher = Teacher(params["vocab_size"], t["successors"], t["g1_std"], t["g2_std"],
                      t["g2_rank"], t["mean_doc_tokens"], t["seed"])
    dtype = megatron.token_dtype(params["vocab_size"])
    os.makedirs(folder)
    rng = np.random.default_rng([t["seed"], 1])
    train = _corpus(teacher, params["train_tokens"], rng)
    validation = _corpus(teacher, params["validation_tokens"], rng)
    stats = {TRAIN: megatron.write_indexed(os.path.join(folder, TRAIN), train, dtype),
             VALIDATION: megatron.write_indexed(os.path.join(folder, VALIDATION), validation,
                                                dtype)}
    val_stream = np.concatenate(validation)
    nll = np.concatenate([teacher.nll(doc) for doc in validation]).astype(np.float32)
    np.save(os.path.join(folder, "validation_teacher_nll.npy"), nll)
    files = {}
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        files[name] = {"bytes": os.path.getsize(path), "sha256": sha256_file(path)}
    return {"format": "megatron_mmidx", "format_version": FORMAT_VERSION, "params": params,
            "params_hash": params_hash(params), "files": files, "datasets": stats,
            "token_dtype": dtype.name, "teacher_entropy_nats": float(nll.mean()),
            "bigram_log_perplexity": bigram_log_perplexity(train, val_stream,
                                                           params["vocab_size"]),
            "uniform_log_perplexity": float(np.log(params["vocab_size"])),
            "created": time.time()}


def ensure(datasets_dir: str, params: dict) -> tuple[str, dict]:
    """Folder and manifest for ``params``, generating once (lock, temp folder, rename)."""
    params = dict(params, format_version=FORMAT_VERSION)
    folder, manifest, fresh = generated.ensure(datasets_dir, "synthetic_c4", params, generate)
    if fresh:
        log.info("%d train tokens; teacher entropy %.4f nats, bigram %.4f",
                 manifest["datasets"][TRAIN]["tokens"], manifest["teacher_entropy_nats"],
                 manifest["bigram_log_perplexity"])
    return folder, manifest


def best_log_perplexity(folder: str, seq_len: int, samples: int) -> float:
    """Teacher NLL averaged over exactly the targets of the first ``samples`` validation samples
    (unshuffled: stream positions 1 .. samples * seq_len)."""
    nll = np.load(os.path.join(folder, "validation_teacher_nll.npy"), mmap_mode="r")
    return float(np.asarray(nll[1: samples * seq_len + 1], dtype=np.float64).mean())
