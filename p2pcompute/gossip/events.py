"""What goes into the membership state machine (events, config) and what comes out (commands).

Timers are commands: ``SetTimer(kind, at)`` asks the driver to deliver
``TimerFired(kind)`` at virtual or real time ``at``; a new ``SetTimer`` of the
same kind replaces the old one. A peer has at most one timer per kind, five
in all, however many members it suspects or relays for, so a simulation
driver can keep every peer's timers in one heap (stale heap entries may be
delivered: a timer fired early is ignored by the state machine).

A driver's whole job: feed ``Join`` once (seeds may be empty), ``Received``
for every membership message (codes 100–199) from an authenticated peer,
``TimerFired`` when a timer is due, and ``Leave`` on shutdown; carry out
``Send`` as a one-way ``Transport.send`` (a failed send may be dropped:
probing notices), keep one pending timer per kind, and pass
``MemberChanged`` / ``CapabilityChanged`` to whoever listens. To batch
timers, set ``timer_quantum`` (e.g. 0.01 s): deadlines are rounded up to it.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any

from ..node.identity import PeerId


class TimerKind(enum.IntEnum):
    PROBE = 0  # probe phases: direct ping timeout, end of the probe period
    SUSPICION = 1  # the earliest suspicion deadline
    RELAY = 2  # the earliest nack deadline of pings relayed for others
    GOSSIP = 3  # dedicated gossip fan-out
    PUSH_PULL = 4  # anti-entropy with a random member


# --- events -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimerFired:
    kind: TimerKind


@dataclass(frozen=True, slots=True)
class Received:
    """A membership message ``msg`` arrived from authenticated ``peer``."""

    peer: PeerId
    msg: Any


@dataclass(frozen=True, slots=True)
class Join:
    """Start (or rejoin) through ``seeds``; no seeds starts a new network."""

    seeds: tuple[PeerId, ...] = ()


@dataclass(frozen=True, slots=True)
class Leave:
    """Announce a clean departure; afterwards the machine ignores everything."""


@dataclass(frozen=True, slots=True)
class SetCapability:
    """Publish this peer's new signed capability record (``capability.make_record``).

    ``handle`` raises ``WireError`` or ``ValueError`` if it is not a valid
    record of this peer: that is the caller's bug, not a remote peer's.
    Records go to every peer: publish load changes sparingly (seconds apart).
    """

    claim: bytes


# --- commands -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    peer: PeerId
    msg: Any


@dataclass(frozen=True, slots=True)
class SetTimer:
    kind: TimerKind
    at: float


@dataclass(frozen=True, slots=True)
class MemberChanged:
    """``peer`` went from ``old`` to ``new`` state (``None``: it was unknown)."""

    peer: PeerId
    old: int | None
    new: int


@dataclass(frozen=True, slots=True)
class CapabilityChanged:
    peer: PeerId
    record: Any  # CapabilityRecord


Command = Send | SetTimer | MemberChanged | CapabilityChanged
Event = TimerFired | Received | Join | Leave | SetCapability


# --- configuration ----------------------------------------------------------------


@dataclass(frozen=True)
class MembershipConfig:
    """Tunables; defaults follow the measured lessons in DESIGN.md (20–120 ms links)."""

    probe_interval: float = 0.7  # covers a 4-hop indirect probe
    probe_timeout: float = 0.25  # direct ping; ≥ one slow round trip
    indirect_probes: int = 3
    nack_fraction: float = 0.4  # a relay nacks after this share of the prober's indirect window
    suspicion_alpha: float = 1.2  # min suspicion = α · max(1, log10 N) · probe_interval, at least:
    suspicion_floor: float = 2.0  # seconds: a small network's peers may stall longer than α·interval
    suspicion_beta: float = 2.5  # max suspicion = β · min (β = 4 left 1000-peer detection at ~7.3 s median)
    suspicion_confirmations: int = 3  # K: independent suspicions that shrink the timeout to min
    confirm_probers: float = 6.0  # peers (expected, network-wide) that probe a suspect next on hearing of it; 0: off
    max_health: int = 8  # local health multiplier ranges over 1..max_health
    # A timer that fires more than this late means our own loop is starved: health rises, and a
    # judgement due then (a probe's verdict, a death) waits once more, for the messages that
    # arrived while we slept (a timer runs in one step; a message takes many).
    late_tolerance: float = 0.2
    retransmit_mult: float = 4.0  # λ: each update is sent about λ·log10(N+1) times
    gossip_interval: float = 0.1
    gossip_fanout: int = 4
    gossip_fresh: int = 4  # dedicated rounds carry items sent fewer times; the rest ride on probes (0: all)
    gossip_capabilities: bool = False  # capability records alone start no dedicated rounds (they ride probes)
    push_pull_interval: float = 15.0  # scaled up with log2(N/32) beyond 32 members
    max_push_pull_entries: int = 4096  # members per push-pull (sampled beyond): ~0.5 MB on the wire
    join_retry: float = 1.0  # push-pull the seeds this often until they answer (a lost join costs this much)
    max_piggyback_bytes: int = 4000
    max_piggyback_items: int = 64
    dead_retention: float = 600.0  # keep dead/left entries so stale news cannot resurrect them
    # Members held at most. Full membership is for networks up to about this size (a push-pull
    # carries 4096 of them); each costs ~1 KB, so a flood of made-up members stays ~10 MB.
    max_members: int = 10_000
    # New members one sender may teach us: a burst, then a rate per second (a peer's word about
    # itself and our own join's replies are exempt). Beyond them, news of new members is dropped.
    new_member_burst: int = 256
    new_member_rate: float = 4.0
    # An update whose incarnation is more than this above the one we hold for its peer (0 for a
    # peer we do not know, our own for us) is forged: a peer raises its own by one per refutation.
    # Dropping it keeps one message from pushing anyone's incarnation to the bound.
    max_incarnation_jump: int = 1 << 20
    max_broadcasts: int = 8192
    max_relays: int = 256
    leave_fanout: int = 8
    timer_quantum: float = 0.0  # round timer deadlines up to this grain (drivers batch them)

    def retransmit_limit(self, n: int) -> int:
        """How many times each update is sent: λ·log10(N+1), rounded, and at least λ."""
        lam = self.retransmit_mult
        return max(math.ceil(lam), round(lam * math.log10(n + 1)))

    def suspicion_bounds(self, n: int) -> tuple[float, float]:
        low = max(self.suspicion_floor, self.suspicion_alpha * max(1.0, math.log10(max(n, 1))) * self.probe_interval)
        return low, low * self.suspicion_beta

    def push_pull_period(self, n: int) -> float:
        scale = 1.0 if n <= 32 else 1.0 + math.ceil(math.log2(n / 32))
        return self.push_pull_interval * scale
