"""Opset 1 operators that combine elements: matmul, softmax and the reductions.

Float results of these operators depend on summation order, so they are
bit-identical on one peer but not promised across machines (see opset.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import UserError
from .opset import (
    ALL, FLOATS, NUMERIC, Attr, OpDef, Spec, norm_axes, norm_axis, register,
    require_dtype, same_dtype,
)


def _ints_only(specs: list[Spec]) -> bool:
    return specs[0].dtype.kind in "iub"


def _matmul_infer(specs: list[Spec], attrs: dict[str, Any]) -> Spec:
    a, b = specs
    dtype = same_dtype(specs)
    require_dtype(a, NUMERIC)
    if not a.shape or not b.shape:
        raise UserError("matmul needs inputs of rank >= 1 (use mul for scalars)")
    sa = (1,) + a.shape if len(a.shape) == 1 else a.shape
    sb = b.shape + (1,) if len(b.shape) == 1 else b.shape
    if sa[-1] != sb[-2]:
        raise UserError(f"inner dimensions differ: {list(a.shape)} @ {list(b.shape)} "
                        f"contracts {sa[-1]} with {sb[-2]}")
    try:
        batch = tuple(np.broadcast_shapes(sa[:-2], sb[:-2]))
    except ValueError:
        raise UserError(f"batch dimensions {list(sa[:-2])} and {list(sb[:-2])} do not broadcast") from None
    out = batch + (sa[-2],) * (len(a.shape) > 1) + (sb[-1],) * (len(b.shape) > 1)
    return Spec(dtype, out)


def _matmul(xs: list[np.ndarray], attrs: dict[str, Any]) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.asarray(np.matmul(xs[0], xs[1]))


register(OpDef("matmul", "linear algebra",
               "matrix product with numpy semantics: a[..., n, k] @ b[..., k, m] -> [..., n, m], "
               "batch dimensions broadcast, a 1-D operand is a row (left) or column (right) vector "
               "and its axis is dropped; integers wrap around.",
               _matmul_infer, _matmul, 2, 2, portable=_ints_only))


def _softmax_infer(specs: list[Spec], attrs: dict[str, Any]) -> Spec:
    require_dtype(specs[0], FLOATS)
    norm_axis(attrs["axis"], len(specs[0].shape))
    return specs[0]


def _softmax(xs: list[np.ndarray], attrs: dict[str, Any]) -> np.ndarray:
    x, axis = xs[0], attrs["axis"]
    if x.size == 0:
        return x.copy()
    with np.errstate(all="ignore"):
        e = np.exp(x - np.max(x, axis=axis, keepdims=True))
        return e / np.sum(e, axis=axis, keepdims=True)


register(OpDef("softmax", "math",
               "softmax(x; axis=-1) = exp(x - max) / sum(exp(x - max)) along axis, for floats.",
               _softmax_infer, _softmax, 1, 1, (Attr("axis", "int", -1, "axis to normalise"),),
               portable=lambda specs: False))


_REDUCE_ATTRS = (Attr("axes", "ints?", None, "axes to reduce; null reduces all"),
                 Attr("keepdims", "bool", False, "keep reduced axes with length 1"))


def _reduction(name: str, allowed: frozenset[str], doc: str, *, nonempty: bool, portable) -> None:
    def infer(specs: list[Spec], attrs: dict[str, Any]) -> Spec:
        spec = specs[0]
        require_dtype(spec, allowed)
        axes = norm_axes(attrs["axes"], len(spec.shape))
        if nonempty and any(spec.shape[a] == 0 for a in axes):
            raise UserError(f"cannot take the {name.split('_')[1]} over an empty axis")
        keep = attrs["keepdims"]
        shape = tuple(1 if i in axes else d for i, d in enumerate(spec.shape) if keep or i not in axes)
        return Spec(spec.dtype, shape)

    fn = {"reduce_sum": np.sum, "reduce_mean": np.mean, "reduce_max": np.max, "reduce_min": np.min}[name]

    def kernel(xs: list[np.ndarray], attrs: dict[str, Any]) -> np.ndarray:
        x = xs[0]
        axes = norm_axes(attrs["axes"], x.ndim)
        extra = {"dtype": x.dtype} if name == "reduce_sum" else {}
        with np.errstate(all="ignore"):
            return np.asarray(fn(x, axis=axes, keepdims=attrs["keepdims"], **extra))

    register(OpDef(name, "reduction", doc, infer, kernel, 1, 1, _REDUCE_ATTRS, portable=portable))


_reduction("reduce_sum", NUMERIC, "sum over axes (keepdims); keeps the input dtype, so integer sums "
           "wrap around: cast to a wider type first. Floats use numpy's pairwise summation.",
           nonempty=False, portable=_ints_only)
_reduction("reduce_mean", FLOATS, "mean over axes (keepdims) for floats; an empty axis gives NaN.",
           nonempty=False, portable=lambda specs: False)
_reduction("reduce_max", ALL, "maximum over axes (keepdims); NaN wins; axes must not be empty.",
           nonempty=True, portable=lambda specs: True)
_reduction("reduce_min", ALL, "minimum over axes (keepdims); NaN wins; axes must not be empty.",
           nonempty=True, portable=lambda specs: True)
