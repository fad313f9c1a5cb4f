"""A synthetic Kademlia network for lookup tests: pure Python, discrete events, no trio.

Every peer has a real ``RoutingTable`` filled from full knowledge of the
network (each peer is offered every other one; the table keeps at most k per
bucket, as a converged network would). Queries are answered from those
tables after a random latency. Peers behave in one of three ways:

* ``honest`` — answers with the k closest peers of its table;
* ``dead`` — never answers (crashed, still listed in others' tables);
* ``liar`` — answers at once with ``lie(target)``: fabricated peer IDs ground
  to be closer to the target than any real peer (they never answer), or the
  liars closest to the target (colluders hiding honest peers).
"""

from __future__ import annotations

import heapq
import random
import statistics
from dataclasses import dataclass, field

from p2pcompute.dht.keys import common_prefix_len, key_of, peer_key
from p2pcompute.dht.lookup import Lookup
from p2pcompute.dht.routing import RoutingTable
from p2pcompute.node.identity import PeerId


def random_peer(rng: random.Random) -> PeerId:
    return PeerId.from_public_key(rng.randbytes(32))


@dataclass
class Network:
    peers: list[PeerId]
    tables: dict[PeerId, RoutingTable]
    behaviour: dict[PeerId, str]
    k: int
    rng: random.Random
    fake_cpl: int = 8
    _fakes: dict[int, list[PeerId]] = field(default_factory=dict)

    def responsive(self) -> list[PeerId]:
        return [p for p in self.peers if self.behaviour[p] != "dead"]

    def truth(self, origin: PeerId, target: int) -> list[PeerId]:
        """The peers that answer among the k closest of the network (origin excluded).

        Dead peers still sit in tables and are named in answers, so a lookup
        cannot be asked to find live peers beyond the k closest overall.
        """
        others = [p for p in self.peers if p != origin]
        closest = sorted(others, key=lambda p: peer_key(p) ^ target)[: self.k]
        return [p for p in closest if self.behaviour[p] != "dead"]

    def found(self, lookup: Lookup, origin: PeerId) -> bool:
        """The lookup's result starts with exactly the peers of ``truth``."""
        expected = self.truth(origin, lookup.target)
        return lookup.result()[: len(expected)] == expected

    def fakes(self, target: int) -> list[PeerId]:
        """k made-up peer IDs sharing at least ``fake_cpl`` bits with ``target`` (cached)."""
        if target not in self._fakes:
            out: list[PeerId] = []
            prefix = b"\x00\x24\x08\x01\x12\x20"  # identity multihash of an ed25519 key
            while len(out) < self.k:
                raw = prefix + self.rng.randbytes(32)
                if common_prefix_len(key_of(raw), target) >= self.fake_cpl:
                    out.append(PeerId(raw))
            self._fakes[target] = out
        return self._fakes[target]

    def answer(self, responder: PeerId, asker: PeerId, target: int, lie: str) -> list[PeerId] | None:
        kind = self.behaviour.get(responder, "dead")
        if kind == "dead":
            return None
        if kind == "liar":
            if lie == "fake":
                return list(self.fakes(target))
            liars = [p for p in self.peers if self.behaviour[p] == "liar" and p != responder]
            return sorted(liars, key=lambda p: peer_key(p) ^ target)[: self.k]
        return self.tables[responder].closest(target, self.k, exclude=(asker,))


def build(n: int, *, seed: int, k: int = 20, dead: float = 0.0, liars: float = 0.0) -> Network:
    rng = random.Random(seed)
    peers = [random_peer(rng) for _ in range(n)]
    tables = {}
    for peer in peers:
        table = RoutingTable(peer, now=0.0, rng=random.Random(rng.random()), k=k)
        others = list(peers)
        rng.shuffle(others)
        for other in others:
            table.on_seen(other, 0.0)
        tables[peer] = table
    behaviour = {p: "honest" for p in peers}
    shuffled = list(peers)
    rng.shuffle(shuffled)
    n_dead, n_liars = int(n * dead), int(n * liars)
    for p in shuffled[:n_dead]:
        behaviour[p] = "dead"
    for p in shuffled[n_dead : n_dead + n_liars]:
        behaviour[p] = "liar"
    return Network(peers, tables, behaviour, k, rng)


def run_lookup(
    net: Network,
    origin: PeerId,
    target: int,
    *,
    alpha: int = 3,
    paths: int = 1,
    lie: str = "fake",
    query_timeout: float = 1.0,
    timeout: float = 30.0,
    latency: tuple[float, float] = (0.02, 0.12),
) -> Lookup:
    """Run one lookup to completion in virtual time; returns the finished ``Lookup``."""
    rng = net.rng
    seeds = net.tables[origin].closest(target, net.k)
    lookup = Lookup(
        target, seeds, now=0.0, k=net.k, alpha=alpha, paths=paths, local=origin,
        query_timeout=query_timeout, timeout=timeout,
    )
    events: list[tuple[float, int, PeerId, list[PeerId]]] = []
    counter = 0
    now = 0.0
    for _ in range(100_000):
        for query in lookup.next(now):
            reply = net.answer(query.peer, origin, target, lie)
            if reply is not None:
                delay = 0.001 if net.behaviour[query.peer] == "liar" else rng.uniform(*latency)
                counter += 1
                heapq.heappush(events, (now + delay, counter, query.peer, reply))
        if lookup.finished:
            return lookup
        wake = lookup.next_deadline()
        if events and events[0][0] < wake:
            wake = events[0][0]
        now = max(now, wake)
        while events and events[0][0] <= now:
            _, _, peer, reply = heapq.heappop(events)
            lookup.on_response(peer, reply, now)
    raise AssertionError("lookup did not finish")


@dataclass
class Figures:
    lookups: int
    success: float
    median_hops: float
    max_hops: int
    median_queries: float
    median_seconds: float


def measure(net: Network, count: int, *, seed: int, **kw) -> tuple[Figures, list[Lookup]]:
    """``count`` lookups from random responsive origins for random keys."""
    rng = random.Random(seed)
    origins = [p for p in net.peers if net.behaviour[p] == "honest"]
    done, ok = [], 0
    for _ in range(count):
        origin = rng.choice(origins)
        target = rng.getrandbits(256)
        lookup = run_lookup(net, origin, target, **kw)
        done.append(lookup)
        ok += net.found(lookup, origin)
    hops = [lk.hops or 0 for lk in done]
    return (
        Figures(
            lookups=count,
            success=ok / count,
            median_hops=statistics.median(hops),
            max_hops=max(hops),
            median_queries=statistics.median(lk.queries for lk in done),
            median_seconds=statistics.median(lk.ended_at or 0.0 for lk in done),
        ),
        done,
    )
