"""The Python DSL: lazy tensors that build an operator graph (``from p2pcompute import tensor as t``).

    >>> import numpy as np
    >>> from p2pcompute import tensor as t
    >>> a, b, c = np.ones((2, 3)), np.ones((3, 4)), np.ones(4)
    >>> float(t.from_numpy(a).matmul(b).add(c).relu().reduce_sum().compute())
    32.0

Every method returns a new ``Tensor``: an expression node holding its
operator, its argument tensors and its attributes. Dtype and shape are
inferred as each node is built, so a mistake (``matmul`` of [2,3] by [4,5])
raises ``UserError`` at the line that makes it, before anything runs.

Numpy arrays passed as arguments are wrapped automatically; Python numbers
become constants of the other operand's dtype (opset 1 never promotes). Arrays
of at most ``graph.INLINE_LIMIT`` bytes become ``const`` nodes inside the
graph; larger ones become graph *inputs* whose data is kept beside the graph
(``to_graph`` returns it as feeds), because large tensors travel by CID, never
inline.

``compute()`` runs the graph in this process with the numpy kernels;
``compute(client)`` — ``client`` a ``ControlClient`` of a running daemon —
runs it on that daemon's sandboxed executor (``ops/remote.py``), inputs over
``INLINE_LIMIT`` bytes travelling as CIDs of content-addressed data.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import UserError
from .graph import INLINE_LIMIT, Graph, InputDecl, Node
from .opset import DTYPE_NAMES, Spec, check_attrs, lookup


class Tensor:
    """A lazy value: an operator applied to other tensors (or an input, or a constant)."""

    __slots__ = ("op", "args", "attrs", "spec", "data", "label")

    def __init__(self, op: str, args: Sequence["Tensor"], attrs: dict[str, Any], *,
                 data: np.ndarray | None = None, label: str | None = None,
                 spec: Spec | None = None) -> None:
        self.op, self.args, self.attrs, self.data, self.label = op, tuple(args), attrs, data, label
        if spec is None:
            opdef = lookup(op)
            try:
                spec = opdef.infer([a.spec for a in self.args], check_attrs(opdef, attrs))
            except UserError as exc:
                shown = ", ".join(str(a.spec) for a in self.args)
                raise UserError(f"{op}({shown}): {exc}") from None
        self.spec = spec

    @property
    def dtype(self) -> np.dtype:
        return self.spec.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return self.spec.shape

    def __repr__(self) -> str:
        return f"<Tensor {self.op} {self.spec}>"

    def _apply(self, op: str, *others: Any, **attrs: Any) -> "Tensor":
        return Tensor(op, (self, *(lift(o, like=self) for o in others)), attrs)

    # --- operators as methods (see `p2pcompute ops list` for their semantics) ---
    def matmul(self, other: Any) -> "Tensor": return self._apply("matmul", other)
    def add(self, other: Any) -> "Tensor": return self._apply("add", other)
    def sub(self, other: Any) -> "Tensor": return self._apply("sub", other)
    def mul(self, other: Any) -> "Tensor": return self._apply("mul", other)
    def div(self, other: Any) -> "Tensor": return self._apply("div", other)
    def neg(self) -> "Tensor": return self._apply("neg")
    def exp(self) -> "Tensor": return self._apply("exp")
    def log(self) -> "Tensor": return self._apply("log")
    def sqrt(self) -> "Tensor": return self._apply("sqrt")
    def relu(self) -> "Tensor": return self._apply("relu")
    def sigmoid(self) -> "Tensor": return self._apply("sigmoid")
    def tanh(self) -> "Tensor": return self._apply("tanh")
    def softmax(self, axis: int = -1) -> "Tensor": return self._apply("softmax", axis=axis)
    def equal(self, other: Any) -> "Tensor": return self._apply("equal", other)
    def not_equal(self, other: Any) -> "Tensor": return self._apply("not_equal", other)
    def less(self, other: Any) -> "Tensor": return self._apply("less", other)
    def less_equal(self, other: Any) -> "Tensor": return self._apply("less_equal", other)
    def greater(self, other: Any) -> "Tensor": return self._apply("greater", other)
    def greater_equal(self, other: Any) -> "Tensor": return self._apply("greater_equal", other)
    def logical_and(self, other: Any) -> "Tensor": return self._apply("logical_and", other)
    def logical_or(self, other: Any) -> "Tensor": return self._apply("logical_or", other)
    def logical_xor(self, other: Any) -> "Tensor": return self._apply("logical_xor", other)
    def logical_not(self) -> "Tensor": return self._apply("logical_not")

    def normalized_difference(self, other: Any) -> "Tensor":
        return self._apply("normalized_difference", other)

    def where(self, x: Any, y: Any) -> "Tensor":
        """``self`` is the bool condition: x where true, else y."""
        if not isinstance(x, Tensor) and isinstance(y, Tensor):
            x = lift(x, like=y)
        x = lift(x)
        return Tensor("where", (self, x, lift(y, like=x)), {})

    def clip(self, min: Any = None, max: Any = None) -> "Tensor":  # noqa: A002
        return self._apply("clip", min=min, max=max)

    def cast(self, dtype: Any) -> "Tensor":
        return self._apply("cast", dtype=np.dtype(dtype).name)

    def reduce_sum(self, axes: Any = None, keepdims: bool = False) -> "Tensor":
        return self._apply("reduce_sum", axes=_axes(axes), keepdims=keepdims)

    def reduce_mean(self, axes: Any = None, keepdims: bool = False) -> "Tensor":
        return self._apply("reduce_mean", axes=_axes(axes), keepdims=keepdims)

    def reduce_max(self, axes: Any = None, keepdims: bool = False) -> "Tensor":
        return self._apply("reduce_max", axes=_axes(axes), keepdims=keepdims)

    def reduce_min(self, axes: Any = None, keepdims: bool = False) -> "Tensor":
        return self._apply("reduce_min", axes=_axes(axes), keepdims=keepdims)

    def transpose(self, perm: Sequence[int] | None = None) -> "Tensor":
        return self._apply("transpose", perm=None if perm is None else list(perm))

    def reshape(self, shape: Sequence[int]) -> "Tensor":
        return self._apply("reshape", shape=list(shape))

    def slice(self, starts: Sequence[int], ends: Sequence[int], axes: Sequence[int] | None = None,
              steps: Sequence[int] | None = None) -> "Tensor":
        return self._apply("slice", starts=list(starts), ends=list(ends),
                           axes=None if axes is None else list(axes),
                           steps=None if steps is None else list(steps))

    __add__, __sub__, __mul__, __truediv__, __matmul__ = add, sub, mul, div, matmul
    __lt__, __le__, __gt__, __ge__ = less, less_equal, greater, greater_equal
    __neg__ = neg

    def __radd__(self, other: Any) -> "Tensor": return lift(other, like=self).add(self)
    def __rsub__(self, other: Any) -> "Tensor": return lift(other, like=self).sub(self)
    def __rmul__(self, other: Any) -> "Tensor": return lift(other, like=self).mul(self)
    def __rtruediv__(self, other: Any) -> "Tensor": return lift(other, like=self).div(self)

    def compute(self, client: Any = None, feeds: dict[str, Any] | None = None) -> np.ndarray:
        """This tensor's value: computed here, or by the daemon behind ``client``."""
        return compute(self, feeds=feeds, client=client)[0]


