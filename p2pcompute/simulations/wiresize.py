"""The exact length of ``wire.encode(msg)`` without encoding the whole message each time.

Theory of operation
-------------------
The churn simulation measures bytes on the wire by encoding a sample of its
messages (``Cluster._sample_size``); a push-pull carries every member of the
sender's table, so at 1000 peers its first samples cost more CPU than
thousands of events. CBOR is compositional: an array or a map is a header
that depends only on its length, followed by its items (canonical encoding
sorts a map's keys but does not change their sizes). So the length of a long
tuple is its header plus the lengths of its items, and the items of these
tuples (``Update`` facts, ``(peer, version)`` pairs) are shared immutable
objects that recur in message after message: their lengths are memoised (a
bounded dict, cleared when full). Short tuples and scalars are encoded as
they are. The frame around the body is the wire's own array with a byte
string of the body's length. The result equals ``len(wire.encode(msg))`` for
an unsigned message (tests/simulations/test_sim_wiresize.py checks it).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import cbor2

from ..node import wire

_LONG = 16  # tuples at least this long are sized item by item
_MAX_MEMO = 1 << 18


def _head(n: int) -> int:
    """Bytes of a CBOR header for a length (array, map, byte or text string) of ``n``."""
    if n < 24:
        return 1
    if n < 1 << 8:
        return 2
    if n < 1 << 16:
        return 3
    if n < 1 << 32:
        return 5
    return 9


class WireSizer:
    """``size(msg) == len(wire.encode(msg))`` for unsigned registered messages; memoises item sizes."""

    def __init__(self) -> None:
        self._memo: dict[Any, int] = {}
        self._frames: dict[type, tuple[int, tuple[tuple[str, int], ...]]] = {}

    def size(self, msg: Any) -> int:
        spec = self._frames.get(msg.__class__)
        if spec is None:
            code = wire.spec_of(msg).code
            empty = len(cbor2.dumps([wire.WIRE_VERSION, int(wire.Kind.MESSAGE), 0, code, b"", None, None]))
            names = tuple((f.name, len(cbor2.dumps(f.name))) for f in dataclasses.fields(msg))
            spec = self._frames[msg.__class__] = (empty - 1, names)
        frame, names = spec
        body = _head(len(names))
        for name, key_size in names:
            body += key_size + self._value(getattr(msg, name))
        return frame + _head(body) + body

    def _value(self, value: Any) -> int:
        if value.__class__ is tuple and len(value) >= _LONG:
            memo = self._memo
            if len(memo) >= _MAX_MEMO:
                memo.clear()
            total = _head(len(value))
            for item in value:
                n = memo.get(item)
                if n is None:
                    n = memo[item] = self._encoded(item)
                total += n
            return total
        return self._encoded(value)

    @staticmethod
    def _encoded(value: Any) -> int:
        return len(cbor2.dumps(wire._to_cbor(value), canonical=True))
