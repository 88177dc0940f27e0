"""A full-scale plan grid: what ``pinchpoint plan OVERRIDES`` and the grid sweeper's
``python train.py -m ... plan_only=true`` both run, one engine.

The overrides are Hydra's (its parser: ``1e-3`` is a float, ``'a,b'`` a quoted string,
``key=a,b,c`` and ``key=range(start,stop[,step])`` sweep, ``+group=option`` adds, ``~key``
deletes; ``hydra.searchpath=[file://DIR]`` adds config folders). Every point is checked by the
sweepers' pre-flight (sweepers/preflight.py: each distinct choice of config groups composed by
Hydra once, field values set on typed copies, then the validation train.py runs,
runner/validation.py), so a point train.py refuses is refused here with the same message, and
only the points that pass are planned (plan/: pure arithmetic).
"""
from __future__ import annotations

import itertools
import sys
import types
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from pinchpoint.errors import ConfigError
from pinchpoint.plan import grid
from pinchpoint.sweepers.common import DEFAULT_VALIDATOR, PointChecker
from pinchpoint.sweepers.space import SweepError
from pinchpoint.workloads import plan_point

CONFIG_NAME = "train"
# train.py's config: conf/ beside it (the source tree an editable install points at).
SOURCE_CONF = Path(__file__).resolve().parents[3] / "conf"


def config_dir(given: Optional[str] = None) -> Path:
    """Where train.yaml is: ``given`` (``--config-dir``), else the conf/ beside train.py in the
    source tree this package runs from, else ./conf (an installed package carries no conf/:
    run from a checkout, or name it)."""
    for where, why in ((given, "--config-dir"), (SOURCE_CONF, None), (Path("conf"), None)):
        if where is None:
            continue
        path = Path(where).expanduser().resolve()
        if (path / f"{CONFIG_NAME}.yaml").is_file():
            return path
        if why:
            raise SweepError(f"{why} {where}: no {CONFIG_NAME}.yaml there")
    raise SweepError(f"no conf/{CONFIG_NAME}.yaml: not beside this package ({SOURCE_CONF}) "
                     "nor in the current folder; run from a pinchpoint checkout or give "
                     "--config-dir")


def compose(overrides: Sequence[str], output_root: Optional[str | Path] = None,
            conf: Optional[str | Path] = None) -> DictConfig:
    """The config train.py would run with these overrides, one point, no Hydra job started
    (the tests, gpu_check and planner_vs_published compose their points with it)."""
    from hydra import compose as hydra_compose, initialize_config_dir

    from pinchpoint.workloads.registry import setup

    setup()
    extra = [f"output_root={output_root}"] if output_root is not None else []
    with initialize_config_dir(config_dir=str(config_dir(conf)), version_base="1.3"):
        return hydra_compose(config_name=CONFIG_NAME, overrides=[*overrides, *extra],
                             return_hydra_config=False)


def plan_grid(overrides: Sequence[str], conf: Optional[str | Path] = None
              ) -> tuple[list[str], list[grid.Point]]:
    """(the swept keys, every point of the grid planned), as ``-m plan_only=true`` plans it."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.types import RunMode

    from pinchpoint.workloads.registry import setup

    setup()   # resolvers and every schema, as train.py does before Hydra composes
    loader = ConfigLoaderImpl(create_config_search_path(str(config_dir(conf))))
    try:   # the sweep's own config, as Hydra's --multirun composes it (sweeps left out)
        master = loader.load_configuration(CONFIG_NAME, [*overrides, "plan_only=true"],
                                           run_mode=RunMode.MULTIRUN)
    except HydraException as err:
        raise SweepError(f"the overrides do not compose: {hydra_error(err)}") from None
    checker = PointChecker(types.SimpleNamespace(config_loader=loader), master,
                           validator=DEFAULT_VALIDATOR)
    arguments = [*sweeper_params(master), *master.hydra.overrides.task]
    return plan_points(checker, arguments)


def hydra_error(err: BaseException) -> str:
    """Hydra's message and, where it has one, the cause it wraps ("Error merging override
    parallel.tp=abc" says which override, its cause what is wrong with it), on one line."""
    parts = [str(err)] + ([str(err.__cause__)] if err.__cause__ is not None else [])
    return ": ".join(" ".join(p.split()) for p in parts if p.strip())


