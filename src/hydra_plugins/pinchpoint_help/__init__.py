"""``python train.py --help``: the config groups a user picks from, listed when the page is
printed (conf/hydra/help/pinchpoint.yaml calls ``${pinchpoint.help_groups:}``), so the page
never goes stale and hides the internal ``schema/*`` groups and Hydra's own.

Registered here because Hydra imports every hydra_plugins module before it composes a config,
and train.py stays a thin entry point.
"""
import sys

from omegaconf import OmegaConf

HIDDEN = ("hydra", "schema")     # Hydra's own groups (see --hydra-help), typed schemas
SEPARATE = ("sweep",)            # listed as +sweep=NAME by the page itself


def _options(group: str) -> list[str]:
    from hydra.core.global_hydra import GlobalHydra
    return sorted(GlobalHydra.instance().config_loader().get_group_options(group))


def _printing_help() -> bool:
    """OmegaConf resolves the help template while Hydra merges every config, not only when the
    page is printed; listing all groups costs seconds of CPU, so only do it for --help."""
    return "--help" in sys.argv or "-h" in sys.argv


def help_groups(_root_=None) -> str:
    from hydra.core.global_hydra import GlobalHydra

    if not _printing_help():
        return ""
    gh = GlobalHydra.instance()
    if not gh.is_initialized() or gh.hydra is None:
        return ""
    chosen = OmegaConf.select(_root_, "hydra.runtime.choices", default=None) or {}
    groups = [g for g in gh.hydra.list_all_config_groups()
              if g.split("/")[0] not in HIDDEN + SEPARATE]
    now = {g: chosen.get(g) or f"(none: +{g}=NAME)" for g in groups}
    width = max((len(g) for g in groups), default=0)
    nw = max((len(v) for v in now.values()), default=0)
    lines = [f"  {'group'.ljust(width)}  {'now'.ljust(nw)}  options"]
    lines += [f"  {g.ljust(width)}  {now[g].ljust(nw)}  {', '.join(_options(g))}"
              for g in sorted(groups)]
    return "\n".join(lines)


def help_sweeps() -> str:
    from hydra.core.global_hydra import GlobalHydra

    if not _printing_help() or not GlobalHydra.instance().is_initialized():
        return ""
    return "  " + ", ".join(_options("sweep"))


OmegaConf.register_new_resolver("pinchpoint.help_groups", help_groups, replace=True)
OmegaConf.register_new_resolver("pinchpoint.help_sweeps", help_sweeps, replace=True)
