"""Config schemas, resolvers and the checks that need nothing but the config. A leaf: it imports
nothing of pinchpoint but its errors, and every other part validates its own group against it
(runner/validation.py runs those checks in order).

``setup(*schema_sources)`` registers the resolvers and the run-level schemas in Hydra's
ConfigStore, then hands the store to each schema source: that is how the model and dataset
schemas, which config does not know, get in. Before Hydra composes a run, call
``pinchpoint.workloads.registry.setup()``, which calls this with the workload registry as the
source."""
import os
from typing import Any, Callable

_done = False


def setup(*schema_sources: Callable[[Any], None]) -> None:
    # Hydra is imported here, not by ``import pinchpoint.config.validate`` (the checks that the
    # storage, parallel and cluster code import need none of it).
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    from pinchpoint.config.schema import register_schemas

    global _done
    if not _done:
        # True when an environment variable is unset: a storage tier emulates only without a
        # real mount.
        OmegaConf.register_new_resolver("pinchpoint.env_unset",
                                        lambda name: not os.environ.get(name), replace=True)
        register_schemas()
        _done = True
    for source in schema_sources:
        source(ConfigStore.instance())


__all__ = ["setup"]
