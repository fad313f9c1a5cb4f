"""Opset 2: the operators training needs beyond opset 1.

A model's forward and backward passes are ordinary graphs: matmul, add,
relu, transpose and reduce_sum of opset 1 carry the linear layers and their
gradients; these fill the gaps:

* ``softmax_cross_entropy(logits[..., C], labels[...])`` -> per-example loss
  ``logsumexp(logits) - logits[label]``, computed stably (max subtracted).
* ``softmax_cross_entropy_grad(logits, labels, dloss)`` -> its vector-Jacobian
  product ``(softmax(logits) - onehot(labels)) * dloss[..., None]``; ``dloss``
  broadcasts to the labels' shape (a scalar ``1/N`` gives the mean's gradient).
* ``relu_grad(x, dy)`` -> ``dy`` where ``x > 0``, else 0 (relu's VJP).
* ``argmax(x; axis=-1)`` -> int64 index of the first maximum (predictions).

Labels are integers; a label outside ``[0, C)`` cannot be caught by inference
(it is data), so it gives NaN for that example's loss and gradient row rather
than an exception: the result is still defined and a verifier sees it. The
cross-entropy operators use exp and log and are not portable bit for bit
(opset.py); ``relu_grad`` and ``argmax`` are exact everywhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import UserError
from .opset import FLOATS, INTS, NUMERIC, Attr, OpDef, Spec, broadcast, norm_axis, register, require_dtype, same_dtype

SINCE = 2


def _ce_specs(specs: list[Spec]) -> tuple[Spec, Spec]:
    logits, labels = specs[0], specs[1]
    require_dtype(logits, FLOATS, "logits")
    require_dtype(labels, INTS, "labels")
    if not logits.shape or logits.shape[-1] == 0:
        raise UserError("logits need a last axis of at least one class")
    if labels.shape != logits.shape[:-1]:
        raise UserError(f"labels of shape {list(labels.shape)} must have logits' shape without its "
                        f"class axis, {list(logits.shape[:-1])}")
    return logits, labels


def _log_softmax_parts(z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(z - max, log sum exp(z - max), valid-label mask) for logits ``z`` and labels ``y``."""
    classes = z.shape[-1]
    valid = (y >= 0) & (y < classes)
    shifted = z - np.max(z, axis=-1, keepdims=True)
    lse = np.log(np.sum(np.exp(shifted), axis=-1))
    return shifted, lse, valid


def _ce_infer(specs: list[Spec], attrs: dict[str, Any]) -> Spec:
    logits, labels = _ce_specs(specs)
    return Spec(logits.dtype, labels.shape)


def _ce(xs: list[np.ndarray], attrs: dict[str, Any]) -> np.ndarray:
    z, y = xs
    if z.size == 0:
        return np.zeros(y.shape, z.dtype)
    with np.errstate(all="ignore"):
        shifted, lse, valid = _log_softmax_parts(z, y)
        safe = np.where(valid, y, 0).astype(np.intp)
        picked = np.take_along_axis(shifted, safe[..., None], axis=-1)[..., 0]
        return np.asarray(np.where(valid, lse - picked, np.nan), dtype=z.dtype)


register(OpDef("softmax_cross_entropy", "training",
               "softmax_cross_entropy(logits[..., C], labels[...]): per-example loss "
               "logsumexp(logits) - logits[label] (stable), for float logits and integer labels; "
               "a label outside [0, C) gives NaN.", _ce_infer, _ce, 2, 2,
               portable=lambda specs: False, since=SINCE))


def _ce_grad_infer(specs: list[Spec], attrs: dict[str, Any]) -> Spec:
    logits, labels = _ce_specs(specs)
    dloss = specs[2]
    if dloss.dtype != logits.dtype:
        raise UserError(f"dloss has dtype {dloss.dtype.name}, logits {logits.dtype.name}: they must match")
    if broadcast([dloss, labels]) != labels.shape:
        raise UserError(f"dloss of shape {list(dloss.shape)} must broadcast to the labels' shape "
                        f"{list(labels.shape)}")
    return logits


def _ce_grad(xs: list[np.ndarray], attrs: dict[str, Any]) -> np.ndarray:
    z, y, dloss = xs
    if z.size == 0:
        return np.zeros(z.shape, z.dtype)
    with np.errstate(all="ignore"):
        shifted, lse, valid = _log_softmax_parts(z, y)
        grad = np.exp(shifted - lse[..., None])
        onehot = np.arange(z.shape[-1]) == np.where(valid, y, 0).astype(np.intp)[..., None]
        grad = (grad - onehot) * np.broadcast_to(dloss, y.shape)[..., None]
        return np.asarray(np.where(valid[..., None], grad, np.nan), dtype=z.dtype)


register(OpDef("softmax_cross_entropy_grad", "training",
               "softmax_cross_entropy_grad(logits, labels, dloss): the gradient of "
               "sum(dloss * softmax_cross_entropy(logits, labels)) with respect to logits, "
               "(softmax(logits) - onehot(labels)) * dloss[..., None]; dloss has logits' dtype and "
               "broadcasts to the labels' shape; a label outside [0, C) gives a NaN row.",
               _ce_grad_infer, _ce_grad, 3, 3, portable=lambda specs: False, since=SINCE))


def _relu_grad_infer(specs: list[Spec], attrs: dict[str, Any]) -> Spec:
    dtype = same_dtype(specs)
    require_dtype(specs[0], NUMERIC)
    return Spec(dtype, broadcast(specs))


def _relu_grad(xs: list[np.ndarray], attrs: dict[str, Any]) -> np.ndarray:
    x, dy = xs
    shape = np.broadcast_shapes(x.shape, dy.shape)
    return np.asarray(np.where(x > 0, np.broadcast_to(dy, shape), dy.dtype.type(0)), dtype=dy.dtype)


register(OpDef("relu_grad", "training",
               "relu_grad(x, dy): dy where x > 0, else 0 (the gradient through relu(x)); x and dy "
               "share a dtype and broadcast; NaN in x counts as not positive.",
               _relu_grad_infer, _relu_grad, 2, 2, since=SINCE))


def _argmax_infer(specs: list[Spec], attrs: dict[str, Any]) -> Spec:
    spec = specs[0]
    require_dtype(spec, NUMERIC)
    if not spec.shape:
        raise UserError("argmax needs an input of rank >= 1")
    axis = norm_axis(attrs["axis"], len(spec.shape))
    if spec.shape[axis] == 0:
        raise UserError("cannot take the argmax over an empty axis")
    return Spec(np.dtype("int64"), spec.shape[:axis] + spec.shape[axis + 1:])


def _argmax(xs: list[np.ndarray], attrs: dict[str, Any]) -> np.ndarray:
    return np.asarray(np.argmax(xs[0], axis=attrs["axis"]), dtype=np.int64)


register(OpDef("argmax", "training",
               "argmax(x; axis=-1): int64 index of the first largest value along axis, which is "
               "dropped (NaN counts as largest); for predictions from logits.",
               _argmax_infer, _argmax, 1, 1, (Attr("axis", "int", -1, "axis to search"),), since=SINCE))
