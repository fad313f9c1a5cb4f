"""Per-peer token buckets (pure: ``now`` is given): inbound kad requests, inbound handshakes per IP.

Theory of operation
-------------------
Each peer has a bucket of ``burst`` tokens refilled at ``rate`` per second;
a request takes one. ``reserve(peer, now)`` answers how long the request
must wait for its token: 0 when one is there; a positive wait when the
bucket is empty but the token comes within ``max_wait`` (it is taken now, so
the bucket goes below zero and later requests queue behind it); ``None`` when
it would come later than that, and then nothing is taken: the caller drops
the request (the driver resets the stream). An honest peer's burst (a
routing-table refresh) fits, or waits a moment; a flood is served at
``rate`` and the rest is dropped, so a peer cannot buy more than its share
of CPU whatever it sends.

At most ``max_peers`` buckets are kept (least recently used go; a peer
whose bucket went starts again full, which gains it at most ``burst``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class PeerRateLimiter:
    def __init__(self, rate: float, burst: float, *, max_wait: float = 1.0, max_peers: int = 4096) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self.max_wait = max_wait
        self.max_peers = max_peers
        self._buckets: OrderedDict[Hashable, list[float]] = OrderedDict()  # peer -> [tokens, at]
        self.refused = 0

    def __len__(self) -> int:
        return len(self._buckets)

    def reserve(self, peer: Hashable, now: float) -> float | None:
        """Seconds to wait before serving one request from ``peer``; ``None``: drop it."""
        bucket = self._buckets.get(peer)
        if bucket is None:
            bucket = self._buckets[peer] = [float(self.burst), now]
            while len(self._buckets) > self.max_peers:
                self._buckets.popitem(last=False)
        self._buckets.move_to_end(peer)
        tokens, at = bucket
        tokens = min(float(self.burst), tokens + max(0.0, now - at) * self.rate)
        wait = max(0.0, (1.0 - tokens) / self.rate)
        bucket[1] = max(now, at)
        if wait > self.max_wait:
            bucket[0] = tokens
            self.refused += 1
            return None
        bucket[0] = tokens - 1.0
        return wait

    def tokens(self, peer: Hashable, now: float) -> float:
        bucket = self._buckets.get(peer)
        if bucket is None:
            return float(self.burst)
        return min(float(self.burst), bucket[0] + max(0.0, now - bucket[1]) * self.rate)
