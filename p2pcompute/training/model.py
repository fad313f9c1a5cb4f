"""Models as operator graphs: an MLP (relu hidden layers) or a linear model (softmax regression).

``step_graph(model, batch)`` is one batch's forward and backward pass as an
opset-2 graph that the sandboxed executor runs like any other task:

    inputs:  x [batch, features] float64, y [batch] int64, and every parameter
             (``W0, b0, W1, b1, ...``; ``model.param_names()``)
    outputs: ``loss`` (mean cross-entropy, scalar), ``correct`` (int64 count of
             right predictions) and ``grad.<name>`` for every parameter.

``predict_graph(model)`` is the forward pass alone (output ``pred``, int64
labels). Gradients are the textbook ones: for logits = h W + b,
dW = h^T dlogits, db = sum over the batch of dlogits, dh = dlogits W^T, and
through relu, ``relu_grad(pre-activation, dh)``; the loss's gradient comes from
``softmax_cross_entropy_grad`` with dloss = 1/batch.

Parameters are a dict name -> float64 array; ``init_params`` draws them
(He-scaled normal weights, zero biases) from a seeded numpy Generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from ..ops.graph import Graph

if TYPE_CHECKING:
    from ..ops.tasks import Task

Params = dict[str, np.ndarray]


@dataclass(frozen=True)
class Model:
    """Layer sizes: ``Model(64, (32,), 10)`` is an MLP; ``Model(64, (), 10)`` a linear model."""

    features: int
    hidden: tuple[int, ...]
    classes: int

    def __post_init__(self) -> None:
        if min((self.features, self.classes, *self.hidden)) < 1:
            raise ValueError(f"layer sizes must be positive: {self}")

    @property
    def sizes(self) -> tuple[int, ...]:
        return (self.features, *self.hidden, self.classes)

    @property
    def layers(self) -> int:
        return len(self.sizes) - 1

    def param_names(self) -> list[str]:
        return [f"{kind}{i}" for i in range(self.layers) for kind in ("W", "b")]

    def param_count(self) -> int:
        s = self.sizes
        return sum(s[i] * s[i + 1] + s[i + 1] for i in range(self.layers))


def init_params(model: Model, rng: np.random.Generator) -> Params:
    out: Params = {}
    for i in range(model.layers):
        fan_in, fan_out = model.sizes[i], model.sizes[i + 1]
        out[f"W{i}"] = rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)
        out[f"b{i}"] = np.zeros(fan_out)
    return out


def _forward(model: Model, nodes: list[dict]) -> str:
    """Append the forward nodes; returns the logits' name. Pre-activations are ``a{i}``, activations ``h{i}``."""
    h = "x"
    for i in range(model.layers):
        nodes.append({"name": f"z{i}", "op": "matmul", "inputs": [h, f"W{i}"]})
        nodes.append({"name": f"a{i}", "op": "add", "inputs": [f"z{i}", f"b{i}"]})
        if i < model.layers - 1:
            nodes.append({"name": f"h{i}", "op": "relu", "inputs": [f"a{i}"]})
            h = f"h{i}"
    return f"a{model.layers - 1}"


