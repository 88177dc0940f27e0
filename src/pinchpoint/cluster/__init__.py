"""The cluster: what each point asks Slurm for (request), whether the cluster can give it
(preflight), what Slurm says about the jobs (accounting, liveness), and the fabric between nodes
(fabric: read or shaped; fabric_meter: its counters over a run). The Hydra launcher that submits
points through submitit is sweepers/slurm_launcher.py."""
