"""The project's user-facing errors. A leaf module: it imports nothing of pinchpoint, so any layer
(config, workloads, runner, data readers, sweepers) can raise them without import cycles."""
from __future__ import annotations

from typing import Any, Callable


class ConfigError(ValueError):
    """A config value that cannot run. ``field`` is the dotted path the user would override."""

    def __init__(self, field: str, value: Any, allowed: str):
        self.field, self.value, self.allowed = field, value, allowed
        super().__init__(f"{field}={value!r} is not allowed: {allowed}")


class DataError(ValueError):
    """A data file that cannot be read as the format it claims (names the file and the rule)."""

    def __init__(self, path: str, problem: str):
        self.path, self.problem = path, problem
        super().__init__(f"{path}: {problem}")


class CheckpointDiskFull(OSError):
    """A checkpoint that did not fit on its storage tier (ENOSPC). The message names the
    checkpoint, the tier and the newest valid checkpoint; the run fails with it in one line."""

    def __init__(self, message: str):
        import errno
        super().__init__(errno.ENOSPC, message)
        self.message = message   # kept as an attribute: it survives being rebuilt in another
                                 # process (runner/ranks.py raise_rank_user_error)

    def __str__(self) -> str:
        return self.message


def require(value: Any, field: str, ok: Callable[[Any], bool], allowed: str) -> None:
    """Raise ConfigError(field, value, allowed) unless ``ok(value)``; ``field`` names the value's
    dotted config path (typed configs carry values, not paths, so the caller names it)."""
    try:
        good = ok(value)
    except (TypeError, ValueError):
        good = False
    if not good:
        raise ConfigError(field, value, allowed)


def positive_int(value: Any, field: str) -> None:
    require(value, field, lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
            "a positive integer")


def non_negative(value: Any, field: str) -> None:
    require(value, field, lambda v: v is not None and v >= 0, "a number >= 0")


def one_of(value: Any, field: str, choices) -> None:
    choices = list(choices)
    require(value, field, lambda v: v in choices, "one of " + ", ".join(map(str, choices)))
