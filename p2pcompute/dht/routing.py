"""The Kademlia routing table: k-buckets with replacement caches, as a pure state machine.

Theory of operation
-------------------
Layout. There are 256 buckets, one per common-prefix length (CPL) with our
own key: a peer whose key shares exactly ``i`` leading bits with ours lives
in bucket ``i``. Each bucket keeps at most ``k`` live entries, least recently
seen first, and a bounded *replacement cache* of peers that arrived while it
was full, newest last.

Why fixed buckets rather than splitting. The paper's tree splits only the
bucket that contains our own key (its relaxed rule for unbalanced trees is
an optimisation libp2p does not use either). Repeatedly splitting the "own"
bucket produces exactly the buckets "CPL = 0, 1, 2, ..." — so a fixed array
indexed by CPL holds the same peers as a fully split tree, and libp2p's
go-libp2p-kbucket (which unfolds its list as the last bucket fills) is the
same table stored lazily. We store lazily too (a dict of non-empty buckets),
which costs nothing for the deep buckets that stay empty, while the invariant
"a peer is in bucket ``cpl(self, peer)``" is checkable in O(1) and there is
no split code to get wrong. The effect a split has — a full far bucket never
stops us from learning peers nearer to ourselves — holds by construction.

Events (each takes ``now``; commands come back as data):

* ``on_seen(peer, now)`` — the peer proved it is alive and speaks the DHT
  (it answered one of our requests, or sent us one). It is moved to the
  tail of its bucket, or added if the bucket has room. If the bucket is
  full, the peer goes to the replacement cache and, unless the bucket's
  least recently seen entry was seen within ``fresh_for`` seconds, a ping
  is already out for this bucket or its last such check started less than
  ``fresh_for`` ago, we emit ``PingPeer(lru)``: the classic
  Kademlia rule that old, proven peers are preferred, but stale ones make
  room. Peers merely *mentioned* in somebody's reply must not be passed
  here: that would let a liar fill our table. A peer whose message was
  only a PING is passed with ``evict_check=False``: it is added if there is
  room or kept as a replacement, but starts no ping of ours, or else one
  peer's eviction check would set off another at every peer it pings, and
  so on across the network (measured: pings outnumbering lookup queries 7
  to 1 in a settled 1000-peer simulation). The once-per-``fresh_for`` bound
  per bucket matters as much: without it every new sighting pinged the next
  stale entry, about every entry of every full bucket each ``fresh_for``.
* ``on_ping_result(peer, ok, now)`` — the answer to a ``PingPeer``. A live
  peer is refreshed; a dead one is evicted and the newest replacement
  promoted into its place.
* ``on_failure(peer, now)`` — a request to the peer failed or timed out.
  After ``max_failures`` in a row it is evicted (and replaced); before that
  we emit a ``PingPeer`` to confirm, unless one is already out.
* ``tick(now)`` — times out overdue pings (as failed pings) and emits
  ``RefreshBucket`` for every bucket up to the deepest non-empty one whose
  refresh is due, and ``LookupSelf`` every ``refresh_interval``.
* ``touched(target, now)`` — a lookup for ``target`` ran: the bucket it falls
  into counts as refreshed.

``next_deadline()`` tells the driver when to call ``tick`` next.

Bounds: at most ``k`` entries and ``replacement_size`` cached peers per
bucket, at most one ping out per bucket.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from ..node.identity import PeerId
from .keys import ED25519_ID_PREFIX, KEY_BITS, Key, common_prefix_len, peer_key, random_preimage_with_cpl

MAX_REFRESH_CPL = 15  # as libp2p: deeper buckets are reached by the self lookup


@dataclass
class Entry:
    peer: PeerId
    key: Key
    added: float
    last_seen: float
    failures: int = 0


@dataclass(frozen=True)
class PingPeer:
    """Command: check that ``peer`` is alive; report with ``on_ping_result``."""

    peer: PeerId
    deadline: float


@dataclass(frozen=True)
class RefreshBucket:
    """Command: run a FIND_NODE lookup for ``key`` (its hash falls in bucket ``cpl``)."""

    cpl: int
    key: bytes


@dataclass(frozen=True)
class LookupSelf:
    """Command: run a FIND_NODE lookup for our own peer ID."""


@dataclass
class _Bucket:
    entries: OrderedDict[PeerId, Entry] = field(default_factory=OrderedDict)  # LRU first
    replacements: OrderedDict[PeerId, float] = field(default_factory=OrderedDict)  # newest last
    ping: tuple[PeerId, float] | None = None  # (peer, deadline)
    checked: float = float("-inf")  # when the last eviction check of a full bucket started
    _pairs: list[tuple[Key, PeerId]] | None = None  # (key, peer) of the entries, rebuilt after a change

    def pairs(self) -> list[tuple[Key, PeerId]]:
        if self._pairs is None:
            self._pairs = [(e.key, e.peer) for e in self.entries.values()]
        return self._pairs


class RoutingTable:
    """k-buckets indexed by common-prefix length with our key. See the module doc."""

    def __init__(
        self,
        local: PeerId,
        *,
        now: float,
        rng: random.Random,
        k: int = 20,
        replacement_size: int | None = None,
        max_failures: int = 2,
        ping_timeout: float = 5.0,
        fresh_for: float = 30.0,
        refresh_interval: float = 600.0,
        max_refresh_cpl: int = MAX_REFRESH_CPL,
    ) -> None:
        if k < 1:
            raise ValueError("k must be at least 1")
        self.local = local
        self.local_key = peer_key(local)
        self.k = k
        self.replacement_size = k if replacement_size is None else replacement_size
        self.max_failures = max_failures
        self.ping_timeout = ping_timeout
        self.fresh_for = fresh_for
        self.refresh_interval = refresh_interval
        self.max_refresh_cpl = max_refresh_cpl
        self._rng = rng
        self._buckets: dict[int, _Bucket] = {}
        self._where: dict[PeerId, int] = {}  # peer -> bucket index, for entries only
        self._refresh_due: dict[int, float] = {}
        self._self_due = now + refresh_interval * rng.uniform(0.5, 1.0)
        self._start = now

    # --- queries ---------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, peer: object) -> bool:
        return peer in self._where

    def bucket_index(self, peer: PeerId) -> int:
        return common_prefix_len(self.local_key, peer_key(peer))

    def peers(self) -> list[PeerId]:
        """All entries, most recently seen first (what to persist for a rejoin)."""
        entries = [e for b in self._buckets.values() for e in b.entries.values()]
        entries.sort(key=lambda e: e.last_seen, reverse=True)
        return [e.peer for e in entries]

    def entry(self, peer: PeerId) -> Entry | None:
        index = self._where.get(peer)
        return None if index is None else self._buckets[index].entries[peer]

    def bucket(self, index: int) -> list[PeerId]:
        """Entries of bucket ``index``, least recently seen first."""
        b = self._buckets.get(index)
        return [] if b is None else list(b.entries)

    def replacements(self, index: int) -> list[PeerId]:
        b = self._buckets.get(index)
        return [] if b is None else list(b.replacements)

    def bucket_indices(self) -> list[int]:
        return sorted(i for i, b in self._buckets.items() if b.entries or b.replacements)

    def closest(self, target: Key, n: int, exclude: Iterable[PeerId] = ()) -> list[PeerId]:
        """The ``n`` entries closest to ``target``, closest first (not those in ``exclude``).

        A bucket walk instead of a scan of the whole table. With ``c`` the
        common prefix length of our key and ``target`` (bits numbered from
        the most significant, from 0), a peer of bucket ``i`` is at distance
        ``d`` with:

        * ``i == c``: ``d < 2 ** (255 - c)`` (it agrees with the target on bit ``c`` too);
        * ``i > c``: ``2 ** (255 - c) <= d < 2 ** (256 - c)`` (first difference at bit ``c``);
        * ``i < c``: ``2 ** (255 - i) <= d < 2 ** (256 - i)`` (first difference at bit ``i``).

        So the groups "bucket c", "every bucket above c", "bucket c-1", ...,
        "bucket 0" are ordered by distance with no overlap; whole groups are
        taken until ``n`` peers outside ``exclude`` are in hand, and only
        those are sorted. (Distinct keys have distinct distances, so the
        result is the unique one a full sort would give.)
        """
        if n <= 0:
            return []
        buckets = self._buckets
        skip = set(exclude)
        skipped: dict[int, int] = {}  # bucket index -> excluded entries in it
        for peer in skip:
            index = self._where.get(peer)
            if index is not None:
                skipped[index] = skipped.get(index, 0) + 1
        c = common_prefix_len(self.local_key, target)
        found: list[tuple[int, PeerId]] = []
        usable = 0
        here = buckets.get(c)
        if here is not None:
            found = [(key ^ target, peer) for key, peer in here.pairs()]
            usable = len(found) - skipped.get(c, 0)
        if usable < n:
            for index, bucket in buckets.items():
                if index > c:
                    found += [(key ^ target, peer) for key, peer in bucket.pairs()]
                    usable += len(bucket.entries) - skipped.get(index, 0)
        if usable < n:
            for index in sorted((i for i in buckets if i < c), reverse=True):
                bucket = buckets[index]
                found += [(key ^ target, peer) for key, peer in bucket.pairs()]
                usable += len(bucket.entries) - skipped.get(index, 0)
                if usable >= n:
                    break
        found.sort()
        if skip:
            return [peer for _d, peer in found if peer not in skip][:n]
        return [peer for _d, peer in found[:n]]

    def pending_pings(self) -> list[PeerId]:
        return [b.ping[0] for b in self._buckets.values() if b.ping is not None]

    # --- events ----------------------------------------------------------------

    def on_seen(self, peer: PeerId, now: float, evict_check: bool = True) -> list[PingPeer]:
        """``peer`` is alive and speaks the DHT. Returns a ping command if a full bucket needs room."""
        index = self._where.get(peer)
        if index is not None:  # an entry already: refresh it
            bucket = self._buckets[index]
            entry = bucket.entries[peer]
            entry.last_seen = now
            entry.failures = 0
            bucket.entries.move_to_end(peer)
            if bucket.ping is not None and bucket.ping[0] == peer:
                bucket.ping = None
            return []
        if peer == self.local:
            return []
        index = self.bucket_index(peer)
        bucket = self._buckets.get(index)
        if bucket is None:
            bucket = self._buckets[index] = _Bucket()
        if len(bucket.entries) < self.k:
            self._insert(bucket, index, peer, now)
            return []
        bucket.replacements[peer] = now
        bucket.replacements.move_to_end(peer)
        while len(bucket.replacements) > self.replacement_size:
            bucket.replacements.popitem(last=False)
        lru = next(iter(bucket.entries.values()))
        if (evict_check and bucket.ping is None and now - lru.last_seen >= self.fresh_for
                and now - bucket.checked >= self.fresh_for):
            bucket.checked = now
            return [self._start_ping(bucket, lru.peer, now)]
        return []

    def on_ping_result(self, peer: PeerId, ok: bool, now: float) -> list[PingPeer]:
        if ok:
            return self.on_seen(peer, now)
        index = self._where.get(peer)
        if index is not None:
            bucket = self._buckets[index]
            if bucket.ping is not None and bucket.ping[0] == peer:
                bucket.ping = None
            self._evict(index, peer, now)
        return []

    def on_failure(self, peer: PeerId, now: float) -> list[PingPeer]:
        """A request to ``peer`` failed. Evicts after ``max_failures``; pings to confirm before."""
        index = self._where.get(peer)
        if index is None:
            return []
        bucket = self._buckets[index]
        entry = bucket.entries[peer]
        entry.failures += 1
        if entry.failures >= self.max_failures:
            if bucket.ping is not None and bucket.ping[0] == peer:
                bucket.ping = None
            self._evict(index, peer, now)
            return []
        if bucket.ping is None:
            return [self._start_ping(bucket, peer, now)]
        return []

    def remove(self, peer: PeerId, now: float) -> bool:
        """Drop ``peer`` (e.g. it said goodbye), promoting a replacement. True if it was there."""
        index = self._where.get(peer)
        if index is None:
            for b in self._buckets.values():
                b.replacements.pop(peer, None)
            return False
        bucket = self._buckets[index]
        if bucket.ping is not None and bucket.ping[0] == peer:
            bucket.ping = None
        self._evict(index, peer, now)
        return True

    def touched(self, target: Key, now: float) -> None:
        """A lookup for ``target`` ran: its bucket counts as refreshed."""
        index = common_prefix_len(self.local_key, target)
        if index < KEY_BITS:
            self._refresh_due[index] = now + self.refresh_interval

    def tick(self, now: float) -> list[PingPeer | RefreshBucket | LookupSelf]:
        commands: list[PingPeer | RefreshBucket | LookupSelf] = []
        for index, bucket in list(self._buckets.items()):
            if bucket.ping is not None and bucket.ping[1] <= now:
                peer = bucket.ping[0]
                bucket.ping = None
                self._evict(index, peer, now)
        for index in range(self._refresh_limit() + 1):
            if self._due(index) <= now:
                key = self._refresh_key(index)
                self._refresh_due[index] = now + self._jittered()
                if key is not None:
                    commands.append(RefreshBucket(index, key))
        if self._self_due <= now:
            self._self_due = now + self._jittered()
            commands.append(LookupSelf())
        return commands

    def next_deadline(self) -> float:
        """When ``tick`` has work next (a ping deadline or a refresh)."""
        times = [self._self_due]
        times.extend(b.ping[1] for b in self._buckets.values() if b.ping is not None)
        times.extend(self._due(i) for i in range(self._refresh_limit() + 1))
        return min(times)

    # --- internals -------------------------------------------------------------

    def _insert(self, bucket: _Bucket, index: int, peer: PeerId, now: float) -> None:
        bucket.entries[peer] = Entry(peer, peer_key(peer), now, now)
        bucket._pairs = None
        bucket.replacements.pop(peer, None)
        self._where[peer] = index

    def _evict(self, index: int, peer: PeerId, now: float) -> None:
        bucket = self._buckets[index]
        del bucket.entries[peer]
        bucket._pairs = None
        del self._where[peer]
        if bucket.replacements:
            newest, seen = bucket.replacements.popitem(last=True)
            self._insert(bucket, index, newest, now)
            bucket.entries[newest].last_seen = seen
            bucket.entries.move_to_end(newest)
        if not bucket.entries and not bucket.replacements:
            del self._buckets[index]

    def _start_ping(self, bucket: _Bucket, peer: PeerId, now: float) -> PingPeer:
        deadline = now + self.ping_timeout
        bucket.ping = (peer, deadline)
        return PingPeer(peer, deadline)

    def _refresh_limit(self) -> int:
        deepest = max((i for i, b in self._buckets.items() if b.entries), default=-1)
        return min(deepest, self.max_refresh_cpl)

    def _due(self, index: int) -> float:
        due = self._refresh_due.get(index)
        if due is None:
            due = self._start + self.refresh_interval * self._rng.uniform(0.5, 1.0)
            self._refresh_due[index] = due
        return due

    def _refresh_key(self, cpl: int) -> bytes | None:
        """A random peer-ID-shaped key whose hash falls in bucket ``cpl`` (``keys.random_preimage_with_cpl``)."""
        tries = 1 << min(cpl + 4, 22)  # only buckets past 15 need a search (max_refresh_cpl allowing)
        return random_preimage_with_cpl(self.local_key, cpl, self._rng, max_tries=tries, prefix=ED25519_ID_PREFIX)

    def _jittered(self) -> float:
        return self.refresh_interval * self._rng.uniform(0.9, 1.1)

    def __iter__(self) -> Iterator[PeerId]:
        return iter(list(self._where))
