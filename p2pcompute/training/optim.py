"""Optimisers on parameter dicts (pure numpy): SGD with momentum, and DiLoCo's outer Nesterov step.

``Sgd.step(params, grads)`` returns new parameters (inputs are not modified);
its state is the momentum buffer. ``outer_step`` is the low-communication
mode's outer optimiser: the averaged parameter delta (local - global) is
treated as a negative gradient and applied with Nesterov momentum, as in
DiLoCo (outer lr 0.7, momentum 0.9 there).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

Params = dict[str, np.ndarray]


@dataclass
class Sgd:
    lr: float
    momentum: float = 0.0
    nesterov: bool = False
    velocity: Params = field(default_factory=dict)

    def step(self, params: Params, grads: Params) -> Params:
        out = {}
        for name, p in params.items():
            g = grads[name]
            if self.momentum:
                v = self.momentum * self.velocity.get(name, np.zeros_like(p)) + g
                self.velocity[name] = v
                g = g + self.momentum * v if self.nesterov else v
            out[name] = p - self.lr * g
        return out


def outer_step(opt: Sgd, params: Params, mean_delta: Params) -> Params:
    """Apply the averaged local delta through the outer optimiser (delta = local - global)."""
    return opt.step(params, {n: -d for n, d in mean_delta.items()})


def flatten(params: Params) -> np.ndarray:
    return np.concatenate([params[n].ravel() for n in sorted(params)])


def unflatten(vector: np.ndarray, like: Params) -> Params:
    out, at = {}, 0
    for n in sorted(like):
        size = like[n].size
        out[n] = vector[at:at + size].reshape(like[n].shape)
        at += size
    return out


def nbytes(params: Params) -> int:
    return sum(p.nbytes for p in params.values())
