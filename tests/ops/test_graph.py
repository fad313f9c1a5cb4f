"""Graphs: errors before execution, serialization to CBOR and YAML and back, the DSL."""

from __future__ import annotations

import dataclasses

import cbor2
import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pcompute import tensor as t
from p2pcompute.errors import UserError
from p2pcompute.ops import opset
from p2pcompute.ops.graph import INLINE_LIMIT, Graph, InputDecl, Node


@pytest.fixture
def count_kernel_calls(monkeypatch):
    calls: list[str] = []
    opset.lookup("add")  # make sure every operator is registered

    for name, opdef in list(opset.REGISTRY.items()):
        def counting(xs, attrs, _k=opdef.kernel, _n=name):
            calls.append(_n)
            return _k(xs, attrs)
        monkeypatch.setitem(opset.REGISTRY, name, dataclasses.replace(opdef, kernel=counting))
    return calls


def test_shape_error_is_caught_before_any_kernel_runs(count_kernel_calls):
    graph = Graph([InputDecl("a"), InputDecl("b"), InputDecl("c")], [
        Node("p", "matmul", ("a", "b")),
        Node("q", "add", ("p", "c")),
        Node("r", "relu", ("q",))], ["r"])
    feeds = {"a": np.ones((2, 3)), "b": np.ones((3, 4)), "c": np.ones(3)}
    with pytest.raises(UserError) as err:
        graph.run(feeds)
    msg = str(err.value)
    assert "node 'q'" in msg and "add(" in msg and "float64[2, 4]" in msg and "float64[3]" in msg
    assert "do not broadcast" in msg
    assert count_kernel_calls == []
    feeds["c"] = np.ones(4)
    assert graph.run(feeds)["r"].shape == (2, 4)
    assert count_kernel_calls == ["matmul", "add", "relu"]


@pytest.mark.parametrize("nodes, feeds, expected", [
    ([Node("y", "matmul", ("a", "b"))], {"a": np.ones((2, 3)), "b": np.ones((4, 5))},
     r"matmul\(float64\[2, 3\], float64\[4, 5\]\): inner dimensions differ"),
    ([Node("y", "add", ("a", "b"))], {"a": np.ones(3, np.float32), "b": np.ones(3)},
     r"add\(float32\[3\], float64\[3\]\).*insert a cast"),
    ([Node("y", "div", ("a", "b"))], {"a": np.ones(3, np.int32), "b": np.ones(3, np.int32)},
     r"div\(int32\[3\], int32\[3\]\).*needs one of float16, float32, float64"),
    ([Node("y", "reshape", ("a",), {"shape": [4, 4]})], {"a": np.ones((2, 3))},
     r"reshape\(float64\[2, 3\]\): cannot reshape 6 elements into \[4, 4\]"),
    ([Node("y", "reduce_sum", ("a",), {"axes": [2]})], {"a": np.ones((2, 3))},
     r"reduce_sum\(float64\[2, 3\]\): axis 2 is out of range for rank 2"),
    ([Node("y", "concat", ("a", "b"), {"axis": 0})], {"a": np.ones((2, 3)), "b": np.ones((2, 4))},
     r"concat\(float64\[2, 3\], float64\[2, 4\]\): shapes .* differ outside axis 0"),
    ([Node("y", "where", ("a", "b", "b"))], {"a": np.ones(2), "b": np.ones(2)},
     r"where\(float64\[2\].*condition has dtype float64"),
])
def test_inference_errors_name_operator_and_shapes(nodes, feeds, expected):
    graph = Graph([InputDecl(k) for k in feeds], nodes, ["y"])
    with pytest.raises(UserError, match=expected):
        graph.run(feeds)


@pytest.mark.parametrize("data, expected", [
    ({"nodes": [{"name": "y", "op": "frobnicate", "inputs": ["x"]}], "outputs": ["y"],
      "inputs": {"x": {}}}, "unknown operator 'frobnicate'"),
    ({"nodes": [{"name": "y", "op": "relu", "inputs": ["z"]}], "outputs": ["y"],
      "inputs": {"x": {}}}, "reads 'z', which is not an input or an earlier node"),
    ({"nodes": [{"name": "y", "op": "relu", "inputs": ["x", "x"]}], "outputs": ["y"],
      "inputs": {"x": {}}}, r"takes 1 input\(s\), got 2"),
    ({"nodes": [{"name": "y", "op": "softmax", "inputs": ["x"], "axis": "last"}],
      "outputs": ["y"], "inputs": {"x": {}}}, "attribute 'axis' must be an integer"),
    ({"nodes": [{"name": "y", "op": "relu", "inputs": ["x"], "alpha": 2}],
      "outputs": ["y"], "inputs": {"x": {}}}, r"unknown attribute\(s\) \['alpha'\]"),
    ({"nodes": [{"name": "x", "op": "relu", "inputs": ["x"]}], "outputs": ["x"],
      "inputs": {"x": {}}}, "name 'x' is used twice"),
    ({"nodes": [], "outputs": ["q"], "inputs": {"x": {}}}, "output 'q' is not"),
    ({"opset": 9, "nodes": [], "outputs": ["x"], "inputs": {"x": {}}}, "needs opset 9"),
    ({"nodes": [{"name": "k", "op": "const", "value": [1.5], "dtype": "int8"}], "outputs": ["k"]},
     "non-integer values for int8"),
    ({"nodes": [{"name": "k", "op": "const", "value": [300], "dtype": "uint8"}], "outputs": ["k"]},
     "does not fit uint8"),
    ({"nodes": [{"name": "k", "op": "const", "value": [0] * (INLINE_LIMIT + 1), "dtype": "uint8"}],
      "outputs": ["k"]}, "make it an input"),
    ({"nodes": [], "outputs": ["x"], "inputs": {"x": {"dtype": "complex64"}}}, "dtype 'complex64'"),
    ({"nodes": [], "outputs": ["x"], "input": {}}, r"unknown key\(s\) \['input'\]"),
])
def test_structure_errors_are_clear(data, expected):
    with pytest.raises(UserError, match=expected):
        Graph.from_dict(data)