@lru_cache(maxsize=64)
def step_graph(model: Model, batch: int) -> Graph:
    """Forward + backward for one batch of ``batch`` examples (see the module docstring)."""
    if batch < 1:
        raise ValueError("batch must be at least 1")
    nodes: list[dict] = []
    logits = _forward(model, nodes)
    nodes += [
        {"name": "ce", "op": "softmax_cross_entropy", "inputs": [logits, "y"]},
        {"name": "loss", "op": "reduce_mean", "inputs": ["ce"]},
        {"name": "pred", "op": "argmax", "inputs": [logits], "axis": -1},
        {"name": "hit", "op": "equal", "inputs": ["pred", "y"]},
        {"name": "hit_i", "op": "cast", "inputs": ["hit"], "dtype": "int64"},
        {"name": "correct", "op": "reduce_sum", "inputs": ["hit_i"]},
        {"name": "dloss", "op": "const", "value": 1.0 / batch, "dtype": "float64"},
        {"name": f"d{logits}", "op": "softmax_cross_entropy_grad", "inputs": [logits, "y", "dloss"]},
    ]
    grads = []
    for i in reversed(range(model.layers)):
        below = "x" if i == 0 else f"h{i - 1}"
        nodes += [
            {"name": f"{below}_T", "op": "transpose", "inputs": [below]},
            {"name": f"grad.W{i}", "op": "matmul", "inputs": [f"{below}_T", f"da{i}"]},
            {"name": f"grad.b{i}", "op": "reduce_sum", "inputs": [f"da{i}"], "axes": [0]},
        ]
        grads += [f"grad.W{i}", f"grad.b{i}"]
        if i > 0:
            nodes += [
                {"name": f"W{i}_T", "op": "transpose", "inputs": [f"W{i}"]},
                {"name": f"dh{i - 1}", "op": "matmul", "inputs": [f"da{i}", f"W{i}_T"]},
                {"name": f"da{i - 1}", "op": "relu_grad", "inputs": [f"a{i - 1}", f"dh{i - 1}"]},
            ]
    return Graph.from_dict({"opset": 2, "inputs": _inputs(model, batch, labels=True), "nodes": nodes,
                            "outputs": ["loss", "correct", *sorted(grads)]})


@lru_cache(maxsize=8)
def predict_graph(model: Model) -> Graph:
    """The forward pass alone, for any number of examples: output ``pred`` (int64 labels)."""
    nodes: list[dict] = []
    logits = _forward(model, nodes)
    nodes.append({"name": "pred", "op": "argmax", "inputs": [logits], "axis": -1})
    return Graph.from_dict({"opset": 2, "inputs": _inputs(model, None, labels=False), "nodes": nodes,
                            "outputs": ["pred"]})


def _inputs(model: Model, batch: int | None, labels: bool) -> dict:
    out: dict = {"x": {"dtype": "float64"} if batch is None else
                 {"dtype": "float64", "shape": [batch, model.features]}}
    if labels:
        out["y"] = {"dtype": "int64", "shape": [batch]}
    for i in range(model.layers):
        out[f"W{i}"] = {"dtype": "float64", "shape": [model.sizes[i], model.sizes[i + 1]]}
        out[f"b{i}"] = {"dtype": "float64", "shape": [model.sizes[i + 1]]}
    return out


def loss_and_grads(model: Model, params: Params, x: np.ndarray, y: np.ndarray) -> tuple[float, int, Params]:
    """Run the step graph: (mean loss, correct predictions, {name: gradient})."""
    out = step_graph(model, len(y)).run({"x": x, "y": y, **params})
    return float(out["loss"]), int(out["correct"]), {n: out[f"grad.{n}"] for n in model.param_names()}


def accuracy(model: Model, params: Params, x: np.ndarray, y: np.ndarray) -> float:
    pred = predict_graph(model).run({"x": x, **params})["pred"]
    return float(np.mean(pred == y))


def step_task(model: Model, params: Params, x: np.ndarray, y: np.ndarray, **limits) -> "Task":
    """The step graph as an executor ``Task`` with every input inline (each at most 64 KiB: for larger
    parameters or shards the wiring passes files fetched by CID instead). Outputs come back as
    ``<name>.tensor`` (``loss``, ``correct``, ``grad.<param>``)."""
    from ..ops import tensor_format
    from ..ops.tasks import InputFile, Limits, Task

    feeds = {"x": np.asarray(x, np.float64), "y": np.asarray(y, np.int64), **params}
    return Task("graph", inputs={k: InputFile(data=tensor_format.encode(v)) for k, v in feeds.items()},
                outputs={name: "tensor" for name in step_graph(model, len(y)).outputs},
                graph=step_graph(model, len(y)).to_cbor(), limits=Limits(**limits))
