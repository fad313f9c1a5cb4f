"""Cheap checks of a result: Freivalds' algorithm for matmul, and the registry operators declare theirs in.

A check looks at a task's input and output tensors and says whether the
output is right, far cheaper than recomputing it. ``register_check(name, fn)``
declares one: ``fn(inputs, outputs, seed) -> CheckResult``, ``inputs`` and
``outputs`` name -> array in the task's order; the check draws any randomness
from ``seed`` only, so that another peer given the same seed (an accusation
carries it) reaches the same verdict.

*Freivalds.* For C = A @ B (A m×k, B k×n) draw r vectors x with entries ±1
and compare A(Bx) with Cx: O((mk + kn + mn)·r) instead of O(mkn). If C ≠ AB,
some row d of C − AB is non-zero and d·x = 0 for at most half of the x
(fix every entry but one non-zero one: at most one of its two signs makes the
sum zero), so a wrong C passes all r rounds with probability ≤ 2^-r. A
single wrong element is never missed (d·x = ±d_j). Integers compare
exactly (in int64); floats within the forward error bound of the three
products, ``2·(k+n)·eps·(|A|(|B||x|) + |C||x|)``, so an honest float product
(any summation order, any BLAS) always passes and an error larger than
rounding does not. That bound is a worst case: in float32 it lets through
errors of ~1e-4 relative on long products (float64: ~1e-13), so a job that
must catch smaller lies in float32 replicates instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

DEFAULT_ROUNDS = 20
MAX_ROUNDS = 64


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: str


Checker = Callable[[dict[str, Any], dict[str, Any], int], CheckResult]
_CHECKS: dict[str, Checker] = {}


def register_check(name: str, fn: Checker) -> None:
    """Declare the cheap check ``name`` (a task's ``TaskInfo.check``); names are unique."""
    if name in _CHECKS and _CHECKS[name] is not fn:
        raise ValueError(f"a check named {name!r} is already registered")
    _CHECKS[name] = fn


def get_check(name: str | None) -> Checker | None:
    return _CHECKS.get(name) if name else None


def run_check(name: str, inputs: dict[str, Any], outputs: dict[str, Any], seed: int) -> CheckResult:
    """Run the check ``name``; any error in it (a malformed tensor from a peer) is a failed check, not a crash."""
    fn = get_check(name)
    if fn is None:
        return CheckResult(False, f"no check named {name!r}")
    try:
        return fn(inputs, outputs, seed)
    except (ValueError, TypeError, ArithmeticError, MemoryError) as exc:
        return CheckResult(False, f"{name}: {type(exc).__name__}: {exc}")


def freivalds(a: Any, b: Any, c: Any, seed: int, rounds: int = DEFAULT_ROUNDS) -> CheckResult:
    """Is ``c == a @ b``? False is certain (beyond rounding); True is wrong with probability ≤ 2**-rounds."""
    a, b, c = np.asarray(a), np.asarray(b), np.asarray(c)
    rounds = max(1, min(int(rounds), MAX_ROUNDS))
    where = f"freivalds r={rounds} seed={seed}"
    if a.ndim != 2 or b.ndim != 2 or c.ndim != 2 or a.shape[1] != b.shape[0] or \
            c.shape != (a.shape[0], b.shape[1]):
        return CheckResult(False, f"{where}: shapes {a.shape} @ {b.shape} != {c.shape}")
    x = np.random.default_rng(seed).integers(0, 2, size=(b.shape[1], rounds), dtype=np.int8) * 2 - 1
    kinds = {a.dtype.kind, b.dtype.kind, c.dtype.kind}
    if kinds <= {"i", "u", "b"}:
        a64, b64, c64, x64 = (m.astype(np.int64) for m in (a, b, c, x))
        bad = np.argwhere(a64 @ (b64 @ x64) != c64 @ x64)
        return _verdict(where, bad)
    if not kinds <= {"i", "u", "b", "f"}:
        return CheckResult(False, f"{where}: unsupported dtypes {a.dtype}, {b.dtype}, {c.dtype}")
    dt = np.result_type(a.dtype, b.dtype, c.dtype, np.float32)
    eps = float(np.finfo(dt).eps)
    af, bf, cf, xf = (m.astype(dt, copy=False) for m in (a, b, c, x))
    with np.errstate(all="ignore"):
        left, right = af @ (bf @ xf), cf @ xf
        # |x| is all ones, so |A|(|B||x|) + |C||x| is the same column for every round: two mat-vecs
        bound = 2 * (a.shape[1] + b.shape[1]) * eps * (np.abs(af) @ np.abs(bf).sum(axis=1) + np.abs(cf).sum(axis=1))
        ok = (np.abs(left - right) <= bound[:, None]) & np.isfinite(left) & np.isfinite(right) | (left == right)
    return _verdict(where, np.argwhere(~ok))


def _verdict(where: str, bad: np.ndarray) -> CheckResult:
    if len(bad) == 0:
        return CheckResult(True, where)
    row, vec = (int(v) for v in bad[0])
    return CheckResult(False, f"{where}: row {row} of the product differs (vector {vec}); "
                              f"{len(np.unique(bad[:, 0]))} rows differ")


def _matmul_check(inputs: dict[str, Any], outputs: dict[str, Any], seed: int) -> CheckResult:
    """A task computing one output = first input @ second input (a split matmul's tile)."""
    if len(inputs) != 2 or len(outputs) != 1:
        return CheckResult(False, f"matmul check: needs 2 inputs and 1 output, got {len(inputs)} and {len(outputs)}")
    (a, b), (c,) = inputs.values(), outputs.values()
    return freivalds(a, b, c, seed)


register_check("matmul", _matmul_check)


# --- the checks an operator graph declares ---------------------------------------------------------

def graph_check(graph: Any) -> str | None:
    """The check a graph declares (``TaskInfo.check``): ``"matmul"`` when its one output is a matmul node
    (a split matmul's tile: slices, then matmul), None when it has no cheap check."""
    if len(graph.outputs) != 1:
        return None
    node = next((n for n in graph.nodes if n.name == graph.outputs[0]), None)
    return "matmul" if node is not None and node.op == "matmul" and len(node.inputs) == 2 else None


def matmul_operands(graph: Any, feeds: dict[str, Any]) -> dict[str, Any]:
    """The two operands of a ``graph_check == "matmul"`` graph's output, computed from its inputs by the
    graph's other nodes (for a tile: two slices, cheap); what ``run_check("matmul", ...)`` takes as inputs."""
    from ...ops.graph import Graph

    node = next(n for n in graph.nodes if n.name == graph.outputs[0])
    rest = [n for n in graph.nodes if n is not node]
    computed = [name for name in node.inputs if any(n.name == name for n in rest)]
    values = Graph(graph.inputs, rest, computed, graph.opset).run(feeds) if computed else {}
    return {name: np.asarray(values[name] if name in values else feeds[name]) for name in node.inputs}
