"""Every opset-1 operator against numpy (opset 2's training operators: test_op_train.py), on hypothesis-generated shapes and dtypes.

Each case builds a one-node graph, checks that inference predicts the exact
dtype and shape of the kernel's result, and compares the values bit for bit
(NaNs in the same places) with a numpy reference.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from p2pcompute.errors import UserError
from p2pcompute.ops.graph import Graph, InputDecl, Node
from p2pcompute.ops.opset import (
    ALL, BOOL, FLOATS, INTS, NUMERIC, SIGNED, Spec, all_ops,
)

SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def run_op(op: str, arrays: list[np.ndarray], **attrs) -> np.ndarray:
    decls = [InputDecl(f"x{i}") for i in range(len(arrays))]
    graph = Graph(decls, [Node("y", op, tuple(d.name for d in decls), attrs)], ["y"])
    feeds = {d.name: a for d, a in zip(decls, arrays)}
    predicted = graph.infer({k: Spec.of(v) for k, v in feeds.items()})["y"]
    out = graph.run(feeds)["y"]
    assert Spec.of(out) == predicted
    return out


def same(got: np.ndarray, want) -> None:
    want = np.asarray(want)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def dtypes(names: frozenset[str]):
    return st.sampled_from(sorted(names)).map(np.dtype)


def array_of(dtype, shape):
    return hnp.arrays(dtype, shape)


@st.composite
def operands(draw, names: frozenset[str], count: int = 2):
    dtype = draw(dtypes(names))
    shapes = draw(hnp.mutually_broadcastable_shapes(num_shapes=count, max_dims=3, max_side=4))
    return [draw(array_of(dtype, s)) for s in shapes.input_shapes]


def quiet(fn, *args, **kw):
    with np.errstate(all="ignore"):
        return fn(*args, **kw)


BINARY = {"add": (np.add, NUMERIC), "sub": (np.subtract, NUMERIC), "mul": (np.multiply, NUMERIC),
          "div": (np.true_divide, FLOATS), "equal": (np.equal, ALL), "not_equal": (np.not_equal, ALL),
          "less": (np.less, ALL), "less_equal": (np.less_equal, ALL), "greater": (np.greater, ALL),
          "greater_equal": (np.greater_equal, ALL), "logical_and": (np.logical_and, BOOL),
          "logical_or": (np.logical_or, BOOL), "logical_xor": (np.logical_xor, BOOL)}


@pytest.mark.parametrize("op", sorted(BINARY))
@SETTINGS
@given(data=st.data())
def test_binary(op, data):
    fn, allowed = BINARY[op]
    a, b = data.draw(operands(allowed))
    same(run_op(op, [a, b]), quiet(fn, a, b))


UNARY = {"neg": (np.negative, SIGNED | FLOATS), "exp": (np.exp, FLOATS), "log": (np.log, FLOATS),
         "sqrt": (np.sqrt, FLOATS), "tanh": (np.tanh, FLOATS),
         "relu": (lambda x: np.maximum(x, np.zeros((), x.dtype)), NUMERIC),
         "sigmoid": (lambda x: 1 / (1 + np.exp(-x)), FLOATS),
         "logical_not": (np.logical_not, BOOL)}


@pytest.mark.parametrize("op", sorted(UNARY))
@SETTINGS
@given(data=st.data())
def test_unary(op, data):
    fn, allowed = UNARY[op]
    (x,) = data.draw(operands(allowed, 1))
    same(run_op(op, [x]), quiet(fn, x))


@SETTINGS
@given(data=st.data())
def test_where(data):
    dtype = data.draw(dtypes(ALL))
    shapes = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=3, max_side=4))
    cond = data.draw(array_of(bool, shapes.input_shapes[0]))
    x, y = (data.draw(array_of(dtype, s)) for s in shapes.input_shapes[1:])
    same(run_op("where", [cond, x, y]), np.where(cond, x, y))


@SETTINGS
@given(data=st.data())
def test_clip(data):
    (x,) = data.draw(operands(NUMERIC, 1))
    info = np.iinfo(x.dtype) if x.dtype.kind in "iu" else np.finfo(x.dtype)
    bound = st.integers(int(max(info.min, -1000)), int(min(info.max, 1000)))
    lo, hi = sorted((data.draw(bound), data.draw(bound)))
    lo = data.draw(st.sampled_from([lo, None]))
    same(run_op("clip", [x], min=lo, max=hi),
         quiet(np.clip, x, None if lo is None else x.dtype.type(lo), x.dtype.type(hi)))


@SETTINGS
@given(data=st.data())
def test_cast(data):
    (x,) = data.draw(operands(INTS | BOOL | FLOATS, 1))
    if x.dtype.kind == "f":  # float -> int of NaN/out-of-range values is not defined: keep finite
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0).clip(-100, 100)
    target = data.draw(dtypes(ALL))
    want = (x != 0) if target.kind == "b" else quiet(x.astype, target)
    same(run_op("cast", [x], dtype=target.name), want)


@SETTINGS
@given(data=st.data())
def test_normalized_difference(data):
    a, b = data.draw(operands(NUMERIC))
    wide = a.dtype.itemsize >= 4 and a.dtype.name != "float32"
    ft = np.float64 if wide else np.float32
    af, bf = a.astype(ft), b.astype(ft)
    same(run_op("normalized_difference", [a, b]), quiet(lambda: (af - bf) / (af + bf)))


@st.composite
def matmul_operands(draw):
    dtype = draw(dtypes(NUMERIC - {"float16"}))
    n, k, m = (draw(st.integers(1, 5)) for _ in range(3))
    batch = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=2, max_side=3))
    ra, rb = draw(st.sampled_from(["vec", "mat"])), draw(st.sampled_from(["vec", "mat"]))
    sa = (k,) if ra == "vec" else batch.input_shapes[0] + (n, k)
    sb = (k,) if rb == "vec" else batch.input_shapes[1] + (k, m)
    finite = {"allow_nan": False, "allow_infinity": False} if dtype.kind == "f" else {}
    elems = hnp.from_dtype(dtype, **finite)
    return draw(hnp.arrays(dtype, sa, elements=elems)), draw(hnp.arrays(dtype, sb, elements=elems))


@SETTINGS
@given(ab=matmul_operands())
def test_matmul(ab):
    a, b = ab
    same(run_op("matmul", [a, b]), quiet(np.matmul, a, b))


@st.composite
def reduction_case(draw, names):
    (x,) = draw(operands(names, 1))
    axes = draw(st.none() | st.lists(st.integers(0, max(x.ndim - 1, 0)), unique=True, max_size=x.ndim))
    if axes is not None and x.ndim == 0:
        axes = []
    return x, axes, draw(st.booleans())


REDUCE = {"reduce_sum": (lambda x, ax, kd: np.sum(x, axis=ax, keepdims=kd, dtype=x.dtype), NUMERIC),
          "reduce_mean": (lambda x, ax, kd: np.mean(x, axis=ax, keepdims=kd), FLOATS),
          "reduce_max": (lambda x, ax, kd: np.max(x, axis=ax, keepdims=kd), ALL),
          "reduce_min": (lambda x, ax, kd: np.min(x, axis=ax, keepdims=kd), ALL)}


@pytest.mark.parametrize("op", sorted(REDUCE))
@SETTINGS
@given(data=st.data())
def test_reductions(op, data):
    fn, allowed = REDUCE[op]
    x, axes, keep = data.draw(reduction_case(allowed))
    ax = None if axes is None else tuple(axes)
    reduced = range(x.ndim) if axes is None else axes
    if op in ("reduce_max", "reduce_min") and any(x.shape[a] == 0 for a in reduced):
        with pytest.raises(UserError, match="empty axis"):
            run_op(op, [x], axes=axes, keepdims=keep)
        return
    same(run_op(op, [x], axes=axes, keepdims=keep), np.asarray(quiet(fn, x, ax, keep)))


@SETTINGS
@given(data=st.data())
def test_softmax(data):
    (x,) = data.draw(operands(FLOATS, 1))
    if x.ndim == 0:
        x = x.reshape(1)
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    with np.errstate(all="ignore"):
        e = np.exp(x - np.max(x, axis=axis, keepdims=True)) if x.size else x
        want = e / np.sum(e, axis=axis, keepdims=True) if x.size else x
    same(run_op("softmax", [x], axis=axis), want)


@SETTINGS
@given(data=st.data())
def test_transpose_reshape(data):
    (x,) = data.draw(operands(ALL, 1))
    perm = data.draw(st.permutations(range(x.ndim)))
    same(run_op("transpose", [x], perm=list(perm)), np.transpose(x, perm))
    same(run_op("transpose", [x]), x.T)
    flat = [x.size]
    same(run_op("reshape", [x], shape=flat), x.reshape(flat))
    if x.size:
        same(run_op("reshape", [x], shape=[-1, 1]), x.reshape(-1, 1))


@SETTINGS
@given(data=st.data())
def test_slice(data):
    (x,) = data.draw(operands(ALL, 1))
    if x.ndim == 0:
        x = x.reshape(1)
    axes = data.draw(st.lists(st.integers(0, x.ndim - 1), unique=True, min_size=1))
    idx = st.integers(-6, 6)
    starts, ends = [data.draw(idx) for _ in axes], [data.draw(idx) for _ in axes]
    steps = [data.draw(st.integers(-3, 3).filter(bool)) for _ in axes]
    key = [slice(None)] * x.ndim
    for a, s, e, st_ in zip(axes, starts, ends, steps):
        key[a] = slice(s, e, st_)
    same(run_op("slice", [x], starts=starts, ends=ends, axes=axes, steps=steps), x[tuple(key)])


@SETTINGS
@given(data=st.data())
def test_concat(data):
    dtype = data.draw(dtypes(ALL))
    base = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=4))
    axis = data.draw(st.integers(0, len(base) - 1))
    parts = []
    for _ in range(data.draw(st.integers(1, 4))):
        shape = list(base)
        shape[axis] = data.draw(st.integers(0, 3))
        parts.append(data.draw(array_of(dtype, tuple(shape))))
    same(run_op("concat", parts, axis=axis), np.concatenate(parts, axis=axis))


def test_every_registered_operator_is_tested_here():
    tested = set(BINARY) | set(UNARY) | set(REDUCE) | {
        "where", "clip", "cast", "normalized_difference", "matmul", "softmax", "transpose",
        "reshape", "slice", "concat", "const"}
    assert {op.name for op in all_ops() if op.since == 1} == tested
    for op in all_ops():
        assert op.doc and op.category


def test_const_node_and_ints_wrap():
    graph = Graph.from_dict({"inputs": {"x": {}}, "nodes": [
        {"name": "k", "op": "const", "value": [200, 100], "dtype": "uint8"},
        {"name": "y", "op": "add", "inputs": ["x", "k"]}], "outputs": ["y"]})
    same(graph.run({"x": np.array([100, 100], np.uint8)})["y"], np.array([44, 200], np.uint8))


def test_float_results_repeat_bit_for_bit():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((64, 64)).astype(np.float32)
    runs = {run_op("softmax", [run_op("matmul", [x, x])]).tobytes() for _ in range(3)}
    assert len(runs) == 1
