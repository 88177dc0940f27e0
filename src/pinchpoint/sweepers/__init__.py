"""Hydra sweepers (Optuna search, adaptive crossover search) and what they share.

The Hydra plugin classes live in ``hydra_plugins.pinchpoint_sweepers`` (Hydra only accepts
plugins from that namespace); they are thin shells over the implementations here. Sweepers see
configs and recorded metrics, never a workload.
"""