def test_declared_input_must_match_data():
    graph = Graph([InputDecl("x", np.dtype("uint16"), (4, 4))], [Node("y", "relu", ("x",))], ["y"])
    with pytest.raises(UserError, match=r"input 'x' is declared uint16\[4, 4\] but the data is uint16\[4, 5\]"):
        graph.run({"x": np.zeros((4, 5), np.uint16)})
    with pytest.raises(UserError, match=r"missing \['x'\], unknown \['z'\]"):
        graph.run({"z": np.zeros((4, 4), np.uint16)})
    assert graph.infer()["y"] == opset.Spec(np.dtype("uint16"), (4, 4))


UNARY_FLOAT = ["relu", "exp", "tanh", "sigmoid", "neg", "sqrt", "softmax"]


@st.composite
def dsl_programs(draw):
    """A random chain of DSL calls on a float32 matrix, with its input data."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(1, 6))
    x = t.from_numpy(rng.standard_normal((n, n)).astype(np.float32), name="x")
    for _ in range(draw(st.integers(1, 8))):
        step = draw(st.sampled_from(UNARY_FLOAT + ["add", "matmul", "mul", "clip", "transpose",
                                                   "slice", "cast_roundtrip"]))
        if step in UNARY_FLOAT:
            x = getattr(x, step)()
        elif step in ("add", "mul", "matmul"):
            x = getattr(x, step)(rng.standard_normal((n, n)).astype(np.float32))
        elif step == "clip":
            x = x.clip(-1.0, 2.0)
        elif step == "transpose":
            x = x.transpose()
        elif step == "slice":
            x = x.slice([0], [n]).reshape([n, n])
        else:
            x = x.cast("float64").cast("float32")
    return x.reduce_sum(axes=[0], keepdims=draw(st.booleans()))


@settings(max_examples=30, deadline=None)
@given(program=dsl_programs())
def test_graphs_roundtrip_cbor_and_yaml_and_compute_the_same(program):
    graph, feeds = t.to_graph(program)
    direct = program.compute()
    from_cbor = Graph.from_cbor(graph.to_cbor())
    from_yaml = Graph.from_dict(yaml.safe_load(graph.to_yaml()))
    assert from_cbor.digest() == graph.digest() == from_yaml.digest()
    for g in (from_cbor, from_yaml):
        assert g.run(feeds)[g.outputs[0]].tobytes() == direct.tobytes()


@settings(max_examples=200, deadline=None)
@given(blob=st.binary(max_size=200) | st.builds(
    lambda d: cbor2.dumps(d), st.recursive(
        st.none() | st.integers() | st.text(max_size=5) | st.binary(max_size=8),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
            st.sampled_from(["opset", "inputs", "nodes", "outputs", "name", "op", "value", "x"]),
            inner, max_size=4), max_leaves=12)))
def test_untrusted_graph_bytes_only_raise_user_error(blob):
    try:
        Graph.from_cbor(blob)
    except UserError:
        pass


def test_dsl_example_from_the_issue():
    rng = np.random.default_rng(1)
    a, b, c = (rng.standard_normal(s) for s in [(64, 32), (32, 16), (16,)])
    got = t.from_numpy(a).matmul(b).add(c).relu().reduce_sum().compute()
    assert got.tobytes() == np.maximum(a @ b + c, 0).sum().tobytes()


def test_dsl_rejects_bad_shapes_at_build_time_and_big_arrays_become_inputs():
    with pytest.raises(UserError, match=r"matmul\(float32\[2, 3\], float32\[4, 5\]\)"):
        t.from_numpy(np.ones((2, 3), np.float32)).matmul(np.ones((4, 5), np.float32))
    with pytest.raises(UserError, match="is not a uint8 value"):
        t.from_numpy(np.ones(3, np.uint8)).add(300)
    big = np.zeros(INLINE_LIMIT, np.float32)
    graph, feeds = t.to_graph((t.from_numpy(big) + 1.0).reduce_max())
    assert [d.name for d in graph.inputs] == ["x0"] and feeds["x0"] is not None
    assert len(graph.to_cbor()) < 1000
    placeholder = t.input("p", "int32", [3])
    assert (placeholder * 2).compute(feeds={"p": np.arange(3, dtype=np.int32)}).tolist() == [0, 2, 4]


def test_portability_summary():
    ints = t.input("a", "int32", [4, 4])
    assert t.to_graph(ints.matmul(ints).reduce_sum())[0].portable()
    floats = t.input("b", "float32", [4, 4])
    assert not t.to_graph(floats.matmul(floats))[0].portable()
    assert t.to_graph(floats.normalized_difference(floats).greater(0.5))[0].portable()
