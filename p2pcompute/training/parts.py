"""The graphs of parameter sharding on the network: updates cut into parts, and one part's aggregate.

Theory of operation
-------------------
With ``param_shards = P`` the flattened parameter vector (``optim.flatten``:
the parameters in sorted name order, each raveled) is cut into P contiguous
column ranges (``sharding.ranges``). Two graph shapes carry that cut:

* ``split_outputs(graph, model, ranges, prefix)``: a gradient (or local-steps)
  graph whose update outputs ``<prefix><name>`` are raveled, concatenated in
  sorted name order and sliced into ``part.0`` ... ``part.{P-1}``; the
  graph's outputs become ``loss`` (and ``correct`` if it had it) and the
  parts. Slicing moves bits only: the parts are the update's own numbers.
  Each part is its own output CID, so the peer that aggregates part i
  fetches only its range of every update.
* ``aggregate_graph(updates, length, mode, ...)``: on the part's owner,
  inputs ``u0`` ... ``u{n-1}`` (the updates' part i), ``p`` and ``v`` (the
  part's parameters and optimiser velocity), outputs ``p`` and ``v`` new.
  The mean is the running sum ``((u0 + u1) + u2) ...`` divided by n, as
  numpy's mean over axis 0 computes it; then the optimiser of ``inprocess.
  Updater`` element by element (sync: SGD with momentum, ``v = mu v + g``,
  ``p = p - lr v``; local: DiLoCo's outer Nesterov step on the mean delta),
  so a sharded run computes the numbers of an unsharded one. Only the mean
  is offered here (opset 2 has no sort for a median).

``join(parts, like)`` is the inverse of the cut: the parts concatenated and
unflattened into named parameters. Pure functions.
"""

from __future__ import annotations

import numpy as np

from ..ops.graph import Graph
from .model import Model, Params
from .optim import unflatten


def part_name(i: int) -> str:
    return f"part.{i}"


def split_outputs(graph: Graph, model: Model, ranges: list[tuple[int, int]], prefix: str) -> Graph:
    """``graph`` with its update outputs (``prefix`` + parameter name) replaced by the parts of their
    flattened concatenation."""
    d = graph.to_dict(binary=True)
    names = sorted(model.param_names())
    nodes = list(d["nodes"])
    nodes += [{"name": f"flat.{n}", "op": "reshape", "inputs": [prefix + n], "shape": [-1]} for n in names]
    nodes.append({"name": "flat", "op": "concat", "inputs": [f"flat.{n}" for n in names], "axis": 0})
    nodes += [{"name": part_name(i), "op": "slice", "inputs": ["flat"], "starts": [lo], "ends": [hi]}
              for i, (lo, hi) in enumerate(ranges)]
    kept = [o for o in d["outputs"] if not o.startswith(prefix)]
    return Graph.from_dict({**d, "nodes": nodes, "outputs": kept + [part_name(i) for i in range(len(ranges))]})


def _const(name: str, value: float) -> dict:
    return {"name": name, "op": "const", "value": float(value), "dtype": "float64"}


def aggregate_graph(updates: int, length: int, mode: str, lr: float, momentum: float) -> Graph:
    """One part's aggregate on its owner (see the module docstring). ``mode`` sync: ``lr`` and
    ``momentum`` are SGD's; local: the outer optimiser's (Nesterov)."""
    if updates < 1 or length < 1 or mode not in ("sync", "local"):
        raise ValueError(f"cannot aggregate {updates} updates of {length} values in mode {mode!r}")
    spec = {"dtype": "float64", "shape": [length]}
    inputs = {**{f"u{j}": spec for j in range(updates)}, "p": spec, "v": spec}
    nodes: list[dict] = [_const("n", updates), _const("lr", lr), _const("mu", momentum), _const("one", 1.0)]
    total = "u0"
    for j in range(1, updates):
        nodes.append({"name": f"sum{j}", "op": "add", "inputs": [total, f"u{j}"]})
        total = f"sum{j}"
    nodes.append({"name": "mean", "op": "div", "inputs": [total, "n"]})
    g = "mean"
    if mode == "local":               # the delta is a negative gradient
        nodes.append({"name": "g", "op": "neg", "inputs": ["mean"]})
        g = "g"
    if momentum:
        nodes += [{"name": "mv", "op": "mul", "inputs": ["mu", "v"]},
                  {"name": "v_new", "op": "add", "inputs": ["mv", g]}]
        step = "v_new"
        if mode == "local":           # Nesterov: g + mu v_new
            nodes += [{"name": "mv2", "op": "mul", "inputs": ["mu", "v_new"]},
                      {"name": "nest", "op": "add", "inputs": [g, "mv2"]}]
            step = "nest"
    else:                             # no momentum: the velocity is kept as it is
        nodes.append({"name": "v_new", "op": "mul", "inputs": ["v", "one"]})
        step = g
    nodes += [{"name": "lv", "op": "mul", "inputs": ["lr", step]},
              {"name": "p_new", "op": "sub", "inputs": ["p", "lv"]}]
    return Graph.from_dict({"opset": 2, "inputs": inputs, "nodes": nodes, "outputs": ["p_new", "v_new"]})


def join(parts: list[np.ndarray], like: Params) -> Params:
    """The parts (in order) concatenated and unflattened into ``like``'s names and shapes."""
    return {n: np.array(v) for n, v in unflatten(np.concatenate([np.ravel(p) for p in parts]), like).items()}
