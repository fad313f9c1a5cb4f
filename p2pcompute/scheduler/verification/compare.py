"""When two results agree: exactly (CIDs and inline values) or numerically close (tensors, ``tolerance``).

``Exact`` compares what the executors reported and needs nothing loaded; a
difference is proof of a wrong result only for a portable graph (ops/opset.py:
float matmul, sums and transcendental functions are not bit-exact across
machines). ``Close(rtol, atol)`` compares the output tensors themselves
(``|a - b| <= atol + rtol * max(|a|, |b|)``, symmetric; NaN equal to NaN,
same dtype kind and shape) and inline numbers alike; a difference beyond
the tolerance is proof, and a rounding difference within it is agreement, so an
honest peer is never caught by one.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np


class Comparison(ABC):
    needs_tensors = False

    @abstractmethod
    def same(self, a: Any, ta: dict | None, b: Any, tb: dict | None) -> bool:
        """Whether two results (and their loaded tensors, when ``needs_tensors``) agree."""

    @abstractmethod
    def conclusive(self, portable: bool) -> bool:
        """Whether a disagreement under this comparison proves a result wrong."""


@dataclass(frozen=True)
class Exact(Comparison):
    def same(self, a, ta, b, tb) -> bool:
        return a.key == b.key

    def conclusive(self, portable: bool) -> bool:
        return portable

    def __str__(self) -> str:
        return "exact"


@dataclass(frozen=True)
class Close(Comparison):
    rtol: float = 1e-6
    atol: float = 0.0
    needs_tensors = True

    def same(self, a, ta, b, tb) -> bool:
        if [n for n, _ in a.outputs] != [n for n, _ in b.outputs] or [n for n, _ in a.inline] != \
                [n for n, _ in b.inline]:
            return False
        for (_, x), (_, y) in zip(a.inline, b.inline):
            if not self.values_close(x, y):
                return False
        for (name, cid_a), (_, cid_b) in zip(a.outputs, b.outputs):
            if cid_a == cid_b:
                continue
            if ta is None or tb is None or name not in ta or name not in tb:
                return False
            if not self.arrays_close(ta[name], tb[name]):
                return False
        return True

    def values_close(self, x: Any, y: Any) -> bool:
        if isinstance(x, bool) or isinstance(y, bool) or not isinstance(x, (int, float)) or \
                not isinstance(y, (int, float)):
            return x == y
        if math.isnan(x) or math.isnan(y):
            return math.isnan(x) and math.isnan(y)
        return x == y or math.isfinite(x) and math.isfinite(y) and \
            abs(x - y) <= self.atol + self.rtol * max(abs(x), abs(y))

    def arrays_close(self, x: Any, y: Any) -> bool:
        x, y = np.asarray(x), np.asarray(y)
        if x.shape != y.shape or x.dtype.kind != y.dtype.kind:
            return False
        if x.dtype.kind not in "fc":
            return bool(np.array_equal(x, y))
        with np.errstate(all="ignore"):  # symmetric, unlike numpy.allclose: the order of a and b never matters
            bound = self.atol + self.rtol * np.maximum(np.abs(x), np.abs(y))
            ok = (np.abs(x - y) <= bound) & np.isfinite(x) & np.isfinite(y) | (x == y) | (np.isnan(x) & np.isnan(y))
        return bool(ok.all())

    def conclusive(self, portable: bool) -> bool:
        return True

    def __str__(self) -> str:
        return f"tolerance rtol={self.rtol:g} atol={self.atol:g}"
