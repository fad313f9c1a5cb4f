"""Iterative Kademlia lookups (FIND_NODE, GET_PROVIDERS, GET_VALUE) as pure state machines.

Theory of operation
-------------------
A lookup keeps, per *path*, a candidate list sorted by XOR distance to the
target. Each candidate is in one state: not yet asked, waiting (a query is
out, with a deadline), succeeded (it answered), failed (it did not, or its
deadline passed), or claimed by another path.

``next(now)`` is the only place decisions are made. It first marks waiting
candidates whose deadline passed as failed (a late answer is still taken),
then walks each path's list closest first, counting candidates that have not
failed. Among the first ``k`` of them it sends ``Query`` commands to those
not yet asked, while fewer than ``alpha`` queries are in flight. A path is
finished when its first ``k`` non-failed candidates have all succeeded, or
when nothing is waiting and nobody is left to ask. If ``alpha`` answers in
a row bring nobody closer than the closest known, the path is *stalled* and
may have ``k`` queries in flight, to finish quickly (as rust-libp2p does).

``on_response(peer, closer_peers, now)`` marks ``peer`` succeeded and adds the
peers it named (the ``max_closer`` closest of them, never ourselves) to its path,
each one hop further than ``peer``; ``on_failure(peer, now)`` marks it failed.
Nothing is sent from those handlers: call ``next`` afterwards.

Disjoint paths (S/Kademlia). With ``paths = d > 1`` the seeds are dealt to
``d`` independent candidate lists, closest first, round robin. A peer may be
queried by one path only (the first that gets to it); peers a path learns go
into that path's list only. A liar can therefore mislead at most the paths
that query it; the result is the ``k`` closest peers that answered on any
path, so one clean path suffices. The lookup ends when every path has.

Bounds and time: at most ``max_candidates`` candidates per path (the
farthest not-yet-asked ones are dropped), at most ``max_queries`` queries in
total, and a whole-lookup ``timeout``; all are data, checked in ``next``.
``next_deadline()`` says when ``next`` must be called again even if no answer
arrives.

Hops: a seed is one hop away; a peer learned from a peer ``h`` hops away is
``h + 1`` hops away (the smallest such number wins). ``hops`` is the hop
count of the closest peer that answered: how many sequential requests it
took to reach the target's neighbourhood.

``ProviderLookup`` and ``ValueLookup`` extend this with what GET_PROVIDERS and
GET_VALUE answers carry, and finish early once they have enough.
"""

from __future__ import annotations

import bisect
import enum
import heapq
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..node.identity import PeerId
from .keys import Key, peer_key


class State(enum.Enum):
    NEW = "new"
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CLAIMED = "claimed"  # queried by another disjoint path


@dataclass(frozen=True)
class Query:
    """Command: send the lookup's request to ``peer``; answer by ``deadline``."""

    peer: PeerId
    path: int
    deadline: float


@dataclass(slots=True)
class _Candidate:
    peer: PeerId
    distance: int
    hop: int
    state: State = State.NEW
    deadline: float = math.inf


_NEW, _WAITING, _SUCCEEDED, _FAILED, _CLAIMED = State.NEW, State.WAITING, State.SUCCEEDED, State.FAILED, State.CLAIMED


class _Path:
    """One candidate list, closest first.

    Bookkeeping kept alongside, so no method rescans the list for it:
    ``distances`` (parallel to ``order``, for bisection), ``waiting`` (the
    candidates with a query out) and ``unusable`` (how many are failed or
    claimed).
    """

    def __init__(self, index: int, target: Key, k: int, alpha: int, max_candidates: int) -> None:
        self.index = index
        self.target = target
        self.k = k
        self.alpha = alpha
        self.max_candidates = max_candidates
        self.order: list[_Candidate] = []  # by distance
        self.distances: list[int] = []  # order[i].distance
        self.cands: dict[PeerId, _Candidate] = {}
        self.waiting: dict[PeerId, _Candidate] = {}
        self.unusable = 0
        self.in_flight = 0
        self.no_progress = 0
        self.done = False

    def add(self, peer: PeerId, hop: int) -> bool:
        cand = self.cands.get(peer)
        if cand is not None:
            if hop < cand.hop:
                cand.hop = hop
            return False
        distance = peer_key(peer) ^ self.target
        cand = self.cands[peer] = _Candidate(peer, distance, hop)
        i = bisect.bisect_right(self.distances, distance)
        self.distances.insert(i, distance)
        self.order.insert(i, cand)
        if len(self.order) > self.max_candidates:
            self._trim()
        return True

    def _trim(self) -> None:
        for i in range(len(self.order) - 1, -1, -1):
            if len(self.order) <= self.max_candidates:
                return
            cand = self.order[i]
            if cand.state is _NEW:
                del self.order[i]
                del self.distances[i]
                del self.cands[cand.peer]

    def best_distance(self) -> int | None:
        for cand in self.order:
            if cand.state is not _FAILED and cand.state is not _CLAIMED:
                return cand.distance
        return None

    def has_k_usable(self) -> bool:
        return len(self.order) - self.unusable >= self.k

    def settle(self, cand: _Candidate, state: State) -> None:
        """A waiting ``cand`` got its answer (``SUCCEEDED``) or did not (``FAILED``)."""
        del self.waiting[cand.peer]
        self.in_flight -= 1
        cand.state = state
        if state is _FAILED:
            self.unusable += 1

    def expire(self, now: float) -> int:
        expired = [cand for cand in self.waiting.values() if cand.deadline <= now]
        for cand in expired:
            self.settle(cand, _FAILED)
        return len(expired)

    def step(self, now: float, timeout: float, claims: dict[PeerId, int], budget: int) -> list[Query]:
        """Queries to send now (at most ``budget``); sets ``done``."""
        k, index = self.k, self.index
        cap = k if self.no_progress >= self.alpha else self.alpha
        out: list[Query] = []
        seen = 0
        all_succeeded = True
        for cand in self.order:
            if seen >= k:
                break
            state = cand.state
            if state is _NEW and claims.get(cand.peer, index) != index:
                cand.state = state = _CLAIMED
                self.unusable += 1
            if state is _FAILED or state is _CLAIMED:
                continue
            seen += 1
            if state is _SUCCEEDED:
                continue
            all_succeeded = False
            if state is _NEW and self.in_flight < cap and len(out) < budget:
                peer = cand.peer
                claims[peer] = index
                cand.state = _WAITING
                cand.deadline = now + timeout
                self.waiting[peer] = cand
                self.in_flight += 1
                out.append(Query(peer, index, cand.deadline))
        # All of the first k usable candidates answered (or there are none left).
        self.done = all_succeeded
        return out


