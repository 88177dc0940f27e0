"""hydra/launcher=pinchpoint_slurm (see pinchpoint.sweepers.slurm_launcher)."""
from dataclasses import dataclass

from hydra.core.config_store import ConfigStore

# The module, not the class: Hydra lists every Plugin class it finds in a hydra_plugins
# module, and the implementation is not a plugin of its own.
from pinchpoint.sweepers import slurm_launcher as _launcher


class PinchpointSlurmLauncher(_launcher.SlurmSweepLauncher):
    pass


@dataclass
class PinchpointSlurmConf:
    """The Slurm request itself is per point, in the ``cluster`` group (cluster=slurm)."""
    _target_: str = "hydra_plugins.pinchpoint_launchers.slurm.PinchpointSlurmLauncher"
    # A fresh folder per sweep: Slurm job ids restart at 1 on a new cluster, and a reused folder
    # could hand back an old job's result.
    submitit_folder: str = "${hydra.sweep.dir}/.submitit/%j"


ConfigStore.instance().store(group="hydra/launcher", name="pinchpoint_slurm",
                             node=PinchpointSlurmConf, provider="pinchpoint")
