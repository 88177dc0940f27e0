"""Synthetic GovReport with a planted shift between the base's task and the fine-tuning task.

Both tasks are second-order Markov sources (data/synthetic_c4.Teacher): the next token is one of
a few fixed successors of the previous token, weighted by a first-order term g1 and a two-back
interaction g2 of low rank. The *pretraining* task (what the proxy's base learns, base.py) and
the *fine-tuning* task (the parquet written here) share the successors and g1 but draw g2 afresh:
a base that learnt the pretraining task attends two back and reads the wrong interaction, so its
loss on the fine-tuning task stays far above that task's entropy. The change it needs is of rank
g2_rank in what attention moves between positions, which low-rank adapters on the attention
projections (qkv_proj, o_proj) can express and the frozen base cannot.

Each teacher document is one example: its first ``report_fraction`` plays the report, the rest
the summary, and its end-of-document token is the EOS. Examples are concatenated and cut into
rows of ``seq_len`` (the reference's group_texts: no padding, remainder dropped, attention mask
all ones). The best reachable eval loss is the fine-tuning teacher's own NLL over exactly the
scored validation positions, recorded in the manifest with the pretraining teacher's NLL there
(what a perfect base would score before fine-tuning).
"""
from __future__ import annotations

import copy
import os
import time

import numpy as np

from pinchpoint.data import generated
from pinchpoint.data.synthetic_c4 import Teacher, _documents
from pinchpoint.storage.atomic import sha256_file
from pinchpoint.workloads.llama2_70b_lora import data

FORMAT_VERSION = 1
TRAIN_FILE, VALIDATION_FILE = "train-00000-of-00001.parquet", "validation-00000-of-00001.parquet"


def teachers(vocab_size: int, task: dict) -> tuple[Teacher, Teacher]:
    """(pretraining teacher, fine-tuning teacher)."""
    pretrain = Teacher(vocab_size, task["successors"], task["g1_std"], task["g2_std"],
                       task["g2_rank"], task["mean_doc_tokens"], task["seed"])
    finetune = copy.copy(pretrain)
    rng = np.random.default_rng(task["shift_seed"])
    u, w = (rng.normal(size=(vocab_size, task["g2_rank"])) for _ in range(2))
    finetune.g2 = task["g2_std"] * (u @ w.T) / np.sqrt(task["g2_rank"])
    return pretrain, finetune


def examples(teacher: Teacher, tokens: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Complete documents (each ending with its EOS) totalling at least ``tokens``: many short
    parallel streams (the teacher steps all streams at once; a stream's unfinished last
    document is dropped)."""
    steps = int(10 / teacher.hazard)
    docs: list[np.ndarray] = []
    total = 0
    while total < tokens:
        n = max(1, min(4096, int(1.2 * (tokens - total) / steps) + 1))
        for row in teacher.streams(n, steps, rng):
            for doc in _documents(row, teacher.eod):
                docs.append(doc)
                total += len(doc)
    return docs


def pack(docs: list[np.ndarray], seq_len: int, rows: int, report_fraction: float,
         mask_reports: bool) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, labels) of ``rows`` packed rows; labels -100 over reports and EOS tokens
    when ``mask_reports`` (validation), a copy of the ids otherwise (training)."""
    ids = np.concatenate(docs)[: rows * seq_len]
    if len(ids) < rows * seq_len:
        raise ValueError(f"{len(ids)} tokens cannot fill {rows} rows of {seq_len}")
    labels = ids.copy()
    if mask_reports:
        start = 0
        for doc in docs:
            report = int(len(doc) * report_fraction)
            labels[start: start + report] = data.IGNORE
            labels[start + len(doc) - 1: start + len(doc)] = data.IGNORE  # EOS
            start += len(doc)
            if start >= len(labels):
                break
    return ids.reshape(rows, seq_len), labels.reshape(rows, seq_len)


def scored_nll(teacher: Teacher, docs: list[np.ndarray], labels: np.ndarray) -> float:
    """``teacher``'s eval loss computed as the reference's is: per sequence, the mean NLL over
    its scored positions (label not -100, not the row's first token, which nothing predicts),
    then the mean over sequences (Hugging Face's Trainer at eval batch size 1)."""
    nll = np.concatenate([teacher.nll(doc) for doc in docs])[: labels.size]
    nll = nll.reshape(labels.shape)
    scored = labels != data.IGNORE
    scored[:, 0] = False
    rows = scored.any(1)
    per_row = np.where(scored, nll, 0.0).sum(1)[rows] / scored.sum(1)[rows]
    return float(per_row.mean())


def generate(folder: str, params: dict) -> dict:
    task, seq_len = params["task"], params["seq_len"]
    pretrain, finetune = teachers(params["vocab_size"], task)
    rng = np.random.default_rng([task["seed"], 2])
    os.makedirs(folder)
    out = {}
    for name, rows, masked in ((TRAIN_FILE, params["train_sequences"], False),
                               (VALIDATION_FILE, params["validation_sequences"], True)):
        docs = examples(finetune, rows * seq_len + 1, rng)
        ids, labels = pack(docs, seq_len, rows, task["report_fraction"], masked)
        data.write_split(os.path.join(folder, name), ids, np.ones_like(ids, dtype=np.int8),
                         labels)
        if masked:
            out = {"best_eval_loss": scored_nll(finetune, docs, labels),
                   "pretrain_teacher_eval_loss": scored_nll(pretrain, docs, labels),
                   "scored_fraction": float((labels[:, 1:] != data.IGNORE).mean())}
    files = {name: {"bytes": os.path.getsize(os.path.join(folder, name)),
                    "sha256": sha256_file(os.path.join(folder, name))}
             for name in os.listdir(folder)}
    return {"format": "govreport_parquet", "format_version": FORMAT_VERSION, "params": params,
            "files": files, "uniform_loss": float(np.log(params["vocab_size"])),
            "created": time.time(), **out}


def ensure(datasets_dir: str, params: dict) -> tuple[str, dict]:
    params = dict(params, format_version=FORMAT_VERSION)
    folder, manifest, _ = generated.ensure(datasets_dir, "synthetic_govreport", params, generate)
    return folder, manifest


def pretraining_rows(vocab_size: int, task: dict, seq_len: int, rows: int,
                     seed: int) -> np.ndarray:
    """(rows, seq_len) token rows of the pretraining task (the base's corpus, kept in memory)."""
    pretrain, _ = teachers(vocab_size, task)
    docs = examples(pretrain, rows * seq_len + 1, np.random.default_rng(seed))
    return np.concatenate(docs)[: rows * seq_len].reshape(rows, seq_len)
