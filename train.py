"""pinchpoint entry point: `python train.py [group=option ...] [-m for a sweep]`.

Thin on purpose: compose (Hydra), then hand the config to the runner.

Exit codes (README "Exit codes"): 0 the run finished (its status says whether it reached the
target), 2 pinchpoint refused the input before anything ran (a config value, a data file, the
storage root, the tracking URI: one line naming the field or file and what is allowed), 1 Hydra
refused the command line, or the run failed while running (a traceback follows; a full disk
during a checkpoint is one line naming the checkpoint, the tier and the newest valid one).
"""
import sys

import hydra
from omegaconf import DictConfig

from pinchpoint.workloads.registry import setup

setup()   # resolvers and every schema (the run's groups, each workload's) before Hydra composes


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    from pinchpoint.runner import run

    try:
        return run(cfg)
    except BaseException as err:
        known = user_error(err)
        if known is None:
            raise
        code, message = known
        sys.stderr.write(message + "\n")  # one clear line, no traceback
        sys.exit(code)


def user_error(err: BaseException):
    """(exit code, one-line message) of an error the user can fix; None: re-raised."""
    from pinchpoint.data.npy_format import DataFormatError
    from pinchpoint.errors import CheckpointDiskFull, ConfigError, DataError

    if isinstance(err, ConfigError):
        return 2, f"Invalid config: {err}"
    if isinstance(err, (DataError, DataFormatError)):
        return 2, f"Invalid data: {err}"
    if isinstance(err, CheckpointDiskFull):
        return 1, f"Disk full: {err}"
    return None


if __name__ == "__main__":
    main()
