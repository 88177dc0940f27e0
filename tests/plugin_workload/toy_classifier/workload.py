"""The whole workload: planted data written once to the tier as .npy, an MLP, SGD, accuracy."""
from __future__ import annotations

import os
from typing import Any, Iterator

import numpy as np
import torch

from pinchpoint.errors import positive_int, require
from pinchpoint.workloads.base import Quality, Sizes, Workload


class ToyWorkload(Workload):

    @classmethod
    def validate(cls, run) -> None:
        positive_int(run.model.hidden, "model.hidden")
        require(run.parallel.world_size, "parallel.world_size", lambda v: v == 1,
                "1 (the toy classifier runs in one process)")

    def prepare_data(self) -> list[str]:
        d = self.inputs.dataset
        folder = self.inputs.tier.path("datasets", f"toy_points_{d.samples}x{d.features}")
        self.x_path, self.y_path = os.path.join(folder, "x.npy"), os.path.join(folder, "y.npy")
        if not os.path.exists(self.y_path):
            os.makedirs(folder, exist_ok=True)
            rng = np.random.default_rng(0)
            x = rng.standard_normal((d.samples, d.features)).astype(np.float32)
            teacher = rng.standard_normal(d.features)
            np.save(self.x_path, x)
            np.save(self.y_path, (x @ teacher > 0).astype(np.int64))   # last: marks complete
        return [self.x_path, self.y_path]

    def build(self) -> None:
        torch.manual_seed(self.inputs.seed)
        d, m = self.inputs.dataset, self.inputs.model
        self.model = torch.nn.Sequential(torch.nn.Linear(d.features, m.hidden), torch.nn.ReLU(),
                                         torch.nn.Linear(m.hidden, 2))
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=m.learning_rate)

    def sizes(self) -> Sizes:
        d = self.inputs.dataset
        train = d.samples * 3 // 4
        return Sizes(global_batch_size=d.batch_size, steps_per_epoch=train // d.batch_size,
                     train_samples=train, eval_samples=d.samples - train)

    def quality(self) -> Quality:
        return Quality("accuracy", self.inputs.dataset.target_accuracy, higher_is_better=True)

    def mlperf_hyperparameters(self) -> dict[str, Any]:
        return {"global_batch_size": self.inputs.dataset.batch_size, "opt_name": "sgd",
                "opt_base_learning_rate": self.inputs.model.learning_rate}

    def open_data(self) -> None:
        self.x = torch.from_numpy(np.load(self.x_path))
        self.y = torch.from_numpy(np.load(self.y_path))

    def batches(self, start_step: int) -> Iterator[Any]:
        b = self.inputs.dataset.batch_size
        for step in range(start_step, self.sizes().steps_per_epoch):
            yield self.x[step * b:(step + 1) * b], self.y[step * b:(step + 1) * b]

    def forward_backward(self, batch) -> torch.Tensor:
        x, y = batch
        self.optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(self.model(x), y)
        loss.backward()
        return loss.detach()

    def optimizer_step(self) -> None:
        self.optimizer.step()

    @torch.no_grad()
    def evaluate(self) -> float:
        start = self.sizes().train_samples
        predicted = self.model(self.x[start:]).argmax(1)
        return float((predicted == self.y[start:]).float().mean())

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
