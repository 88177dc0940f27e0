"""hydra/sweeper=pinchpoint_grid (see pinchpoint.sweepers.grid), the default in conf/train.yaml."""
from dataclasses import dataclass
from typing import Dict, Optional

from hydra.core.config_store import ConfigStore

# The module, not the class: Hydra lists every Plugin class it finds in a hydra_plugins
# module, and the implementation is not a plugin of its own.
from pinchpoint.sweepers import grid as _grid


class PinchpointGridSweeper(_grid.GridSweeper):
    pass


@dataclass
class PinchpointGridConf:
    _target_: str = "hydra_plugins.pinchpoint_launchers.grid.PinchpointGridSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, str]] = None
    resume: bool = True      # skip points whose config already has a successful run
    dry_run: bool = False    # list what would run and why; launch nothing


ConfigStore.instance().store(group="hydra/sweeper", name="pinchpoint_grid",
                             node=PinchpointGridConf, provider="pinchpoint")
