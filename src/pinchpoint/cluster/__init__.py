"""Running sweep points on a cluster: what each point asks Slurm for (request), whether the cluster
can give it (preflight), what Slurm says about the jobs (accounting), and the Hydra launcher that
submits them through submitit (launcher)."""
