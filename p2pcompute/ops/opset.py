"""Operator API v1: the registry, tensor specs, attribute checking, dtype classes.

An operator (``OpDef``) is a name, an input count, typed attributes, a shape
and dtype inference function and a numpy kernel. Inference runs on ``Spec``s
(dtype + shape) only, so a graph is checked completely before any kernel runs;
it raises ``UserError`` naming what is wrong, and the graph layer prefixes the
node, operator and input shapes.

Operator sets are versioned: ``OPSET_VERSION`` is the newest set this code
defines, ``SUPPORTED_OPSETS`` every set a peer runs (and advertises as
``ops/v<n>`` in its capability record). An opset is append-only once
published: an operator's semantics never change within a version; a change
means a new opset number. Each operator names the opset that introduced it
(``OpDef.since``); a graph declaring opset n may use only operators with
``since <= n``, so a graph of opset 1 means the same on every peer, old or
new. A graph that names no opset gets the lowest one its operators need
(``min_opset``), so graphs of opset-1 operators still run on opset-1 peers.

Versions: 1, the base set (op_elementwise, op_reduce, op_shape); 2, adds the
training operators of op_train.py (softmax cross-entropy and its gradient,
relu's gradient, argmax).

Reproducibility
---------------
* On one peer (same machine, same numpy and BLAS build, same thread count) the
  same inputs through the same opset give bit-identical outputs. The executor
  runs every kernel single-threaded (``OPENBLAS_NUM_THREADS=1`` and friends in
  its workers) so that BLAS thread scheduling cannot reorder sums.
* Across machines only some operators are bit-exact: integer arithmetic,
  comparisons, logical ops, ``where``, shape ops, ``cast`` between integer
  types, and the IEEE-754 correctly rounded float ops (add, sub, mul, div,
  neg, sqrt, relu, clip, normalized_difference, reduce_max/min). Float
  ``matmul`` (BLAS blocking and vendor), float ``reduce_sum``/``reduce_mean``
  and ``softmax`` (summation order can depend on SIMD width and numpy
  version), the transcendental functions ``exp``/``log``/``tanh``/``sigmoid``
  (SIMD implementations differ in the last ulp), and float-to-int ``cast`` of
  NaN or out-of-range values may differ. ``OpDef.portable(specs)`` says which
  case a node is in, and ``Graph.portable()`` summarises a graph.
* What verification must do: compare result bytes exactly when the graph is
  portable, or when both peers report the same ``environment_fingerprint()``;
  otherwise compare with a tolerance (``allclose`` with a relative error of a
  few ulps scaled by the reduction length) or re-run on a peer with the same
  fingerprint. Never treat an ulp-level difference of a non-portable graph
  as proof of cheating.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import UserError

OPSET_VERSION = 2
SUPPORTED_OPSETS = (1, 2)

BOOL = frozenset({"bool"})
SIGNED = frozenset({"int8", "int16", "int32", "int64"})
UNSIGNED = frozenset({"uint8", "uint16", "uint32", "uint64"})
INTS = SIGNED | UNSIGNED
FLOATS = frozenset({"float16", "float32", "float64"})
NUMERIC = INTS | FLOATS
ALL = NUMERIC | BOOL
DTYPE_NAMES = ("bool", "int8", "uint8", "int16", "uint16", "int32", "uint32",
               "int64", "uint64", "float16", "float32", "float64")

MAX_RANK = 32
MAX_LIST = 32  # longest list attribute (perm, axes, shape, ...)


@dataclass(frozen=True)
class Spec:
    """What inference knows about a value: its dtype and its shape."""

    dtype: np.dtype
    shape: tuple[int, ...]

    def __str__(self) -> str:
        return f"{self.dtype.name}{list(self.shape)}"

    @staticmethod
    def of(array: np.ndarray) -> "Spec":
        return Spec(np.dtype(array.dtype.name), tuple(array.shape))


REQUIRED = object()


@dataclass(frozen=True)
class Attr:
    """An operator attribute: ``kind`` is one of ATTR_KINDS."""

    name: str
    kind: str
    default: Any = REQUIRED
    doc: str = ""


ATTR_KINDS = ("int", "ints", "ints?", "number", "number?", "bool", "dtype", "tensor")


@dataclass(frozen=True)
class OpDef:
    name: str
    category: str
    doc: str
    infer: Callable[[list[Spec], dict[str, Any]], Spec]
    kernel: Callable[[list[np.ndarray], dict[str, Any]], np.ndarray]
    min_inputs: int
    max_inputs: int
    attrs: tuple[Attr, ...] = ()
    portable: Callable[[list[Spec]], bool] = field(default=lambda specs: True)
    since: int = 1  # the opset that introduced this operator

    def signature(self) -> str:
        if self.min_inputs == self.max_inputs:
            args = ", ".join(f"x{i}" for i in range(self.min_inputs))
        else:
            args = f"x0, ... (up to {self.max_inputs})"
        attrs = ", ".join(a.name if a.default is REQUIRED else f"{a.name}={a.default!r}"
                          for a in self.attrs)
        return f"{self.name}({args}{'; ' + attrs if attrs else ''})"


REGISTRY: dict[str, OpDef] = {}


def register(opdef: OpDef) -> OpDef:
    if opdef.name in REGISTRY:
        raise ValueError(f"operator {opdef.name} registered twice")
    REGISTRY[opdef.name] = opdef
    return opdef


def lookup(name: str, opset: int = OPSET_VERSION) -> OpDef:
    """The operator ``name`` as opset ``opset`` defines it; ``UserError`` if it has none."""
    _load_all()
    opdef = REGISTRY.get(name)
    if opdef is None:
        raise UserError(f"unknown operator {name!r} in opset {OPSET_VERSION}; "
                        "`p2pcompute ops list` shows the operators")
    if opdef.since > opset:
        raise UserError(f"operator {name!r} needs opset {opdef.since}; the graph declares opset {opset}")
    return opdef


def min_opset(op_names: Any) -> int:
    """The lowest opset that defines every named operator (unknown names count as 1)."""
    _load_all()
    return max((REGISTRY[n].since for n in op_names if n in REGISTRY), default=1)


def all_ops() -> list[OpDef]:
    _load_all()
    return sorted(REGISTRY.values(), key=lambda o: (o.category, o.name))


def _load_all() -> None:
    from . import op_elementwise, op_reduce, op_shape, op_train  # noqa: F401  (they register)


# --- attribute checking (attributes may come from untrusted CBOR or YAML) ---


def check_attrs(opdef: OpDef, attrs: dict[str, Any]) -> dict[str, Any]:
    """Validated attributes with defaults filled in; ``UserError`` otherwise."""
    known = {a.name for a in opdef.attrs}
    unknown = sorted(set(attrs) - known)
    if unknown:
        raise UserError(f"unknown attribute(s) {unknown}; {opdef.name} takes {sorted(known) or 'none'}")
    out: dict[str, Any] = {}
    for attr in opdef.attrs:
        if attr.name not in attrs:
            if attr.default is REQUIRED:
                raise UserError(f"missing attribute {attr.name!r}")
            out[attr.name] = attr.default
            continue
        out[attr.name] = _check_attr(attr, attrs[attr.name])
    return out


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _check_attr(attr: Attr, value: Any) -> Any:
    kind = attr.kind
    if kind.endswith("?") and value is None:
        return None
    base = kind.rstrip("?")
    if base == "int" and _is_int(value):
        return int(value)
    if base == "ints" and isinstance(value, (list, tuple)) and len(value) <= MAX_LIST \
            and all(_is_int(v) for v in value):
        return tuple(int(v) for v in value)
    if base == "number" and (_is_int(value) or isinstance(value, (float, np.floating))) \
            and not isinstance(value, bool):
        if isinstance(value, (float, np.floating)) and math.isnan(value):
            raise UserError(f"attribute {attr.name!r} must not be NaN")
        return value
    if base == "bool" and isinstance(value, bool):
        return value
    if base == "dtype" and isinstance(value, str) and value in DTYPE_NAMES:
        return np.dtype(value)
    if base == "dtype" and isinstance(value, np.dtype) and value.name in DTYPE_NAMES:
        return np.dtype(value.name)
    if base == "tensor" and isinstance(value, np.ndarray) and value.dtype.name in DTYPE_NAMES:
        return value
    raise UserError(f"attribute {attr.name!r} must be {_KIND_TEXT[kind]}, got {value!r:.60}")


_KIND_TEXT = {
    "int": "an integer", "ints": f"a list of at most {MAX_LIST} integers",
    "ints?": f"a list of at most {MAX_LIST} integers or null", "number": "a number",
    "number?": "a number or null", "bool": "true or false",
    "dtype": f"one of {', '.join(DTYPE_NAMES)}", "tensor": "a tensor",
}


# --- helpers for inference functions ----------------------------------------


def require_dtype(spec: Spec, allowed: frozenset[str], what: str = "input") -> None:
    if spec.dtype.name not in allowed:
        raise UserError(f"{what} has dtype {spec.dtype.name}, needs one of "
                        f"{', '.join(sorted(allowed))}" + _cast_hint(allowed))


def _cast_hint(allowed: frozenset[str]) -> str:
    return " (insert a cast)" if allowed else ""


def same_dtype(specs: list[Spec]) -> np.dtype:
    names = {s.dtype.name for s in specs}
    if len(names) > 1:
        raise UserError(f"inputs must share one dtype, got {', '.join(s.dtype.name for s in specs)} "
                        "(opset 1 never promotes implicitly; insert a cast)")
    return specs[0].dtype


def broadcast(specs: list[Spec]) -> tuple[int, ...]:
    try:
        return tuple(np.broadcast_shapes(*(s.shape for s in specs)))
    except ValueError:
        raise UserError("shapes " + " and ".join(str(list(s.shape)) for s in specs)
                        + " do not broadcast") from None


def norm_axis(axis: int, rank: int, what: str = "axis") -> int:
    if not -rank <= axis < rank:
        raise UserError(f"{what} {axis} is out of range for rank {rank}")
    return axis % rank


def norm_axes(axes: tuple[int, ...] | None, rank: int) -> tuple[int, ...]:
    if axes is None:
        return tuple(range(rank))
    out = tuple(norm_axis(a, rank) for a in axes)
    if len(set(out)) != len(out):
        raise UserError(f"axes {list(axes)} repeat an axis")
    return out


def environment_fingerprint() -> dict[str, Any]:
    """What decides bit-level results on this peer; equal fingerprints => equal bytes."""
    config = np.show_config(mode="dicts") if "mode" in np.show_config.__code__.co_varnames else {}
    blas = (config.get("Build Dependencies", {}) or {}).get("blas", {}) if isinstance(config, dict) else {}
    try:
        features = np._core._multiarray_umath.__cpu_features__  # type: ignore[attr-defined]
        enabled = sorted(k for k, v in features.items() if v)
    except AttributeError:
        enabled = []
    return {
        "opset": OPSET_VERSION,
        "numpy": np.__version__,
        "blas": f"{blas.get('name', '?')} {blas.get('version', '?')}",
        "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"),
        "cpu_features": enabled,
    }
