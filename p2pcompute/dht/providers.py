"""Provider records (ADD_PROVIDER / GET_PROVIDERS): a bounded expiring store and a republish schedule.

Theory of operation
-------------------
``ProviderStore`` is the serving side. A provider record says "peer P holds
the content whose key is K" (K is the multihash of a CID, as kubo uses). It
expires ``ttl`` seconds after it was last announced (libp2p: 48 h); the
provider re-announces well before (``Republisher``, libp2p/kubo: 22 h).
``get`` never returns an expired record; ``expire(now)`` drops them.

Everything in it comes from other peers, so everything is bounded, and each
record's memory is counted (``bytes``: its key and addresses plus a fixed
estimate per record and per key):

* a record keeps at most ``MAX_ADDRS`` (8) addresses of at most
  ``pb.MAX_ADDR_BYTES`` (256) bytes each (longer ones are dropped); a key
  over ``MAX_KEY_BYTES`` is refused;
* one provider's records cost at most ``max_bytes_per_provider`` (1/16 of
  the budget): beyond it, that provider's least recently announced records
  go, so one peer's flood only displaces its own records;
* at most ``max_per_key`` providers per key: beyond it, the record that
  expires first goes;
* at most ``max_keys`` keys and ``max_bytes`` in all: beyond either, the key
  least recently announced goes, with all its records.

``accept_add_provider`` is the ADD_PROVIDER rule libp2p applies: a peer may
only announce itself, so entries naming anybody else are ignored.

``Republisher`` is the providing side: ``provide(key, now)`` asks for an
announcement at once and schedules the next one every ``interval`` (with a
small random jitter so a restart does not make every key fall due together);
``due(now)`` returns the ``Announce`` commands that fell due. Keys live in a
heap with lazy deletion; the number of keys provided is bounded.
"""

from __future__ import annotations

import heapq
import random
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import UserError
from ..node.identity import PeerId
from . import pb

PROVIDER_TTL = 48 * 3600.0
REPUBLISH_INTERVAL = 22 * 3600.0
MAX_ADDRS = 8
MAX_KEY_BYTES = 1024
RECORD_COST = 200  # bytes a record costs besides its key and addresses (objects, dict slots): an estimate
KEY_COST = 250  # bytes a key costs besides its own bytes (its dict and ordering entries)


@dataclass
class ProviderRecord:
    provider: PeerId
    addrs: tuple[bytes, ...]  # binary multiaddrs, at most MAX_ADDRS of at most pb.MAX_ADDR_BYTES each
    expires: float

    def cost(self, key: bytes) -> int:
        return RECORD_COST + len(key) + sum(map(len, self.addrs))


