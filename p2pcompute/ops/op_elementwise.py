"""Opset 1 element-wise operators: arithmetic, math, comparisons, logic, where, clip, cast.

Common rules (they hold for every operator here):

* Binary and ternary operators broadcast like numpy and require their data
  inputs to share one dtype: opset 1 never promotes implicitly (insert a
  ``cast``). The output has that dtype (comparisons and logic give ``bool``).
* Integer arithmetic wraps around modulo 2**bits, as the hardware does.
* Float arithmetic follows IEEE-754: overflow gives ±inf, 0/0 and log of a
  negative number give NaN; no warning is raised and nothing stops.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..errors import UserError
from .opset import (
    BOOL, FLOATS, NUMERIC, SIGNED, Attr, OpDef, Spec, broadcast,
    register, require_dtype, same_dtype,
)

Kernel = Callable[..., np.ndarray]


def _quiet(fn: Kernel) -> Callable[[list[np.ndarray], dict[str, Any]], np.ndarray]:
    def kernel(xs: list[np.ndarray], attrs: dict[str, Any]) -> np.ndarray:
        with np.errstate(all="ignore"):
            return np.asarray(fn(*xs, **attrs))
    return kernel


def _not_portable(specs: list[Spec]) -> bool:
    return False


# --- binary arithmetic -------------------------------------------------------


def _binary(name: str, fn: Kernel, allowed: frozenset[str], doc: str,
            category: str = "arithmetic") -> None:
    def infer(specs: list[Spec], attrs: dict[str, Any]) -> Spec:
        dtype = same_dtype(specs)
        require_dtype(specs[0], allowed)
        return Spec(dtype, broadcast(specs))

    register(OpDef(name, category, doc, infer, _quiet(fn), 2, 2))


_binary("add", np.add, NUMERIC, "a + b, element-wise with broadcasting; integers wrap around.")
_binary("sub", np.subtract, NUMERIC, "a - b, element-wise with broadcasting; integers wrap around.")
_binary("mul", np.multiply, NUMERIC, "a * b, element-wise with broadcasting; integers wrap around.")
_binary("div", np.true_divide, FLOATS,
        "a / b for float inputs (IEEE: x/0 = ±inf, 0/0 = NaN); cast integers to a float first.")


# --- unary math ----------------------------------------------------------------


def _unary(name: str, fn: Kernel, allowed: frozenset[str], doc: str, *, portable: bool = True,
           category: str = "math") -> None:
    def infer(specs: list[Spec], attrs: dict[str, Any]) -> Spec:
        require_dtype(specs[0], allowed)
        return specs[0]

    register(OpDef(name, category, doc, infer, _quiet(fn), 1, 1,
                   portable=(lambda s: True) if portable else _not_portable))


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, x.dtype.type(0))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    one = x.dtype.type(1)
    return one / (one + np.exp(-x))


_unary("neg", np.negative, SIGNED | FLOATS, "-x for signed integers (wrapping) and floats.")
_unary("exp", np.exp, FLOATS, "e**x for floats; overflow gives inf.", portable=False)
_unary("log", np.log, FLOATS, "natural logarithm for floats; log(0) = -inf, log(x<0) = NaN.",
       portable=False)
_unary("sqrt", np.sqrt, FLOATS, "square root for floats (IEEE correctly rounded); sqrt(x<0) = NaN.")
_unary("relu", _relu, NUMERIC, "max(x, 0), same dtype; NaN stays NaN.")
_unary("sigmoid", _sigmoid, FLOATS, "1 / (1 + exp(-x)) for floats.", portable=False)
_unary("tanh", np.tanh, FLOATS, "hyperbolic tangent for floats.", portable=False)


# --- comparisons and logic ------------------------------------------------------


def _compare(name: str, fn: Kernel, doc: str) -> None:
    def infer(specs: list[Spec], attrs: dict[str, Any]) -> Spec:
        same_dtype(specs)
        return Spec(np.dtype(bool), broadcast(specs))

    register(OpDef(name, "comparison", doc + " Gives bool; any comparison with NaN is false "
                   "except not_equal.", infer, _quiet(fn), 2, 2))


_compare("equal", np.equal, "a == b, element-wise with broadcasting.")
_compare("not_equal", np.not_equal, "a != b, element-wise with broadcasting.")
_compare("less", np.less, "a < b, element-wise with broadcasting.")
_compare("less_equal", np.less_equal, "a <= b, element-wise with broadcasting.")
_compare("greater", np.greater, "a > b, element-wise with broadcasting.")
_compare("greater_equal", np.greater_equal, "a >= b, element-wise with broadcasting.")

for _name, _fn in (("logical_and", np.logical_and), ("logical_or", np.logical_or),
                   ("logical_xor", np.logical_xor)):
    _binary(_name, _fn, BOOL, f"{_name.split('_')[1]} of two bool tensors, with broadcasting.",
            category="logic")
_unary("logical_not", np.logical_not, BOOL, "not x for a bool tensor.", category="logic")


def _where_infer(specs: list[Spec], attrs: dict[str, Any]) -> Spec:
    require_dtype(specs[0], BOOL, "condition")
    dtype = same_dtype(specs[1:])
    return Spec(dtype, broadcast(specs))


register(OpDef("where", "logic", "where(cond, x, y): x where cond is true, else y; cond is bool, "
               "x and y share a dtype; all three broadcast.", _where_infer, _quiet(np.where), 3, 3))


# --- clip, cast, normalized difference -------------------------------------------


def _clip_infer(specs: list[Spec], attrs: dict[str, Any]) -> Spec:
    require_dtype(specs[0], NUMERIC)
    dtype = specs[0].dtype
    bounds = [attrs["min"], attrs["max"]]
    for key, value in zip(("min", "max"), bounds):
        if value is not None and dtype.kind in "iu":
            info = np.iinfo(dtype)
            if not float(value).is_integer() or not info.min <= value <= info.max:
                raise UserError(f"{key}={value} is not a {dtype.name} value")
    if None not in bounds and bounds[0] > bounds[1]:
        raise UserError(f"min={bounds[0]} is greater than max={bounds[1]}")
    return specs[0]


def _clip(x: np.ndarray, min: Any, max: Any) -> np.ndarray:  # noqa: A002
    lo = None if min is None else x.dtype.type(min)
    hi = None if max is None else x.dtype.type(max)
    if lo is None and hi is None:
        return x.copy()
    return np.clip(x, lo, hi)


register(OpDef("clip", "math", "clip(x; min, max): x limited to [min, max] (either may be null); "
               "NaN stays NaN; bounds must be values of x's dtype.", _clip_infer, _quiet(_clip), 1, 1,
               (Attr("min", "number?", None, "lower bound"), Attr("max", "number?", None, "upper bound"))))


def _cast_infer(specs: list[Spec], attrs: dict[str, Any]) -> Spec:
    return Spec(attrs["dtype"], specs[0].shape)


def _cast_portable(specs: list[Spec]) -> bool:
    return not (specs[0].dtype.kind == "f")


def _cast(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype.kind == "b":
        return x != 0
    return x.astype(dtype)


register(OpDef("cast", "conversion", "cast(x; dtype): convert element-wise. Floats to integers "
               "truncate toward zero (NaN and out-of-range values are platform-dependent: avoid "
               "them); integers wrap into narrower integers; to bool means x != 0; bool gives 0/1.",
               _cast_infer, _quiet(_cast), 1, 1, (Attr("dtype", "dtype", doc="target dtype"),),
               portable=_cast_portable))


def nd_dtype(dtype: np.dtype) -> np.dtype:
    """Output dtype of normalized_difference: float64 for wide inputs, else float32."""
    wide = {"int32", "uint32", "int64", "uint64", "float64"}
    return np.dtype("float64" if dtype.name in wide else "float32")


def _nd_infer(specs: list[Spec], attrs: dict[str, Any]) -> Spec:
    dtype = same_dtype(specs)
    require_dtype(specs[0], NUMERIC)
    return Spec(nd_dtype(dtype), broadcast(specs))


def _nd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = nd_dtype(a.dtype)
    af, bf = a.astype(out), b.astype(out)
    return (af - bf) / (af + bf)


register(OpDef("normalized_difference", "remote sensing",
               "(a - b) / (a + b) computed in float32 (inputs of at most 16 bits, float32) or "
               "float64 (wider inputs); a and b share a dtype; 0/0 gives NaN. Band indices: "
               "NDVI = nd(nir, red), NDSI = nd(green, swir1).", _nd_infer, _quiet(_nd), 2, 2))
