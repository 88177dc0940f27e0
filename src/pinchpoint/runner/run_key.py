"""A stable identity for a sweep point: hash of the resolved config minus what cannot change the
result (where outputs go, how tracking is reached, how chatty the terminal is, test hooks)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from omegaconf import OmegaConf

IGNORED = ("tracking", "output_root", "train.progress_every_s", "fault", "plan_only",
           "cluster", "hydra")


def flatten(node, prefix: str = "") -> dict:
    out = {}
    if isinstance(node, dict):
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
    else:
        out[prefix[:-1]] = node
    return out


def resolved_dict(cfg: Any) -> dict:
    """The composed config resolved, or a typed run config (dataclasses) as the same dict."""
    if dataclasses.is_dataclass(cfg):
        return dataclasses.asdict(cfg)
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


def run_key(cfg: Any) -> str:
    """Of a composed config, or of its typed run config (the sweepers' pre-flight): equal."""
    flat = flatten(resolved_dict(cfg))
    kept = {k: v for k, v in flat.items()
            if not any(k == p or k.startswith(p + ".") for p in IGNORED)}
    digest = hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()
    return f"{cfg.model.name}-{digest[:16]}"
