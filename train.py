"""pinchpoint entry point: `python train.py [group=option ...] [-m for a sweep]`.

Thin on purpose: compose (Hydra), then hand the config to the runner.
"""
import sys

import hydra
from omegaconf import DictConfig

from pinchpoint.config import setup

setup()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    from pinchpoint.config import ConfigError
    from pinchpoint.runner import run

    try:
        return run(cfg)
    except ConfigError as err:  # bad input: one clear line, no traceback, nothing launched
        sys.stderr.write(f"Invalid config: {err}\n")
        sys.exit(2)


if __name__ == "__main__":
    main()
