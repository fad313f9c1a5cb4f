"""Opset 2's training operators: values against numpy, gradients against finite differences
(hypothesis over shapes, float64), and the opset versioning that keeps opset-1 graphs unchanged."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from p2pcompute.errors import UserError
from p2pcompute.gossip.capability import SUPPORTED_OPSET_NAMES
from p2pcompute.ops.graph import Graph, InputDecl, Node
from p2pcompute.ops.opset import SUPPORTED_OPSETS, Spec, all_ops, lookup

SETTINGS = settings(max_examples=30, deadline=None)
FLOATS = st.floats(-5, 5, allow_nan=False, width=64)


def run_op(op: str, arrays: list[np.ndarray], **attrs) -> np.ndarray:
    decls = [InputDecl(f"x{i}") for i in range(len(arrays))]
    graph = Graph(decls, [Node("y", op, tuple(d.name for d in decls), attrs)], ["y"])
    assert graph.opset == lookup(op).since  # no opset named: the lowest that has the operator
    feeds = {d.name: a for d, a in zip(decls, arrays)}
    out = graph.run(feeds)["y"]
    assert Spec.of(out) == graph.infer({k: Spec.of(v) for k, v in feeds.items()})["y"]
    return out


def numeric_grad(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central finite differences of the scalar function f at x."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        up = f(x)
        x[i] = old - eps
        down = f(x)
        x[i] = old
        grad[i] = (up - down) / (2 * eps)
    return grad


@st.composite
def ce_case(draw):
    batch = draw(st.lists(st.integers(1, 4), min_size=0, max_size=2).map(tuple))
    classes = draw(st.integers(1, 6))
    logits = draw(hnp.arrays(np.float64, batch + (classes,), elements=FLOATS))
    labels = draw(hnp.arrays(draw(st.sampled_from([np.int64, np.int32, np.uint8])), batch,
                             elements=st.integers(0, classes - 1)))
    dloss = draw(hnp.arrays(np.float64, batch, elements=st.floats(-2, 2, width=64)))
    return logits, labels, dloss


def reference_ce(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    logp = z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))
    return -np.take_along_axis(logp, y.astype(np.intp)[..., None], axis=-1)[..., 0]


@SETTINGS
@given(ce_case())
def test_softmax_cross_entropy_matches_numpy_and_its_gradient_matches_finite_differences(case):
    z, y, dloss = case
    loss = run_op("softmax_cross_entropy", [z, y])
    np.testing.assert_allclose(loss, reference_ce(z, y), rtol=1e-10, atol=1e-12)
    assert np.all(loss >= 0)
    grad = run_op("softmax_cross_entropy_grad", [z, y, dloss])

    def f(x):
        return float(np.sum(dloss * run_op("softmax_cross_entropy", [x, y])))

    np.testing.assert_allclose(grad, numeric_grad(f, z.copy()), rtol=1e-5, atol=1e-7)


@SETTINGS
@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=3, max_side=4),
                  elements=st.one_of(st.floats(-5, -0.01), st.floats(0.01, 5))), st.data())
def test_relu_grad_is_relus_gradient(x, data):
    dy = data.draw(hnp.arrays(np.float64, x.shape, elements=FLOATS))
    grad = run_op("relu_grad", [x, dy])

    def f(v):
        return float(np.sum(dy * run_op("relu", [v])))

    np.testing.assert_allclose(grad, numeric_grad(f, x.copy()), rtol=1e-6, atol=1e-8)
    np.testing.assert_array_equal(grad, np.where(x > 0, dy, 0.0))


@SETTINGS
@given(hnp.arrays(st.sampled_from([np.float64, np.float32, np.int32]),
                  hnp.array_shapes(min_dims=1, max_dims=3, max_side=5)), st.data())
def test_argmax_matches_numpy(x, data):
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    got = run_op("argmax", [x], axis=axis)
    np.testing.assert_array_equal(got, np.argmax(x, axis=axis))
    assert got.dtype == np.int64


def test_large_logits_stay_finite_and_bad_labels_give_nan_not_an_exception():
    z = np.array([[1000.0, -1000.0, 0.0], [0.0, 0.0, 0.0]])
    loss = run_op("softmax_cross_entropy", [z, np.array([0, 2])])
    np.testing.assert_allclose(loss, [0.0, np.log(3)], atol=1e-12)
    bad = np.array([3, -1])
    assert np.isnan(run_op("softmax_cross_entropy", [z, bad])).all()
    grad = run_op("softmax_cross_entropy_grad", [z, np.array([0, 7]), np.array(1.0)])
    assert np.isfinite(grad[0]).all() and np.isnan(grad[1]).all()
    np.testing.assert_allclose(grad[0], [0.0, 0.0, 0.0], atol=1e-12)


@pytest.mark.parametrize("op, specs, message", [
    ("softmax_cross_entropy", [Spec(np.dtype("int64"), (2, 3)), Spec(np.dtype("int64"), (2,))], "logits"),
    ("softmax_cross_entropy", [Spec(np.dtype("float64"), (2, 3)), Spec(np.dtype("float64"), (2,))], "labels"),
    ("softmax_cross_entropy", [Spec(np.dtype("float64"), (2, 3)), Spec(np.dtype("int64"), (3,))], "class axis"),
    ("softmax_cross_entropy", [Spec(np.dtype("float64"), (2, 0)), Spec(np.dtype("int64"), (2,))], "one class"),
    ("softmax_cross_entropy_grad", [Spec(np.dtype("float64"), (2, 3)), Spec(np.dtype("int64"), (2,)),
                                    Spec(np.dtype("float32"), ())], "must match"),
    ("softmax_cross_entropy_grad", [Spec(np.dtype("float64"), (2, 3)), Spec(np.dtype("int64"), (2,)),
                                    Spec(np.dtype("float64"), (2, 3))], "broadcast"),
    ("argmax", [Spec(np.dtype("float64"), ())], "rank"),
    ("argmax", [Spec(np.dtype("float64"), (0, 2))], "empty"),
])
def test_inference_refuses_bad_shapes_and_dtypes(op, specs, message):
    attrs = {"axis": 0} if op == "argmax" else {}
    with pytest.raises(UserError, match=message):
        lookup(op).infer(specs, attrs)


def test_opset_1_graphs_stay_opset_1_and_cannot_use_training_operators():
    v1 = {"inputs": {"x": {}}, "nodes": [{"name": "y", "op": "relu", "inputs": ["x"]}], "outputs": ["y"]}
    graph = Graph.from_dict(v1)
    assert graph.opset == 1 and graph.to_dict(binary=True)["opset"] == 1  # runs on old peers
    assert Graph.from_dict({**v1, "opset": 1}).digest() == graph.digest()
    v2 = {"inputs": {"x": {}, "d": {}}, "nodes": [{"name": "y", "op": "relu_grad", "inputs": ["x", "d"]}],
          "outputs": ["y"]}
    assert Graph.from_dict(v2).opset == 2
    with pytest.raises(UserError, match="needs opset 2"):
        Graph.from_dict({**v2, "opset": 1})
    with pytest.raises(UserError, match="needs opset 3"):
        Graph.from_dict({**v2, "opset": 3})


def test_every_training_operator_is_tested_and_advertised():
    assert {op.name for op in all_ops() if op.since == 2} == {
        "softmax_cross_entropy", "softmax_cross_entropy_grad", "relu_grad", "argmax"}
    assert SUPPORTED_OPSETS == (1, 2) and SUPPORTED_OPSET_NAMES == ("ops/v1", "ops/v2")
