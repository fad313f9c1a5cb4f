"""The single-process reference trainer: the same step graphs, no network.

``train(...)`` runs minibatch SGD (momentum) over the digits split with the
opset-2 step graph of ``model.py`` (run in this process by ``Graph.run``, as
the executor would), and reports test accuracy per epoch and the wall time.
It is what a distributed run is compared with: same seed, same
hyperparameters, same graphs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .data import Split, batch_indices
from .model import Model, Params, accuracy, init_params, loss_and_grads
from .optim import Sgd


@dataclass
class Result:
    params: Params
    test_accuracy: float
    wall_seconds: float
    steps: int
    curve: list[tuple[int, float, float]] = field(default_factory=list)  # (step, loss, test accuracy)


def train(model: Model, split: Split, *, epochs: int = 20, batch: int = 32, lr: float = 0.1,
          momentum: float = 0.9, seed: int = 0) -> Result:
    start = time.perf_counter()
    params = init_params(model, np.random.default_rng(seed))
    opt = Sgd(lr, momentum)
    per_epoch = max(1, len(split.y_train) // batch)
    step, curve = 0, []
    for _ in range(epochs):
        losses = []
        for _ in range(per_epoch):
            idx = batch_indices(len(split.y_train), batch, step, seed)
            loss, _, grads = loss_and_grads(model, params, split.x_train[idx], split.y_train[idx])
            params = opt.step(params, grads)
            losses.append(loss)
            step += 1
        curve.append((step, float(np.mean(losses)), accuracy(model, params, split.x_test, split.y_test)))
    return Result(params, curve[-1][2], time.perf_counter() - start, step, curve)
