"""The registry of wire message types. Codes are append-only: never reuse one.

Code ranges, so that packages can add types without colliding:
    1–99      node (errors, ping, hello, peer exchange)
    100–199   gossip (membership, capability records)
    200–299   dht
    300–399   storage (bitswap, registry)
    400–499   scheduler and ops
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .identity import PeerId
from .wire import message

# --- what a peer may declare: the one check, for peer records and capability records alike ----------

MAX_CPUS = 65536.0
MAX_MEMORY = 2**62  # bytes
MAX_LABELS = 32
MAX_TEXT = 128  # characters of a label key or value, an agent, an arch or an opset name
MAX_ADDRS = 64  # addresses in a peer record
MAX_ADDR_TEXT = 512  # characters of one address


def _shown(value: object) -> str:
    if isinstance(value, int) and not -(10**18) < value < 10**18:
        return "a huge number"  # repr of a 5000-digit int raises
    return repr(value)[:40]


def check_number(name: str, value: object, low: float, high: float) -> None:
    """``value`` is a real int or float in [low, high]: never NaN, an infinity, a bool or a bignum."""
    ok = type(value) in (int, float) and low <= value <= high  # NaN fails every comparison
    if not ok or (type(value) is float and not math.isfinite(value)):
        raise ValueError(f"{name} {_shown(value)} is out of range [{low:g}, {high:g}]")


def check_texts(name: str, texts: tuple | list, count: int, size: int = MAX_TEXT) -> None:
    if len(texts) > count:
        raise ValueError(f"more than {count} {name}")
    for t in texts:
        if type(t) is not str or len(t) > size:
            raise ValueError(f"a {name[:-1] if name.endswith('s') else name} is not text of at most {size} characters")


def check_resources(cpus: object, memory: object, labels: dict) -> None:
    check_number("cpus", cpus, 0.0, MAX_CPUS)
    check_number("memory", memory, 0, MAX_MEMORY)
    if len(labels) > MAX_LABELS:
        raise ValueError(f"more than {MAX_LABELS} labels")
    check_texts("labels", [*labels.keys(), *labels.values()], 2 * MAX_LABELS)


# --- 1–99: node --------------------------------------------------------------


@message(1)
@dataclass(frozen=True)
class ErrorReply:
    """Sent as the reply (kind ERROR) when a request cannot be served.

    ``code`` is a short tag: ``bad_request``, ``unknown_request``, ``busy``,
    ``internal``, ``too_large``.
    """

    code: str
    message: str


@message(2)
@dataclass(frozen=True)
class Ping:
    nonce: int
    payload: bytes = b""


@message(3)
@dataclass(frozen=True)
class Pong:
    nonce: int
    payload: bytes = b""


@dataclass(frozen=True)
class Resources:
    """What a peer declares it offers (``--cpus``, ``--memory``, ``--label``)."""

    cpus: float
    memory: int  # bytes
    labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_resources(self.cpus, self.memory, self.labels)


@message(4, signed=True)
@dataclass(frozen=True)
class PeerRecord:
    """A peer's signed statement of who it is, where it listens and what it offers.

    Forwarded as a claim (``wire.sign_claim``); ``seq`` grows with every new
    record of the same peer (milliseconds since the epoch), so the newest wins.
    """

    peer_id: PeerId
    seq: int
    addrs: tuple[str, ...]
    resources: Resources
    agent: str = ""

    def __post_init__(self) -> None:
        # Resources check themselves; decoding a record from a peer runs both (WireError on failure).
        check_number("seq", self.seq, 0, 2**63 - 1)
        check_texts("addrs", self.addrs, MAX_ADDRS, MAX_ADDR_TEXT)
        check_texts("agent", (self.agent,), 1)


@message(5, signed=True)
@dataclass(frozen=True)
class Hello:
    """First request on a new connection: here is my record (a signed claim)."""

    record: bytes


@message(6, signed=True)
@dataclass(frozen=True)
class HelloReply:
    record: bytes


@message(7)
@dataclass(frozen=True)
class GetPeers:
    """Ask for up to ``limit`` peer records the other side knows."""

    limit: int = 64


@message(8)
@dataclass(frozen=True)
class Peers:
    records: tuple[bytes, ...]  # each a signed PeerRecord claim


@message(9)
@dataclass(frozen=True)
class Goodbye:
    """One-way, sent on clean shutdown so peers need not wait to notice."""

    reason: str = "shutdown"
