"""A fast stand-in for train.py (no torch, no training) with a known answer, for sweeper tests
and benchmarks/crossover_runs.py: alternative ``a`` costs x seconds, ``b`` a flat ``flat``
seconds, so ``a`` wins below x=flat and ``b`` above; the dominant phase changes at x=phase_at."""
import json
import os

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


def cost(x: float, alt: str, flat: float) -> float:
    return float(x) if alt == "a" else float(flat)


def validate(cfg: DictConfig) -> None:
    """Pre-flight: x must be a multiple of ``multiple_of`` (like batch % world_size)."""
    from pinchpoint.errors import ConfigError

    if cfg.x % cfg.multiple_of:
        raise ConfigError("x", cfg.x, f"a multiple of multiple_of={cfg.multiple_of}")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> dict:
    if cfg.fail_at is not None and cfg.x == cfg.fail_at:
        raise RuntimeError(f"injected failure at x={cfg.x}")
    t = cost(cfg.x, cfg.alt, cfg.flat) + 0.001 * cfg.y
    result = {"status": "success", "time_to_train_s": t, "x": cfg.x, "alt": cfg.alt,
              "bottleneck": "data_wait" if cfg.x < cfg.phase_at else "forward_backward"}
    with open(os.path.join(HydraConfig.get().runtime.output_dir, "result.json"), "w") as f:
        json.dump(result, f)   # what a dense grid reads back (benchmarks/crossover_runs.py)
    return result


if __name__ == "__main__":
    main()
