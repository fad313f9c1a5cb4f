"""Provider records (ADD_PROVIDER / GET_PROVIDERS): a bounded expiring store and a republish schedule.

Theory of operation
-------------------
``ProviderStore`` is the serving side. A provider record says "peer P holds
the content whose key is K" (K is the multihash of a CID, as kubo uses). It
expires ``ttl`` seconds after it was last announced (libp2p: 48 h); the
provider re-announces well before (``Republisher``, libp2p/kubo: 22 h). The
store holds at most ``max_keys`` keys and ``max_per_key`` providers per key:
a new key beyond the bound evicts the key whose newest record is oldest, a
new provider beyond the bound evicts the record that expires first.
``get`` never returns an expired record; ``expire(now)`` drops them.

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

PROVIDER_TTL = 48 * 3600.0
REPUBLISH_INTERVAL = 22 * 3600.0
MAX_ADDRS = 8


@dataclass
class ProviderRecord:
    provider: PeerId
    addrs: tuple[bytes, ...]  # binary multiaddrs, at most MAX_ADDRS
    expires: float


class ProviderStore:
    """Who provides which key, with expiry. See the module doc."""

    def __init__(self, *, ttl: float = PROVIDER_TTL, max_keys: int = 100_000, max_per_key: int = 64) -> None:
        self.ttl = ttl
        self.max_keys = max_keys
        self.max_per_key = max_per_key
        # key -> provider -> record; keys ordered by their latest announcement (oldest first)
        self._keys: OrderedDict[bytes, dict[PeerId, ProviderRecord]] = OrderedDict()

    def __len__(self) -> int:
        return sum(len(v) for v in self._keys.values())

    def keys(self) -> list[bytes]:
        return list(self._keys)

    def add(self, key: bytes, provider: PeerId, now: float, addrs: Iterable[bytes] = ()) -> None:
        records = self._keys.get(key)
        if records is None:
            records = self._keys[key] = {}
            while len(self._keys) > self.max_keys:
                self._keys.popitem(last=False)
        self._keys.move_to_end(key)
        records[provider] = ProviderRecord(provider, tuple(addrs)[:MAX_ADDRS], now + self.ttl)
        if len(records) > self.max_per_key:
            first = min(records.values(), key=lambda r: r.expires)
            del records[first.provider]

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
            records = self._keys[key]
            for provider in [p for p, r in records.items() if r.expires <= now]:
                del records[provider]
                dropped += 1
            if not records:
                del self._keys[key]
        return dropped

    def next_expiry(self) -> float | None:
        times = [r.expires for records in self._keys.values() for r in records.values()]
        return min(times, default=None)


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
