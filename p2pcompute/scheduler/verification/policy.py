"""job.yaml's ``verification`` key -> a ``Strategy``; its canonical text is what a JobPlan carries.

Forms (docs/job-spec.md): ``none``; ``replicate(N, agree=K, anchor=0|1)``;
``adaptive(threshold=T, rate=R)``; ``spot-check(R)``; ``check``;
``tolerance(rtol=R, atol=A, n=N)``. Arguments are numbers, positional in
that order or by name; every one has a default but ``spot-check``'s rate may
also be omitted (0.05). ``replicate``, ``adaptive`` and ``spot-check`` also
take ``rtol=``/``atol=`` to compare tensors within a tolerance instead of
CIDs exactly. ``parse`` raises ``ValueError`` with a message saying what is
wrong and what would be valid; ``canonical(text)`` is the one spelling that
``parse`` gives back the same strategy for (the JobPlan carries it).
"""

from __future__ import annotations

import math
import re
from typing import Any

from .compare import Close, Exact
from .engine import Strategy
from .strategies import Adaptive, Check, NoVerification, Replicate, SpotCheck, Tolerance

NAMES = ("none", "replicate", "adaptive", "spot-check", "check", "tolerance")
MAX_TEXT = 200
MAX_REPLICAS = 16
_FORM = re.compile(r"^\s*([a-z][a-z\-]*)\s*(?:\((.*)\))?\s*$", re.DOTALL)
_ARG = re.compile(r"^\s*(?:([a-z_]+)\s*=\s*)?([-+0-9.eE]+|inf|nan)\s*$")
_PARAMS = {"none": (), "check": (), "replicate": ("n", "agree", "rtol", "atol", "anchor"),
           "adaptive": ("threshold", "rate", "rtol", "atol"), "spot-check": ("rate", "rtol", "atol"),
           "tolerance": ("rtol", "atol", "n")}


def parse(text: Any) -> Strategy:
    """``"replicate(3, agree=2)"`` -> ``Replicate(3, 2)``; ValueError with the reason otherwise."""
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a strategy: write one of {', '.join(NAMES)}, e.g. \"replicate(3, agree=2)\"")
    if len(text) > MAX_TEXT:
        raise ValueError(f"longer than {MAX_TEXT} characters")
    m = _FORM.match(text)
    if not m or m[1] not in NAMES:
        raise ValueError(f"{text.strip()!r} is not a strategy: write one of {', '.join(NAMES)}, "
                         "e.g. \"replicate(3, agree=2)\" or \"tolerance(rtol=1e-6, atol=1e-9)\"")
    try:
        return _build(m[1], _args(m[1], m[2]))
    except ValueError as exc:
        raise ValueError(str(exc) if str(exc).startswith(m[1] + ":") else f"{m[1]}: {exc}") from None


def _build(name: str, args: dict[str, float]) -> Strategy:
    if name == "none":
        return NoVerification()
    if name == "check":
        return Check()
    compare = Close(_num(args, "rtol", 0.0, 0, 1), _num(args, "atol", 0.0, 0, math.inf)) \
        if "rtol" in args or "atol" in args else Exact()
    if name == "replicate":
        n = _int(args, "n", 2, 2, MAX_REPLICAS)
        return Replicate(n, _int(args, "agree", n // 2 + 1, 1, n, f"agree is between 1 and n ({n})"), compare,
                         bool(_int(args, "anchor", 0, 0, 1, "anchor is 0 (agreement is enough) or 1 (it needs a "
                                                            "trusted or vetted peer among the agreeing)")))
    if name == "adaptive":
        return Adaptive(_int(args, "threshold", 100, 1, 1000), _num(args, "rate", 0.1, 0, 1), compare)
    if name == "spot-check":
        rate = _num(args, "rate", 0.05, 0, 1)
        if rate <= 0:
            raise ValueError("rate is a share of tasks above 0 and at most 1 (0.05 checks one in 20); "
                             "for no checks write none")
        return SpotCheck(rate, compare)
    return Tolerance(_num(args, "rtol", 1e-6, 0, 1), _num(args, "atol", 0.0, 0, math.inf),
                     _int(args, "n", 2, 2, MAX_REPLICAS))


def canonical(text: Any) -> str:
    return parse(text).canonical()


def _args(name: str, inner: str | None) -> dict[str, float]:
    params = _PARAMS[name]
    if inner is None or not inner.strip():
        return {}
    if not params:
        raise ValueError(f"{name} takes no arguments")
    out: dict[str, float] = {}
    for pos, part in enumerate(inner.split(",")):
        m = _ARG.match(part)
        if not m:
            raise ValueError(f"{name}: {part.strip()!r} is not an argument: write a number or NAME=NUMBER "
                             f"(NAME one of {', '.join(params)})")
        key = m[1]
        if key is None:
            if out and any(k not in params[:pos] for k in out) or pos >= len(params):
                raise ValueError(f"{name}: positional {part.strip()!r} after named ones or too many "
                                 f"(in order: {', '.join(params)})")
            key = params[pos]
        if key not in params:
            raise ValueError(f"{name}: unknown argument {key!r} (it takes {', '.join(params)})")
        if key in out:
            raise ValueError(f"{name}: {key} is given twice")
        try:
            out[key] = float(m[2])
        except ValueError:
            raise ValueError(f"{name}: {m[2]!r} is not a number") from None
    return out


def _num(args: dict[str, float], key: str, default: float, lo: float, hi: float) -> float:
    value = args.get(key, default)
    if not (math.isfinite(value) and lo <= value <= hi):
        raise ValueError(f"{key} is a number between {lo:g} and {hi:g}, not {value:g}")
    return value


def _int(args: dict[str, float], key: str, default: int, lo: int, hi: int, message: str = "") -> int:
    value = args.get(key, default)
    if not (math.isfinite(value) and value == int(value) and lo <= value <= hi):
        raise ValueError(message or f"{key} is a whole number between {lo} and {hi}, not {value:g}")
    return int(value)
