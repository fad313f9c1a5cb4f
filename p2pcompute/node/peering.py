"""Peering: which peers to dial and when. A pure state machine.

Theory of operation
-------------------
The daemon must reach the network through its bootstrap list, rejoin after a
restart through the peers it knew, and keep connections to up to
``target`` peers. This class decides; ``node/node.py`` acts. Every method
takes ``now`` and returns a list of commands; randomness (backoff jitter)
comes from the injected ``rng``. No I/O, no clock.

Each known peer has addresses, a connected flag and a dial schedule. A failed
dial backs off exponentially (``base`` · 2^failures, capped at ``cap``, ±20 %
jitter); success resets it. Bootstrap peers are retried forever (so a network
whose first peer comes up late still forms); other peers are forgotten after
``max_failures`` failures in a row. When every bootstrap peer has failed at
least once and none is connected, one ``Notice`` tells the user the daemon
runs alone and keeps retrying.

When a connection comes up, ``Exchange`` asks the node to swap signed peer
records (Hello) and ask for the peer's peer list; records learned that way
arrive as ``learned`` and become dial candidates while below ``target``.
Peer membership proper (liveness, capabilities) is the gossip layer's job.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .identity import PeerId


@dataclass(frozen=True)
class Dial:
    peer: PeerId
    addrs: tuple[str, ...]


@dataclass(frozen=True)
class Exchange:
    """Swap Hello records with ``peer`` and ask it for the peers it knows."""

    peer: PeerId


@dataclass(frozen=True)
class Notice:
    level: str  # "warning" | "info"
    text: str


Command = Dial | Exchange | Notice


@dataclass
class Known:
    peer: PeerId
    addrs: list[str]
    bootstrap: bool = False
    connected: bool = False
    dialing: bool = False
    failures: int = 0
    next_dial: float = 0.0
    last_seen: float | None = None
    last_error: str = ""


@dataclass
class PeeringConfig:
    target: int = 32
    base: float = 1.0
    cap: float = 60.0
    max_failures: int = 8
    max_known: int = 4096


@dataclass
class Peering:
    self_id: PeerId
    rng: random.Random
    config: PeeringConfig = field(default_factory=PeeringConfig)
    known: dict[PeerId, Known] = field(default_factory=dict)
    _alone_noticed: bool = False

    # --- inputs -------------------------------------------------------------

    def add(self, peer: PeerId, addrs: list[str], now: float, *, bootstrap: bool = False) -> None:
        """A bootstrap peer, a peer from the persisted table, or one learned."""
        if peer == self.self_id:
            return
        entry = self.known.get(peer)
        if entry is None:
            if len(self.known) >= self.config.max_known:
                self._evict_one()
            entry = self.known[peer] = Known(peer, [], bootstrap=bootstrap, next_dial=now)
        entry.bootstrap = entry.bootstrap or bootstrap
        for a in addrs:
            if a not in entry.addrs:
                entry.addrs.append(a)
        del entry.addrs[:-16]

    def learned(self, peer: PeerId, addrs: list[str], now: float) -> list[Command]:
        self.add(peer, addrs, now)
        return self.tick(now)

    def connected(self, peer: PeerId, now: float) -> list[Command]:
        if peer == self.self_id:
            return []
        entry = self.known.get(peer)
        if entry is None:
            entry = self.known[peer] = Known(peer, [])
        was = entry.connected
        entry.connected, entry.dialing, entry.failures = True, False, 0
        entry.last_seen = now
        self._alone_noticed = False
        return [] if was else [Exchange(peer)]

    def disconnected(self, peer: PeerId, now: float) -> list[Command]:
        entry = self.known.get(peer)
        if entry is not None and entry.connected:
            entry.connected = False
            entry.last_seen = now
            entry.next_dial = now + self._backoff(1)
        return []

    def dial_failed(self, peer: PeerId, error: str, now: float) -> list[Command]:
        entry = self.known.get(peer)
        if entry is None:
            return []
        entry.dialing = False
        entry.failures += 1
        entry.last_error = error
        entry.next_dial = now + self._backoff(entry.failures)
        if not entry.bootstrap and entry.failures >= self.config.max_failures and not entry.connected:
            del self.known[peer]
        return self._maybe_alone(now)

    def tick(self, now: float) -> list[Command]:
        """Dial the candidates that are due, up to the target."""
        out: list[Command] = []
        busy = sum(1 for k in self.known.values() if k.connected or k.dialing)
        for entry in sorted(self.known.values(), key=_dial_order):
            if busy >= self.config.target and not (entry.bootstrap and not self.any_connected):
                break
            if entry.connected or entry.dialing or entry.next_dial > now or not entry.addrs:
                continue
            entry.dialing = True
            busy += 1
            out.append(Dial(entry.peer, tuple(entry.addrs)))
        return out

    # --- queries --------------------------------------------------------------

    @property
    def any_connected(self) -> bool:
        return any(k.connected for k in self.known.values())

    def next_wakeup(self) -> float | None:
        """When ``tick`` may next have a dial to make; None: only an event can tell."""
        busy = sum(1 for k in self.known.values() if k.connected or k.dialing)
        full = busy >= self.config.target
        due = [k.next_dial for k in self.known.values()
               if not (k.connected or k.dialing) and k.addrs and (not full or (k.bootstrap and not self.any_connected))]
        return min(due) if due else None

    def table(self) -> list[Known]:
        return sorted(self.known.values(), key=lambda k: (not k.connected, k.peer))

    # --- internals ---------------------------------------------------------------

    def _backoff(self, failures: int) -> float:
        delay = min(self.config.cap, self.config.base * 2 ** max(0, failures - 1))
        return delay * self.rng.uniform(0.8, 1.2)

    def _maybe_alone(self, now: float) -> list[Command]:
        boots = [k for k in self.known.values() if k.bootstrap]
        if self._alone_noticed or not boots or self.any_connected:
            return []
        if any(k.failures == 0 or k.dialing for k in boots):
            return []
        self._alone_noticed = True
        errors = "; ".join(f"{k.peer.short}: {k.last_error}" for k in boots)
        retry = min(k.next_dial for k in boots)
        return [Notice("warning", f"none of the {len(boots)} bootstrap peers answered ({errors}). "
                       f"Running alone and accepting connections; retrying in the background "
                       f"(next try in {max(0.0, retry - now):.0f} s).")]

    def _evict_one(self) -> None:
        victims = [k for k in self.known.values() if not k.connected and not k.bootstrap]
        if victims:
            worst = max(victims, key=lambda k: (k.failures, -(k.last_seen or 0.0)))
            del self.known[worst.peer]


def _dial_order(k: Known) -> tuple:
    # bootstrap peers first, then the peers seen most recently
    return (not k.bootstrap, -(k.last_seen or 0.0), k.peer)
