"""Pre-launch checks that need nothing but the config: every error names the field, the value
and what is allowed.

OmegaConf's structured configs already reject unknown keys and wrong types at compose time;
this module checks the ranges and choices of the groups that drive no code of their own (seed,
train, checkpoint, output_root, mlperf, tracking) and offers what every check needs (``get``,
``writable_dir``, ``cluster_nodes``, ``check_known_keys``, ``typed``).

config/ is a leaf: it imports nothing of pinchpoint but its errors, and the other parts check
their own group against it, beside their code: the degrees
``parallel.validation.validate_parallel``, the tier ``storage.validation.validate_storage``, the
Slurm request ``cluster.request.validate_cluster``, the fabric
``cluster.fabric.validate_fabric``, the model and dataset each workload's ``validate(run)`` on
the typed config. runner/validation.py runs them all, in order, before any data, process or job
exists.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pinchpoint.errors import ConfigError, non_negative, one_of, positive_int, require


def get(cfg: DictConfig, path: str) -> Any:
    return OmegaConf.select(cfg, path, throw_on_missing=False)


def writable_dir(value: Any, field: str, env: str | None = None) -> None:
    """The directory exists and is writable, or can be created: probed by creating a file in
    the nearest existing ancestor (``os.access`` says yes to root even on a read-only mount or
    /proc, and the failure would come much later). Nothing is left behind."""
    import tempfile

    target = os.path.abspath(os.path.expanduser(str(value)))
    probe = target
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    where = f"{field} (or the {env} environment variable)" if env and os.environ.get(env) \
        else field
    try:
        if not os.path.isdir(probe):
            raise OSError(f"{probe} is not a directory")
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".pinchpoint-probe-"):
            pass
    except OSError as err:
        raise ConfigError(where, value, f"a writable directory ({probe} cannot be written: "
                          f"{getattr(err, 'strerror', None) or err})") from None


def validate_tracking(tracking: Any) -> None:
    """A tracking server is asked once, with a short timeout and no retries, before launch:
    MLflow's own client retries for minutes and then prints a traceback."""
    if not tracking.enabled:
        return
    uri = str(tracking.uri)
    if uri.startswith("sqlite:///"):
        writable_dir(os.path.dirname(uri[len("sqlite:///"):]) or ".", "tracking.uri")
        return
    if not uri.startswith(("http://", "https://")):
        return  # another MLflow backend (postgresql://, databricks, ...): MLflow checks it
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=3) as reply:
            reply.read(64)
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise ConfigError("tracking.uri", uri, f"a reachable MLflow tracking server ({reason}); "
                          "start one (launchers/mlflow_server.sh), or record locally with "
                          "tracking=mlflow (a sqlite store under output_root; serve it later "
                          "with mlflow server --backend-store-uri sqlite:///PATH), or "
                          "tracking.enabled=false") from None


def validate_common(run: Any) -> None:
    """seed, train, checkpoint and output_root."""
    t = run.train
    non_negative(run.seed, "seed")
    positive_int(t.evals_per_epoch, "train.evals_per_epoch")
    require(t.max_epochs, "train.max_epochs", lambda v: v > 0, "a number > 0")
    non_negative(t.max_steps, "train.max_steps")
    one_of(t.device, "train.device", ["auto", "cpu", "cuda"])
    if t.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise ConfigError("train.device", "cuda", "auto or cpu (no CUDA device is visible here)")
    non_negative(t.threads, "train.threads")
    validate_telemetry(run.telemetry)
    require(run.checkpoint.interval, "checkpoint.interval", lambda v: isinstance(v, int) and v >= 0,
            "an integer >= 0 (steps between checkpoints; 0 = off)")
    positive_int(run.checkpoint.keep, "checkpoint.keep")
    writable_dir(run.output_root, "output_root")


def validate_telemetry(tel: Any) -> None:
    one_of(tel.attribution, "telemetry.attribution", ["auto", "events", "sync", "off"])
    steps = list(tel.profile_steps)
    if steps and not (len(steps) == 2 and all(isinstance(s, int) and s >= 0 for s in steps)
                      and steps[0] <= steps[1]):
        raise ConfigError("telemetry.profile_steps", steps,
                          "[first, last]: two step numbers >= 0, first <= last (or [] for none)")


def validate_mlperf(run: Any) -> None:
    one_of(run.mlperf.submission_division, "mlperf.submission_division", ["open", "closed"])


def cluster_nodes(cfg: Any) -> int:
    """Nodes the run will span: cluster.nodes on Slurm; one for a local run."""
    return getattr(cfg.cluster, "nodes", 1) if getattr(cfg.cluster, "name", None) == "slurm" \
        else 1


def check_known_keys(node: DictConfig, path: str = "") -> None:
    """Keys forced in with Hydra's ``+key=value`` bypass the schema; refuse them here too."""
    schema = OmegaConf.get_type(node)
    known = {f.name for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) \
        else None
    for key in node.keys():
        full = f"{path}{key}"
        if known is not None and key not in known:
            raise ConfigError(full, get(node, str(key)), "a field of " + schema.__name__ +
                              ": " + ", ".join(sorted(known)))
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            check_known_keys(child, full + ".")


def typed(cfg: DictConfig) -> Any:
    """The run config as dataclass objects (``run.model`` is the workload's schema)."""
    return OmegaConf.to_object(cfg)


