"""Schemas of the toy workload: a two-layer MLP classifying points labelled by a planted teacher."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ToyModelConfig:
    name: str = "toy_classifier"
    scale: str = "smoke"
    hidden: int = 16
    learning_rate: float = 0.5


@dataclass
class ToyDatasetConfig:
    name: str = "toy_points"
    samples: int = 4096
    features: int = 8
    batch_size: int = 128
    target_accuracy: float = 0.8