def sweeper_params(config: DictConfig) -> list[str]:
    """``hydra.sweeper.params`` (a named sweep's axes) as overrides, as the grid sweeper reads
    them: before the command line's, which win."""
    params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
    return [f"{k}={v}" for k, v in params.items()]


def plan_points(checker: PointChecker, arguments: Sequence[str]
                ) -> tuple[list[str], list[grid.Point]]:
    """Every point these overrides span, checked by the pre-flight, then planned from its
    typed run config. An invalid point (or one that does not compose) is marked, not fatal."""
    points, values = expand(arguments, checker.loader)
    swept = [k for k in values[0] if len({repr(v[k]) for v in values}) > 1] if values else []
    planned = []
    for overrides, settings in zip(points, values):
        point = grid.Point({k.lstrip("+~"): settings[k] for k in swept})
        try:
            run = checker.preflight.check(overrides, keyed=False).run
        except ConfigError as err:
            point.error = str(err)
            point.row = grid.row_of(point)
        except SweepError as err:   # the point does not compose: Hydra's words, shorter
            cause = err.__cause__
            point.error = f"does not compose: {hydra_error(cause)}" if cause else str(err)
            point.row = grid.row_of(point)
        else:
            plan_into(point, run)   # the typed run config, as validated
        planned.append(point)
    return swept, planned


def plan_into(point: grid.Point, run) -> grid.Point:
    """Plan a validated run config into ``point``: its plan, or the error that names what is
    wrong; then its table row."""
    try:
        point.plan = plan_point(run)
    except ConfigError as err:
        point.error = str(err)
    except (ZeroDivisionError, ValueError) as err:
        point.error = f"{type(err).__name__}: {err}"
    point.row = grid.row_of(point)
    return point


def expand(arguments: Sequence[str], loader: Any = None
           ) -> tuple[list[list[str]], list[dict[str, Any]]]:
    """The grid as Hydra's basic sweeper spans it (split_arguments: the last override of a key
    wins, the first key varies slowest): each point's overrides, and its values as Hydra's parser types them
    (``1e-3`` -> 0.001), by key as written (``+gpu``). ``loader``: Hydra's config loader, for
    ``glob(...)`` over a group's options."""
    try:
        parsed = OverridesParser.create(config_loader=loader).parse_overrides(list(arguments))
    except HydraException as err:
        raise SweepError(f"the overrides do not parse: {err}") from None
    axes: dict[str, list[tuple[str, Any]]] = {}
    for o in parsed:   # a key given again keeps its first place (Hydra's OrderedDict)
        key = o.get_key_element()
        if not o.is_sweep_override():
            axes[key] = [(o.input_line, o.value())]   # as written ('~key' stays a delete)
        elif o.is_discrete_sweep():
            axes[key] = [(f"{key}={s}", v) for s, v in zip(o.sweep_string_iterator(),
                                                           o.sweep_iterator())]
        else:
            raise SweepError(f"{o.input_line}: a grid sweeps a,b,c or range(start,stop,step), "
                             "not an interval")
    keys, combos = list(axes), list(itertools.product(*axes.values()))
    return ([[text for text, _ in c] for c in combos],
            [dict(zip(keys, (value for _, value in c))) for c in combos])


def single(point: grid.Point) -> int:
    """A one-point plan's terms and time-to-train; 2 when it does not fit or is invalid."""
    if point.error:
        print(f"pinchpoint plan: {point.error}", file=sys.stderr)
        return 2
    p = point.plan
    t = p.time_to_train
    print("\ntime-to-train = steps x step + evals + init in the clock:")
    print(f"  {t.steps:,.1f} steps ({t.samples_to_converge:,.0f} samples, {t.rcp}, "
          f"ruleset {t.ruleset}) x {t.step_s:.4f} s = {t.train_s / 60:,.2f} min")
    print(f"  + {t.evaluations} evals x {t.eval_each_s:.2f} s = {t.evals_s / 60:,.2f} min"
          f"  + init {t.init_s / 60:.2f} min  = {t.minutes:,.2f} min")
    terms = ", ".join(f"{k} {v:.4f}" for k, v in p.terms_s.items() if v > 0)
    print(f"step terms (s): {terms}; dominant: {p.dominant}")
    if not p.fits:
        print(f"pinchpoint plan: does not fit: needs {p.memory_needed_gib:.1f} GiB per device,"
              f" {p.gpu} has {p.memory_usable_gib:.1f} GiB usable", file=sys.stderr)
        return 2
    return 0
