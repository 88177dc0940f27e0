"""pinchpoint entry point: `python train.py [group=option ...] [-m for a sweep]`.

Thin on purpose: compose (Hydra), then hand the config to the runner.
"""
import hydra
from omegaconf import DictConfig

from pinchpoint.config import setup

setup()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    from pinchpoint.runner import run

    return run(cfg)


if __name__ == "__main__":
    main()
