"""Opset 1 operators that move data without computing: const, transpose, reshape, slice, concat.

All of them are exact on every machine. Outputs may be views of their inputs;
kernels never write into an input, so that is safe.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import UserError
from .opset import Attr, OpDef, Spec, norm_axis, register, same_dtype


def _const_infer(specs: list[Spec], attrs: dict[str, Any]) -> Spec:
    return Spec.of(attrs["value"])


register(OpDef("const", "data", "const(; value): a small constant tensor stored in the graph "
               "(large data must be a graph input, which travels by CID).",
               _const_infer, lambda xs, attrs: attrs["value"], 0, 0,
               (Attr("value", "tensor", doc="the tensor"),)))


def _transpose_infer(specs: list[Spec], attrs: dict[str, Any]) -> Spec:
    shape = specs[0].shape
    perm = attrs["perm"]
    if perm is None:
        perm = tuple(reversed(range(len(shape))))
    if sorted(perm) != list(range(len(shape))):
        raise UserError(f"perm {list(perm)} is not a permutation of the {len(shape)} axes")
    return Spec(specs[0].dtype, tuple(shape[p] for p in perm))


register(OpDef("transpose", "shape", "transpose(x; perm=null): permute axes; null reverses them.",
               _transpose_infer, lambda xs, attrs: np.transpose(xs[0], attrs["perm"]), 1, 1,
               (Attr("perm", "ints?", None, "new order of the axes"),)))


def _reshape_infer(specs: list[Spec], attrs: dict[str, Any]) -> Spec:
    shape, target = specs[0].shape, list(attrs["shape"])
    size = math.prod(shape)
    if target.count(-1) > 1 or any(d < -1 for d in target):
        raise UserError(f"shape {target} may hold one -1 and otherwise non-negative sizes")
    if -1 in target:
        known = math.prod(d for d in target if d != -1)
        if known == 0 or size % known:
            raise UserError(f"cannot infer the -1 in {target} for {size} elements")
        target[target.index(-1)] = size // known
    if math.prod(target) != size:
        raise UserError(f"cannot reshape {size} elements into {list(attrs['shape'])}")
    return Spec(specs[0].dtype, tuple(target))


register(OpDef("reshape", "shape", "reshape(x; shape): same elements in C order, new shape; one "
               "size may be -1 (inferred).", _reshape_infer,
               lambda xs, attrs: xs[0].reshape(attrs["shape"]), 1, 1,
               (Attr("shape", "ints", doc="the new shape"),)))


def _slices(shape: tuple[int, ...], attrs: dict[str, Any]) -> tuple[slice, ...]:
    starts, ends = attrs["starts"], attrs["ends"]
    axes = attrs["axes"] if attrs["axes"] is not None else tuple(range(len(starts)))
    steps = attrs["steps"] if attrs["steps"] is not None else (1,) * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise UserError(f"starts, ends, axes and steps must have one entry per sliced axis, got "
                        f"{len(starts)}, {len(ends)}, {len(axes)}, {len(steps)}")
    out = [slice(None)] * len(shape)
    seen = set()
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = norm_axis(axis, len(shape))
        if axis in seen:
            raise UserError(f"axis {axis} is sliced twice")
        if step == 0:
            raise UserError("a slice step cannot be 0")
        seen.add(axis)
        out[axis] = slice(start, end, step)
    return tuple(out)


def _slice_infer(specs: list[Spec], attrs: dict[str, Any]) -> Spec:
    shape = specs[0].shape
    sl = _slices(shape, attrs)
    return Spec(specs[0].dtype, tuple(len(range(*s.indices(d))) for s, d in zip(sl, shape)))


register(OpDef("slice", "shape", "slice(x; starts, ends, axes=null, steps=null): Python slicing "
               "x[start:end:step] on each listed axis (default axes 0..n-1, steps 1); out-of-range "
               "bounds are clamped, negative ones count from the end.", _slice_infer,
               lambda xs, attrs: xs[0][_slices(xs[0].shape, attrs)], 1, 1,
               (Attr("starts", "ints", doc="first index per axis"),
                Attr("ends", "ints", doc="end index (exclusive) per axis"),
                Attr("axes", "ints?", None, "the sliced axes"),
                Attr("steps", "ints?", None, "step per axis (non-zero)"))))


def _concat_infer(specs: list[Spec], attrs: dict[str, Any]) -> Spec:
    dtype = same_dtype(specs)
    rank = len(specs[0].shape)
    if rank == 0 or any(len(s.shape) != rank for s in specs):
        raise UserError("concat needs inputs of one rank >= 1, got shapes "
                        + ", ".join(str(list(s.shape)) for s in specs))
    axis = norm_axis(attrs["axis"], rank)
    rest = {s.shape[:axis] + s.shape[axis + 1:] for s in specs}
    if len(rest) > 1:
        raise UserError(f"shapes {', '.join(str(list(s.shape)) for s in specs)} differ outside "
                        f"axis {axis}")
    shape = list(specs[0].shape)
    shape[axis] = sum(s.shape[axis] for s in specs)
    return Spec(dtype, tuple(shape))


register(OpDef("concat", "shape", "concat(x0, x1, ...; axis=0): join tensors of one dtype and rank "
               "along axis; other sizes must agree.", _concat_infer,
               lambda xs, attrs: np.concatenate(xs, axis=attrs["axis"]), 1, 64,
               (Attr("axis", "int", 0, "axis to join along"),)))
