"""A tiny discrete-event network for driving ``Membership`` machines in tests (no trio).

One heap holds every peer's timers and message deliveries, as the real
simulation driver will. Links lose messages with probability ``loss`` and
delay them uniformly within ``latency``. Timers use lazy deletion: a heap
entry fires only if it is still the peer's current deadline of that kind.
Everything random comes from one seed, so a run replays exactly.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import random
from collections import Counter
from dataclasses import dataclass, field

from p2pcompute.gossip import events as ev
from p2pcompute.gossip.capability import make_record, open_record
from p2pcompute.gossip.membership import Membership
from p2pcompute.gossip.messages import DEAD
from p2pcompute.node import wire
from p2pcompute.node.identity import Identity, PeerId

_TIMER, _DELIVER, _ACTION = 0, 1, 2


def identities(n: int, salt: int = 0) -> list[Identity]:
    return [Identity.from_seed(((salt << 32) | i).to_bytes(32, "big")) for i in range(n)]


@dataclass
class Figures:
    detections: dict[PeerId, float] = field(default_factory=dict)  # crashed peer -> seconds until all knew
    undetected: list[PeerId] = field(default_factory=list)
    false_deaths: list[tuple[float, PeerId, PeerId]] = field(default_factory=list)  # (t, observer, victim)
    msgs_per_peer_s: float = 0.0
    bytes_per_peer_s: float = 0.0


class Sim:
    def __init__(
        self,
        n: int,
        seed: int,
        *,
        loss: float = 0.0,
        latency: tuple[float, float] = (0.02, 0.12),
        config: ev.MembershipConfig | None = None,
        records: bool = True,
        measure_bytes: bool = False,
    ) -> None:
        self.rng = random.Random(seed)
        self.loss, self.latency = loss, latency
        self.measure_bytes = measure_bytes
        self.now = 0.0
        self.idents = identities(n, salt=seed)
        self.ids = [i.peer_id for i in self.idents]
        verify = functools.lru_cache(maxsize=4096)(open_record)  # shared: each record verified once
        self.nodes = {
            pid: Membership(pid, config, random.Random(self.rng.getrandbits(64)), 0.0, address=f"mem/{k}", verifier=verify)
            for k, pid in enumerate(self.ids)
        }
        self.claims = {i.peer_id: make_record(i, 1, cpus=4.0, memory=8 << 30, arch="x86_64") for i in self.idents} if records else {}
        self.crashed: dict[PeerId, float] = {}
        self.started: dict[PeerId, float] = {}
        self.changes: list[tuple[float, PeerId, ev.MemberChanged]] = []
        self.sent = 0
        self.bytes = 0
        self.sent_by_type: Counter = Counter()
        self.timers: dict[PeerId, dict] = {pid: {} for pid in self.ids}
        self._heap: list = []
        self._seq = itertools.count()

    # --- scheduling -----------------------------------------------------------

    def at(self, when: float, fn) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), _ACTION, None, fn))

    def feed(self, peer: PeerId, event, when: float | None = None) -> None:
        when = self.now if when is None else when
        self.at(when, lambda: self._dispatch(peer, event))

    def start(self, spread: float = 1.0, count: int | None = None) -> None:
        """Peer 0 starts the network; the next ``count`` peers join through a random earlier peer."""
        count = len(self.ids) if count is None else count
        for k, pid in enumerate(self.ids[:count]):
            seeds = (self.ids[self.rng.randrange(k)],) if k else ()
            when = spread * k / count
            self.started[pid] = when
            self.feed(pid, ev.Join(seeds), when)
            if pid in self.claims:
                self.feed(pid, ev.SetCapability(self.claims[pid]), when)

    def join_later(self, peer: PeerId, when: float) -> None:
        """Start a peer that was left out of ``start`` (``start(count=...)``), through a random live peer."""

        def go() -> None:
            seeds = [p for p in self.live() if p != peer]
            self.started[peer] = self.now
            self._dispatch(peer, ev.Join((self.rng.choice(seeds),) if seeds else ()))
            if peer in self.claims:
                self._dispatch(peer, ev.SetCapability(self.claims[peer]))

        self.at(when, go)

    def crash(self, peer: PeerId, when: float) -> None:
        self.at(when, lambda: self.crashed.setdefault(peer, self.now))

    def run_until(self, t_end: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= t_end:
            when, _, kind, peer, payload = heapq.heappop(heap)
            self.now = when
            if kind == _ACTION:
                payload()
            elif peer in self.crashed:
                continue
            elif kind == _TIMER:
                if self.timers[peer].get(payload) == when:
                    del self.timers[peer][payload]
                    self._dispatch(peer, ev.TimerFired(payload))
            else:
                self._dispatch(peer, payload)
        self.now = t_end

    def _dispatch(self, peer: PeerId, event) -> None:
        if peer in self.crashed:
            return
        for cmd in self.nodes[peer].handle(event, self.now):
            kind = type(cmd)
            if kind is ev.Send:
                self._send(peer, cmd)
            elif kind is ev.SetTimer:
                at = max(cmd.at, self.now)  # a deadline already past fires now, never back in time
                self.timers[peer][cmd.kind] = at
                heapq.heappush(self._heap, (at, next(self._seq), _TIMER, peer, cmd.kind))
            elif kind is ev.MemberChanged:
                self.changes.append((self.now, peer, cmd))

    def _send(self, src: PeerId, cmd: ev.Send) -> None:
        self.sent += 1
        self.sent_by_type[type(cmd.msg).__name__] += 1
        if self.measure_bytes:
            self.bytes += len(wire.encode(cmd.msg))
        if self.rng.random() < self.loss:
            return
        delay = self.rng.uniform(*self.latency)
        event = ev.Received(src, cmd.msg)
        heapq.heappush(self._heap, (self.now + delay, next(self._seq), _DELIVER, cmd.peer, event))

    # --- figures -----------------------------------------------------------------

    def live(self) -> list[PeerId]:
        return [p for p in self.ids if p in self.started and p not in self.crashed and not self.nodes[p].left]

    def figures(self, duration: float) -> Figures:
        fig = Figures()
        live = set(self.live())
        first_dead: dict[tuple[PeerId, PeerId], float] = {}
        for t, observer, change in self.changes:
            if change.new == DEAD:
                first_dead.setdefault((observer, change.peer), t)
                if change.peer not in self.crashed or t < self.crashed[change.peer]:
                    fig.false_deaths.append((t, observer, change.peer))
        for victim, t_crash in self.crashed.items():
            times = [first_dead.get((obs, victim)) for obs in live if self.started[obs] < t_crash]
            if all(t is not None for t in times):
                fig.detections[victim] = max(times) - t_crash
            else:
                fig.undetected.append(victim)
        fig.msgs_per_peer_s = self.sent / len(self.ids) / duration
        fig.bytes_per_peer_s = self.bytes / len(self.ids) / duration
        return fig