class Lookup:
    """An iterative FIND_NODE lookup for ``target``. See the module doc."""

    def __init__(
        self,
        target: Key,
        seeds: Iterable[PeerId],
        *,
        now: float,
        k: int = 20,
        alpha: int = 3,
        paths: int = 1,
        query_timeout: float = 10.0,
        timeout: float = 60.0,
        local: PeerId | None = None,
        max_closer: int | None = None,
        max_candidates: int | None = None,
        max_queries: int | None = None,
    ) -> None:
        if k < 1 or alpha < 1 or paths < 1:
            raise ValueError("k, alpha and paths must be at least 1")
        self.target = target
        self.k = k
        self.alpha = alpha
        self.local = local
        self.query_timeout = query_timeout
        self.started = now
        self.deadline = now + timeout
        self.max_closer = 2 * k if max_closer is None else max_closer
        self.max_queries = 20 * k * paths if max_queries is None else max_queries
        cap = 8 * k if max_candidates is None else max_candidates
        self._paths = [_Path(i, target, k, alpha, cap) for i in range(paths)]
        self._claims: dict[PeerId, int] = {}
        self.queries = 0
        self.failures = 0
        self.finished = False
        self.timed_out = False
        self.ended_at: float | None = None
        ordered = sorted({p for p in seeds if p != local}, key=lambda p: peer_key(p) ^ target)
        for i, peer in enumerate(ordered):
            self._paths[i % paths].add(peer, 1)

    # --- driving ----------------------------------------------------------------

    def next(self, now: float) -> list[Query]:
        """Queries to send now; empty when waiting or finished (check ``finished``)."""
        if self.finished:
            return []
        if now >= self.deadline:
            self._finish(now, timed_out=True)
            return []
        out: list[Query] = []
        for path in self._paths:
            self.failures += path.expire(now)
        for path in self._paths:
            if path.done:
                continue
            batch = path.step(now, self.query_timeout, self._claims, self.max_queries - self.queries)
            self.queries += len(batch)
            out.extend(batch)
        if all(p.done for p in self._paths) or (not out and self._out_of_budget()):
            self._finish(now, timed_out=False)
        return out

    def on_response(self, peer: PeerId, closer_peers: Sequence[PeerId], now: float) -> None:
        """``peer`` answered, naming ``closer_peers``. Call ``next`` afterwards."""
        path, cand = self._find(peer)
        if cand is None or self.finished:
            return
        if cand.state is _WAITING:
            path.settle(cand, _SUCCEEDED)
        elif cand.state is _FAILED:  # late answers after a timeout still count
            cand.state = _SUCCEEDED
            path.unusable -= 1
        else:
            return
        before = path.best_distance()
        local = self.local
        named = [p for p in closer_peers if p != local and p != peer]
        if len(named) > self.max_closer:  # keep the closest of an oversized answer
            named = heapq.nsmallest(self.max_closer, named, key=lambda p: peer_key(p) ^ self.target)
        hop = cand.hop + 1
        add, known = path.add, path.cands
        for other in named:
            seen = known.get(other)
            if seen is None:
                add(other, hop)
            elif hop < seen.hop:
                seen.hop = hop
        after = path.best_distance()
        improved = after is not None and (before is None or after < before)
        path.no_progress = 0 if improved or not path.has_k_usable() else path.no_progress + 1
        path.done = False

    def on_failure(self, peer: PeerId, now: float) -> None:
        """The query to ``peer`` failed (error, disconnect, timeout seen by the driver)."""
        path, cand = self._find(peer)
        if cand is None or cand.state is not _WAITING:
            return
        path.settle(cand, _FAILED)
        path.done = False
        self.failures += 1

    def next_deadline(self) -> float:
        """The earliest time ``next`` must run even if nothing arrives."""
        earliest = self.deadline
        for path in self._paths:
            for cand in path.waiting.values():
                if cand.deadline < earliest:
                    earliest = cand.deadline
        return earliest

    # --- results ----------------------------------------------------------------

    def result(self) -> list[PeerId]:
        """The ``k`` closest peers that answered (on any path), closest first."""
        return [c.peer for c in self._succeeded()[: self.k]]

    @property
    def hops(self) -> int | None:
        best = self._succeeded()
        return best[0].hop if best else None

    def responded(self) -> list[PeerId]:
        return [c.peer for c in self._succeeded()]

    def failed(self) -> list[PeerId]:
        """Peers whose query failed or timed out (the driver reports them to the routing table)."""
        return [c.peer for p in self._paths for c in p.cands.values() if c.state is State.FAILED]

    def queried_by_path(self) -> list[set[PeerId]]:
        """Which peers each path sent a query to (disjointness is checkable)."""
        return [
            {c.peer for c in p.cands.values() if c.state in (State.WAITING, State.SUCCEEDED, State.FAILED)}
            for p in self._paths
        ]

    def state_of(self, peer: PeerId) -> State | None:
        _path, cand = self._find(peer)
        return None if cand is None else cand.state

    # --- internals ----------------------------------------------------------------

    def _find(self, peer: PeerId) -> tuple[_Path, _Candidate | None]:
        index = self._claims.get(peer)
        if index is not None:
            path = self._paths[index]
            return path, path.cands.get(peer)
        return self._paths[0], None

    def _succeeded(self) -> list[_Candidate]:
        found = [c for p in self._paths for c in p.cands.values() if c.state is State.SUCCEEDED]
        found.sort(key=lambda c: c.distance)
        return found

    def _out_of_budget(self) -> bool:
        return self.queries >= self.max_queries and all(p.in_flight == 0 for p in self._paths)

    def _finish(self, now: float, *, timed_out: bool) -> None:
        self.finished = True
        self.timed_out = timed_out
        self.ended_at = now


