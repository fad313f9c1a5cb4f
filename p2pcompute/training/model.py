"""Models as operator graphs: an MLP (relu hidden layers) or a linear model (softmax regression).

``step_graph(model, batch)`` is one batch's forward and backward pass as an
opset-2 graph that the sandboxed executor runs like any other task:

    inputs:  x [batch, features] float64, y [batch] int64, and every parameter
             (``W0, b0, W1, b1, ...``; ``model.param_names()``)
    outputs: ``loss`` (mean cross-entropy, scalar), ``correct`` (int64 count of
             right predictions) and ``grad.<name>`` for every parameter.

``local_graph(model, batch, H, lr, momentum)`` unrolls H SGD steps into one
graph (the low-communication mode's task; output ``delta.<name>``).
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


def _forward(model: Model, nodes: list[dict], pre: str = "", x: str = "x", p: dict | None = None) -> str:
    """Append the forward nodes; returns the logits' name. Pre-activations are ``a{i}``, activations ``h{i}``;
    every name gets the prefix ``pre``; ``p`` maps a parameter name to the value holding it."""
    p = p or {n: n for n in model.param_names()}
    h = x
    for i in range(model.layers):
        nodes.append({"name": f"{pre}z{i}", "op": "matmul", "inputs": [h, p[f"W{i}"]]})
        nodes.append({"name": f"{pre}a{i}", "op": "add", "inputs": [f"{pre}z{i}", p[f"b{i}"]]})
        if i < model.layers - 1:
            nodes.append({"name": f"{pre}h{i}", "op": "relu", "inputs": [f"{pre}a{i}"]})
            h = f"{pre}h{i}"
    return f"{pre}a{model.layers - 1}"


def _step_nodes(model: Model, batch: int, nodes: list[dict], pre: str = "", x: str = "x", y: str = "y",
                p: dict | None = None) -> dict[str, str]:
    """Append one batch's forward and backward nodes; returns {parameter: value holding its gradient}."""
    p = p or {n: n for n in model.param_names()}
    logits = _forward(model, nodes, pre, x, p)
    nodes += [
        {"name": f"{pre}ce", "op": "softmax_cross_entropy", "inputs": [logits, y]},
        {"name": f"{pre}loss", "op": "reduce_mean", "inputs": [f"{pre}ce"]},
        {"name": f"{pre}pred", "op": "argmax", "inputs": [logits], "axis": -1},
        {"name": f"{pre}hit", "op": "equal", "inputs": [f"{pre}pred", y]},
        {"name": f"{pre}hit_i", "op": "cast", "inputs": [f"{pre}hit"], "dtype": "int64"},
        {"name": f"{pre}correct", "op": "reduce_sum", "inputs": [f"{pre}hit_i"]},
        {"name": f"{pre}dloss", "op": "const", "value": 1.0 / batch, "dtype": "float64"},
        {"name": f"{pre}da{model.layers - 1}", "op": "softmax_cross_entropy_grad",
         "inputs": [logits, y, f"{pre}dloss"]},
    ]
    grads = {}
    for i in reversed(range(model.layers)):
        below = x if i == 0 else f"{pre}h{i - 1}"
        nodes += [
            {"name": f"{pre}in{i}_T", "op": "transpose", "inputs": [below]},
            {"name": f"{pre}grad.W{i}", "op": "matmul", "inputs": [f"{pre}in{i}_T", f"{pre}da{i}"]},
            {"name": f"{pre}grad.b{i}", "op": "reduce_sum", "inputs": [f"{pre}da{i}"], "axes": [0]},
        ]
        grads[f"W{i}"], grads[f"b{i}"] = f"{pre}grad.W{i}", f"{pre}grad.b{i}"
        if i > 0:
            nodes += [
                {"name": f"{pre}W{i}_T", "op": "transpose", "inputs": [p[f"W{i}"]]},
                {"name": f"{pre}dh{i - 1}", "op": "matmul", "inputs": [f"{pre}da{i}", f"{pre}W{i}_T"]},
                {"name": f"{pre}da{i - 1}", "op": "relu_grad", "inputs": [f"{pre}a{i - 1}", f"{pre}dh{i - 1}"]},
            ]
    return grads


