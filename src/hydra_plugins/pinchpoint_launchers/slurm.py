"""hydra/launcher=pinchpoint_slurm (see pinchpoint.cluster.launcher)."""
from dataclasses import dataclass

from hydra.core.config_store import ConfigStore

from pinchpoint.cluster.launcher import SlurmSweepLauncher


class PinchpointSlurmLauncher(SlurmSweepLauncher):
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
