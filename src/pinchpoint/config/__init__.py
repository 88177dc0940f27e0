"""Config schemas, resolvers and validation. ``setup()`` must run before Hydra composes."""
import os

from omegaconf import OmegaConf

from pinchpoint.config.schema import register_schemas
from pinchpoint.config.validate import typed, validate
from pinchpoint.errors import ConfigError

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


__all__ = ["setup", "validate", "typed", "ConfigError"]