class ProviderStore:
    """Who provides which key, with expiry, within a memory budget. See the module doc."""

    def __init__(self, *, ttl: float = PROVIDER_TTL, max_keys: int = 100_000, max_per_key: int = 64,
                 max_bytes: int = 64 << 20, max_bytes_per_provider: int | None = None) -> None:
        self.ttl = ttl
        self.max_keys = max_keys
        self.max_per_key = max_per_key
        self.max_bytes = max_bytes
        self.max_bytes_per_provider = max_bytes // 16 if max_bytes_per_provider is None else max_bytes_per_provider
        self.bytes = 0  # estimated memory of everything held (``RECORD_COST``, ``KEY_COST``)
        self.refused = 0  # records refused (key too long, or bigger than a provider's whole quota)
        # key -> provider -> record; keys ordered by their latest announcement (oldest first)
        self._keys: OrderedDict[bytes, dict[PeerId, ProviderRecord]] = OrderedDict()
        # provider -> its keys, least recently announced first, and the bytes its records cost
        self._by_provider: dict[PeerId, OrderedDict[bytes, None]] = {}
        self._provider_bytes: dict[PeerId, int] = {}

    def __len__(self) -> int:
        return sum(len(v) for v in self._keys.values())

    def keys(self) -> list[bytes]:
        return list(self._keys)

    def add(self, key: bytes, provider: PeerId, now: float, addrs: Iterable[bytes] = ()) -> bool:
        """Store (or renew) that ``provider`` holds ``key``; False if refused. Evicts to stay in bounds."""
        record = ProviderRecord(provider, pb.kept_addrs(tuple(addrs), MAX_ADDRS), now + self.ttl)
        cost = record.cost(key)
        if not key or len(key) > MAX_KEY_BYTES or cost > self.max_bytes_per_provider:
            self.refused += 1
            return False
        self._remove(key, provider)
        records = self._keys.get(key)
        if records is None:
            records = self._keys[key] = {}
            self.bytes += KEY_COST + len(key)
        self._keys.move_to_end(key)
        records[provider] = record
        self._account(key, record, +1)
        # a provider's own records make room for each other first; then the per-key bound; then the whole store
        own = self._by_provider[provider]
        while self._provider_bytes[provider] > self.max_bytes_per_provider:
            self._remove(next(iter(own)), provider)
        if len(records) > self.max_per_key:
            first = min(records.values(), key=lambda r: r.expires)
            self._remove(key, first.provider)
        while len(self._keys) > self.max_keys or self.bytes > self.max_bytes:
            oldest = next(iter(self._keys))
            for p in list(self._keys[oldest]):
                self._remove(oldest, p)
        return provider in self._keys.get(key, {})

    def get(self, key: bytes, now: float, limit: int = 20) -> list[ProviderRecord]:
        """Unexpired providers of ``key``, most recently announced first."""
        records = self._keys.get(key)
        if not records:
            return []
        live = [r for r in records.values() if r.expires > now]
        live.sort(key=lambda r: r.expires, reverse=True)
        return live[:limit]

    def expire(self, now: float) -> int:
        """Drop expired records; returns how many went."""
        dropped = 0
        for key in list(self._keys):
            for provider in [p for p, r in self._keys[key].items() if r.expires <= now]:
                self._remove(key, provider)
                dropped += 1
        return dropped

    def next_expiry(self) -> float | None:
        times = [r.expires for records in self._keys.values() for r in records.values()]
        return min(times, default=None)

    def provider_bytes(self, provider: PeerId) -> int:
        return self._provider_bytes.get(provider, 0)

    def _remove(self, key: bytes, provider: PeerId) -> None:
        records = self._keys.get(key)
        record = records.pop(provider, None) if records is not None else None
        if record is not None:
            self._account(key, record, -1)
        if records is not None and not records:
            del self._keys[key]
            self.bytes -= KEY_COST + len(key)

    def _account(self, key: bytes, record: ProviderRecord, sign: int) -> None:
        cost = sign * record.cost(key)
        self.bytes += cost
        provider = record.provider
        own = self._by_provider.setdefault(provider, OrderedDict())
        if sign > 0:
            own[key] = None
            own.move_to_end(key)
            self._provider_bytes[provider] = self._provider_bytes.get(provider, 0) + cost
        else:
            own.pop(key, None)
            left = self._provider_bytes.get(provider, 0) + cost
            if own:
                self._provider_bytes[provider] = left
            else:
                del self._by_provider[provider]
                self._provider_bytes.pop(provider, None)


def accept_add_provider(
    sender: PeerId, announced: Iterable[tuple[PeerId, tuple[bytes, ...]]]
) -> list[tuple[PeerId, tuple[bytes, ...]]]:
    """The entries of an ADD_PROVIDER from ``sender`` that may be stored: those naming ``sender``."""
    return [(peer, addrs) for peer, addrs in announced if peer == sender]


@dataclass(frozen=True)
class Announce:
    """Command: announce that we provide ``key`` (ADD_PROVIDER to the k closest peers)."""

    key: bytes


class Republisher:
    """The keys this peer provides and when each must be announced again."""

    def __init__(
        self,
        *,
        rng: random.Random,
        interval: float = REPUBLISH_INTERVAL,
        jitter: float = 0.05,
        max_keys: int = 1_000_000,
    ) -> None:
        self.interval = interval
        self.jitter = jitter
        self.max_keys = max_keys
        self._rng = rng
        self._next: dict[bytes, float] = {}  # key -> next announcement
        self._heap: list[tuple[float, bytes]] = []

    def __len__(self) -> int:
        return len(self._next)

    def __contains__(self, key: object) -> bool:
        return key in self._next

    def provide(self, key: bytes, now: float) -> list[Announce]:
        """Start providing ``key``: announce now, then every ``interval``."""
        if key not in self._next and len(self._next) >= self.max_keys:
            raise UserError(f"this peer already provides {self.max_keys} keys; raise the limit or provide fewer")
        self._schedule(key, now)
        self._compact()
        return [Announce(key)]

    def stop(self, key: bytes) -> None:
        self._next.pop(key, None)  # its heap entry is skipped when it surfaces

    def due(self, now: float) -> list[Announce]:
        out: list[Announce] = []
        while self._heap and self._heap[0][0] <= now:
            when, key = heapq.heappop(self._heap)
            if self._next.get(key) != when:
                continue  # stopped or rescheduled
            self._schedule(key, now)
            out.append(Announce(key))
        self._compact()
        return out

    def next_deadline(self) -> float | None:
        while self._heap and self._next.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def _schedule(self, key: bytes, now: float) -> None:
        when = now + self.interval * (1.0 - self.jitter * self._rng.random())
        self._next[key] = when
        heapq.heappush(self._heap, (when, key))

    def _compact(self) -> None:
        if len(self._heap) > 2 * len(self._next) + 64:
            self._heap = [(w, k) for k, w in self._next.items()]
            heapq.heapify(self._heap)
