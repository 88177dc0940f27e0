"""Hydra plugins of pinchpoint (found by Hydra's scan of the hydra_plugins namespace package):
the Slurm launcher (hydra/launcher=pinchpoint_slurm, selected by cluster=slurm) and the grid
sweeper with sweep resume (hydra/sweeper=pinchpoint_grid, the default in conf/train.yaml).

Hydra instantiates plugins only from classes defined under hydra_plugins, so the classes here
are thin subclasses; the logic lives in pinchpoint.sweepers.slurm_launcher and pinchpoint.sweepers.grid.
Imports stay light: Hydra imports this package on every start.
"""