def _axes(axes: Any) -> list[int] | None:
    if axes is None:
        return None
    return [int(axes)] if isinstance(axes, (int, np.integer)) else [int(a) for a in axes]


def from_numpy(array: Any, name: str | None = None) -> Tensor:
    """Wrap an array: a const if small and unnamed, otherwise a graph input holding the data."""
    array = np.asarray(array)
    if array.dtype.name not in DTYPE_NAMES:
        raise UserError(f"dtype {array.dtype} is not supported (supported: {', '.join(DTYPE_NAMES)})")
    array = array.astype(array.dtype.newbyteorder("="), copy=False)
    if array.nbytes <= INLINE_LIMIT and name is None:
        return Tensor("const", (), {"value": array})
    return Tensor("input", (), {}, data=array, label=name, spec=Spec.of(array))


def input(name: str, dtype: Any, shape: Sequence[int]) -> Tensor:  # noqa: A001
    """A placeholder whose data is supplied at ``compute(feeds={name: ...})``."""
    return Tensor("input", (), {}, label=name, spec=Spec(np.dtype(dtype), tuple(shape)))


def const(value: Any, dtype: Any) -> Tensor:
    return from_numpy(np.asarray(value, dtype=dtype))


def lift(value: Any, like: Tensor | None = None) -> Tensor:
    """A Tensor for ``value``; a Python number takes ``like``'s dtype."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (bool, int, float)) and like is not None:
        dtype = like.dtype
        if dtype.kind in "iu" and (not float(value).is_integer()
                                   or not np.iinfo(dtype).min <= value <= np.iinfo(dtype).max):
            raise UserError(f"{value!r} is not a {dtype.name} value")
        return Tensor("const", (), {"value": np.asarray(value, dtype=dtype)})
    return from_numpy(value)


def where(cond: Any, x: Any, y: Any) -> Tensor:
    return lift(cond).where(x, y)


def concat(tensors: Sequence[Any], axis: int = 0) -> Tensor:
    return Tensor("concat", [lift(x) for x in tensors], {"axis": axis})


def normalized_difference(a: Any, b: Any) -> Tensor:
    return lift(a).normalized_difference(b)


def to_graph(*outputs: Tensor) -> tuple[Graph, dict[str, np.ndarray]]:
    """The graph computing ``outputs`` (nodes named out0, out1, ...) and the data of its inputs."""
    out_names = {id(out): f"out{i}" for i, out in reversed(list(enumerate(outputs)))}
    if len(out_names) != len(outputs):
        raise UserError("the same tensor is listed twice as an output")
    names: dict[int, str] = {}
    inputs: list[InputDecl] = []
    feeds: dict[str, np.ndarray] = {}
    nodes: list[Node] = []

    def emit(tensor: Tensor) -> None:
        if tensor.op == "input":
            name = tensor.label or f"x{len(inputs)}"
            if any(d.name == name for d in inputs):
                raise UserError(f"two different inputs are named {name!r}")
            inputs.append(InputDecl(name, tensor.dtype, tensor.shape))
            if tensor.data is not None:
                feeds[name] = tensor.data
        else:
            name = out_names.get(id(tensor), f"n{len(nodes)}")
            nodes.append(Node(name, tensor.op, tuple(names[id(a)] for a in tensor.args), tensor.attrs))
        names[id(tensor)] = name

    for root in outputs:  # iterative post-order walk: deep graphs do not hit the recursion limit
        stack: list[tuple[Tensor, bool]] = [(root, False)]
        while stack:
            tensor, expanded = stack.pop()
            if id(tensor) in names:
                continue
            if expanded:
                emit(tensor)
            else:
                stack.append((tensor, True))
                stack.extend((a, False) for a in reversed(tensor.args))
    return Graph(inputs, nodes, [names[id(out)] for out in outputs]), feeds


def compute(*outputs: Tensor, feeds: dict[str, Any] | None = None, client: Any = None) -> list[np.ndarray]:
    """Evaluate ``outputs`` (here, or on ``client``'s daemon); ``feeds`` fill ``input(...)`` placeholders."""
    graph, bound = to_graph(*outputs)
    if client is not None:
        from .remote import compute_on

        return compute_on(client, graph, {**bound, **(feeds or {})})
    results = graph.run({**bound, **(feeds or {})})
    return [results[name] for name in graph.outputs]
