"""Wire types of the membership protocol (codes 100–199, append-only).

Every membership message carries a *piggyback*: ``updates`` (membership
facts, ``Update``) and ``capabilities`` (signed capability records, each a
``wire.sign_claim`` of a ``CapabilityRecord``). Plain ``Gossip`` is nothing but
a piggyback. All are one-way messages: the protocol matches acks and nacks to
probes by ``seq`` itself, so it needs no request/reply machinery and no
per-request transport timers.

Field validation lives in ``__post_init__`` so that a malformed message from a
peer becomes a ``WireError`` when decoded, never a crash of the state machine.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..node.identity import PeerId
from ..node.wire import message

# Member states, ordered: at equal incarnation a higher state wins (see table.py).
ALIVE, SUSPECT, DEAD, LEFT = 0, 1, 2, 3
STATE_NAMES = ("alive", "suspect", "dead", "left")

MAX_ORIGINS = 8  # suspicion confirmations carried per update
MAX_ADDRESS = 512  # characters of a multiaddr / memnet address
MAX_PIGGYBACK = 256  # updates or records per message; more is malformed
MAX_SEQ = 2**63 - 1
# Incarnations rise by one per refutation, so a real one stays small for ever; the bound leaves
# room for a refutation (+1) and is an exact integer in JSON (``/v1/members``). Beyond the
# wire bound, ``Membership`` also drops any incarnation implausibly far above what it holds.
MAX_INCARNATION = 2**53 - 1


@dataclass(frozen=True, slots=True)
class Update:
    """One membership fact: ``peer`` is in ``state`` at ``incarnation``.

    ``origins`` names who suspected (for a suspicion: each one is an
    independent confirmation) or who declared the peer dead. ``address`` is
    where the peer listens; alive updates carry it, others may leave it empty.
    """

    peer: PeerId
    state: int
    incarnation: int
    origins: tuple[PeerId, ...] = ()
    address: str = ""

    def __post_init__(self) -> None:
        if self.state not in (ALIVE, SUSPECT, DEAD, LEFT):
            raise ValueError(f"unknown member state {self.state!r}")
        if not 0 <= self.incarnation <= MAX_INCARNATION:
            raise ValueError("incarnation out of range")
        if len(self.origins) > MAX_ORIGINS:
            raise ValueError(f"more than {MAX_ORIGINS} origins")
        if len(self.address) > MAX_ADDRESS:
            raise ValueError("address too long")

    @property
    def rank(self) -> tuple[int, int]:
        """The precedence of this fact: later incarnation first, then state."""
        return (self.incarnation, self.state)


def _check_piggyback(updates: tuple, capabilities: tuple) -> None:
    if len(updates) > MAX_PIGGYBACK or len(capabilities) > MAX_PIGGYBACK:
        raise ValueError(f"more than {MAX_PIGGYBACK} piggybacked items")


def _check_seq(seq: int) -> None:
    if not 0 <= seq <= MAX_SEQ:
        raise ValueError("sequence number out of range")


@message(100)
@dataclass(frozen=True, slots=True)
class Ping:
    """Are you alive? Answered by an ``Ack`` with the same ``seq``."""

    seq: int
    updates: tuple[Update, ...] = ()
    capabilities: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        _check_seq(self.seq)
        _check_piggyback(self.updates, self.capabilities)


@message(101)
@dataclass(frozen=True, slots=True)
class Ack:
    """Answer to ``Ping`` (or forwarded by a relay for a ``PingReq``)."""

    seq: int
    updates: tuple[Update, ...] = ()
    capabilities: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        _check_seq(self.seq)
        _check_piggyback(self.updates, self.capabilities)


@message(102)
@dataclass(frozen=True, slots=True)
class PingReq:
    """Please ping ``target`` for me; ack me with ``seq``, or nack within ``timeout`` s."""

    seq: int
    target: PeerId
    timeout: float
    updates: tuple[Update, ...] = ()
    capabilities: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        _check_seq(self.seq)
        if not 0.0 <= self.timeout <= 60.0:
            raise ValueError("relay timeout out of range")
        _check_piggyback(self.updates, self.capabilities)


@message(103)
@dataclass(frozen=True, slots=True)
class Nack:
    """A relay is alive but the target did not answer it in time (Lifeguard)."""

    seq: int
    updates: tuple[Update, ...] = ()
    capabilities: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        _check_seq(self.seq)
        _check_piggyback(self.updates, self.capabilities)


@message(104)
@dataclass(frozen=True, slots=True)
class Gossip:
    """A dedicated dissemination message: only a piggyback."""

    updates: tuple[Update, ...] = ()
    capabilities: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        _check_piggyback(self.updates, self.capabilities)


@message(105)
@dataclass(frozen=True, slots=True)
class PushPull:
    """Anti-entropy: my whole member table, and the capability versions I hold.

    ``join`` is set when the sender is joining through us. Answered with a
    ``PushPullReply``.
    """

    members: tuple[Update, ...]
    versions: tuple[tuple[PeerId, int], ...]
    join: bool = False


@message(106)
@dataclass(frozen=True, slots=True)
class PushPullReply:
    """My member table, the records you lack, and the versions I hold."""

    members: tuple[Update, ...]
    capabilities: tuple[bytes, ...]
    versions: tuple[tuple[PeerId, int], ...]


PIGGYBACKED = (Ping, Ack, PingReq, Nack, Gossip)