@lru_cache(maxsize=64)
def step_graph(model: Model, batch: int) -> Graph:
    """Forward + backward for one batch of ``batch`` examples (see the module docstring)."""
    if batch < 1:
        raise ValueError("batch must be at least 1")
    nodes: list[dict] = []
    grads = _step_nodes(model, batch, nodes)
    return Graph.from_dict({"opset": 2, "inputs": _inputs(model, batch, labels=True), "nodes": nodes,
                            "outputs": ["loss", "correct", *sorted(grads.values())]})


@lru_cache(maxsize=16)
def local_graph(model: Model, batch: int, steps: int, lr: float, momentum: float) -> Graph:
    """``steps`` SGD steps (momentum, buffer starting at zero) in one graph: the low-communication
    mode's task. Inputs: ``x`` [steps * batch, features] and ``y`` [steps * batch] (step j uses rows
    j*batch ... (j+1)*batch - 1) and the parameters; outputs ``loss`` (the last step's) and
    ``delta.<name>`` = parameters after the steps minus before. The update is opset-1 arithmetic:
    v = momentum * v + g, p = p - lr * v."""
    if batch < 1 or steps < 1:
        raise ValueError("batch and steps must be at least 1")
    nodes: list[dict] = [{"name": "lr", "op": "const", "value": float(lr), "dtype": "float64"},
                         {"name": "mu", "op": "const", "value": float(momentum), "dtype": "float64"}]
    p = {n: n for n in model.param_names()}
    v: dict[str, str] = {}
    for j in range(steps):
        pre = f"s{j}."
        for name, src in (("x", "x"), ("y", "y")):
            nodes.append({"name": f"{pre}{name}", "op": "slice", "inputs": [src], "starts": [j * batch],
                          "ends": [(j + 1) * batch], "axes": [0]})
        grads = _step_nodes(model, batch, nodes, pre, f"{pre}x", f"{pre}y", p)
        for n in model.param_names():
            if n in v:
                nodes.append({"name": f"{pre}mv.{n}", "op": "mul", "inputs": ["mu", v[n]]})
                nodes.append({"name": f"{pre}v.{n}", "op": "add", "inputs": [f"{pre}mv.{n}", grads[n]]})
                v[n] = f"{pre}v.{n}"
            else:
                v[n] = grads[n]
            nodes.append({"name": f"{pre}lv.{n}", "op": "mul", "inputs": ["lr", v[n]]})
            nodes.append({"name": f"{pre}p.{n}", "op": "sub", "inputs": [p[n], f"{pre}lv.{n}"]})
            p[n] = f"{pre}p.{n}"
    nodes.append({"name": "loss", "op": "reduce_mean", "inputs": [f"s{steps - 1}.ce"]})
    for n in model.param_names():
        nodes.append({"name": f"delta.{n}", "op": "sub", "inputs": [p[n], n]})
    return Graph.from_dict({"opset": 2, "inputs": _inputs(model, steps * batch, labels=True), "nodes": nodes,
                            "outputs": ["loss", *(f"delta.{n}" for n in model.param_names())]})


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


def check_update(model: Model, update: object) -> str:
    """Why a peer's gradient or delta cannot be aggregated ('' if it can): the model's parameter names,
    each a float64 array of its parameter's shape. Values are not judged here (the robust rule does)."""
    if not isinstance(update, dict):
        return f"an update is a mapping of parameter name to array, got {type(update).__name__}"
    names = model.param_names()
    if sorted(update) != sorted(names):
        return f"update names {sorted(map(str, update))[:8]} are not the parameters {names}"
    sizes = model.sizes
    for i in range(model.layers):
        for name, shape in ((f"W{i}", (sizes[i], sizes[i + 1])), (f"b{i}", (sizes[i + 1],))):
            value = update[name]
            if not isinstance(value, np.ndarray) or value.dtype != np.float64 or value.shape != shape:
                got = f"{value.dtype}{list(value.shape)}" if isinstance(value, np.ndarray) else type(value).__name__
                return f"{name} must be float64{list(shape)}, got {got}"
    return ""
