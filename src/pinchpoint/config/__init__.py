"""Config schemas, resolvers and the checks that need nothing but the config. A leaf: it imports
nothing of pinchpoint but its errors, and every other part validates its own group against it
(runner/validation.py runs those checks in order).

``setup()`` registers the resolvers and the run-level schemas; what must run before Hydra
composes a run is ``pinchpoint.workloads.registry.setup()``, which calls it and adds every
workload's model and dataset schemas."""
import os

from omegaconf import OmegaConf

from pinchpoint.config.schema import register_schemas

_done = False


def setup() -> None:
    global _done
    if _done:
        return
    # True when an environment variable is unset: a storage tier emulates only without a real mount.
    OmegaConf.register_new_resolver("pinchpoint.env_unset", lambda name: not os.environ.get(name),
                                    replace=True)
    register_schemas()
    _done = True


__all__ = ["setup"]