class ProviderLookup(Lookup):
    """GET_PROVIDERS: a lookup that also collects providers; stops at ``want`` of them."""

    def __init__(self, target: Key, seeds: Iterable[PeerId], *, now: float, want: int = 20, **kw: Any) -> None:
        super().__init__(target, seeds, now=now, **kw)
        self.want = want
        self.providers: dict[PeerId, PeerId] = {}  # provider -> who told us first

    def on_response(  # type: ignore[override]
        self, peer: PeerId, closer_peers: Sequence[PeerId], now: float, providers: Sequence[PeerId] = ()
    ) -> None:
        if self.finished or self._find(peer)[1] is None:
            return
        for provider in providers:
            if len(self.providers) >= self.want:
                break
            self.providers.setdefault(provider, peer)
        super().on_response(peer, closer_peers, now)
        if len(self.providers) >= self.want:
            self._finish(now, timed_out=False)


class ValueLookup(Lookup):
    """GET_VALUE: a lookup that collects validated records; stops after ``quorum`` answers with one.

    ``newer(a, b)`` says whether record ``a`` supersedes ``b`` (see
    ``records.newer``). Peers that answered with an older record, or none
    while being among the closest, are listed by ``outdated`` so the driver
    can send them the best record (a correcting PUT_VALUE, as libp2p does).
    """

    def __init__(
        self,
        target: Key,
        seeds: Iterable[PeerId],
        *,
        now: float,
        newer: Callable[[Any, Any], bool],
        quorum: int = 3,
        **kw: Any,
    ) -> None:
        super().__init__(target, seeds, now=now, **kw)
        self.quorum = quorum
        self._newer = newer
        self.values: dict[PeerId, Any] = {}
        self.best: Any = None

    def on_response(  # type: ignore[override]
        self, peer: PeerId, closer_peers: Sequence[PeerId], now: float, record: Any = None
    ) -> None:
        if self.finished or self._find(peer)[1] is None:
            return
        if record is not None:
            self.values[peer] = record
            if self.best is None or self._newer(record, self.best):
                self.best = record
        super().on_response(peer, closer_peers, now)
        if len(self.values) >= self.quorum:
            self._finish(now, timed_out=False)

    def outdated(self) -> list[PeerId]:
        """Peers among the closest answering ones whose record is not the best."""
        if self.best is None:
            return []
        return [p for p in self.result() if self.values.get(p) is None or self._newer(self.best, self.values[p])]
