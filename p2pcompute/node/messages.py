"""The registry of wire message types. Codes are append-only: never reuse one.

Code ranges, so that packages can add types without colliding:
    1–99      node (errors, ping, hello, peer exchange)
    100–199   gossip (membership, capability records)
    200–299   dht
    300–399   storage (bitswap, registry)
    400–499   scheduler and ops
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .identity import PeerId
from .wire import message

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
