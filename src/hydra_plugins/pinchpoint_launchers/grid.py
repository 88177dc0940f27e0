"""hydra/sweeper=pinchpoint_grid (see pinchpoint.sweepers.grid), the default in conf/train.yaml."""
from dataclasses import dataclass
from typing import Dict, Optional

from hydra.core.config_store import ConfigStore

from pinchpoint.sweepers.grid import GridSweeper


class PinchpointGridSweeper(GridSweeper):
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
