"""A transmit-limited queue of things to piggyback, cheap to draw from.

Theory of operation
-------------------
Every item to disseminate (a membership update, a capability record) is keyed
by its subject: a newer item about the same subject replaces the older one,
wherever it was. Items sit in *buckets by transmit count*: bucket ``t`` holds
the items already sent ``t`` times, in arrival order. ``take`` walks buckets
from the least-sent upwards, so fresh news goes first and nothing starves,
and moves each taken item one bucket up, dropping it once it has been sent
``limit`` times (about λ·log N, decided by the caller). A draw costs time in
proportion to the items taken, never to the queue's length: no sorting, no
scan; a bucket taken whole (the usual case: a message has room for all the
news) moves up with one dict update. The queue holds at most ``max_items``; beyond that the most-sent item
is dropped.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any


class BroadcastQueue:
    """Items keyed by subject, sent at most ``limit`` times each, least-sent first."""

    def __init__(self, max_items: int = 8192) -> None:
        self._buckets: list[dict[Hashable, tuple[Any, int]]] = [{}]  # by transmits: key -> (item, size)
        self._bytes: list[int] = [0]  # total size per bucket
        self.counts: dict[Hashable, int] = {}  # key -> transmits so far (its bucket); read-only outside
        self._max_items = max_items

    def __len__(self) -> int:
        return len(self.counts)

    def __contains__(self, key: Hashable) -> bool:
        return key in self.counts

    def transmits(self, key: Hashable) -> int | None:
        """How many times the item under ``key`` was sent, or None when not queued."""
        return self.counts.get(key)

    def push(self, key: Hashable, item: Any, size: int, refine: int | None = None) -> None:
        """Queue ``item`` (about ``size`` bytes on the wire), replacing any item under ``key``.

        A replacement starts afresh (never sent), unless ``refine`` is given:
        then an item still queued keeps its transmit count and place, and a new
        one starts as if already sent ``refine`` times (a refinement of news
        already on its way, such as one more confirmation of a suspicion).
        """
        t = self.counts.get(key)
        if refine is not None and t is not None:
            self._bytes[t] += size - self._buckets[t][key][1]
            self._buckets[t][key] = (item, size)
            return
        self.discard(key)
        if len(self.counts) >= self._max_items:
            self._evict_most_sent()
        t = 0 if refine is None else refine
        while t >= len(self._buckets):
            self._buckets.append({})
            self._bytes.append(0)
        self._buckets[t][key] = (item, size)
        self._bytes[t] += size
        self.counts[key] = t

    def discard(self, key: Hashable) -> None:
        t = self.counts.pop(key, None)
        if t is not None:
            self._bytes[t] -= self._buckets[t].pop(key)[1]

    def has_fresh(self, below: int) -> bool:
        """True when some item was sent fewer than ``below`` times."""
        buckets = self._buckets
        if below >= len(buckets) or not self.counts:
            return bool(self.counts)
        return any(buckets[t] for t in range(below))

    def take(self, budget: int, limit: int, max_items: int) -> tuple[list[Any], int]:
        """Draw items for one message: at most ``max_items``, about ``budget`` bytes.

        Returns the items and their total size. The first item is always
        taken, even when larger than ``budget``, so a big item cannot block
        the queue. Each taken item counts one transmit. Buckets that fit
        whole move up in one dict operation, which is the common case.
        """
        if not self.counts:
            return [], 0
        items: list[Any] = []
        used = 0
        whole: list[int] = []
        for t, bucket in enumerate(self._buckets):
            if not bucket:
                continue
            if used + self._bytes[t] <= budget and len(items) + len(bucket) <= max_items:
                whole.append(t)
                items.extend([entry[0] for entry in bucket.values()])
                used += self._bytes[t]
                continue
            partial = []
            for key, (item, size) in bucket.items():
                if items and (used + size > budget or len(items) >= max_items):
                    break
                partial.append(key)
                items.append(item)
                used += size
            self._move_keys(t, partial, limit)  # the highest bucket touched: move it first
            break
        for t in reversed(whole):
            self._move_bucket(t, limit)
        return items, used

    def _next_bucket(self, t: int) -> dict:
        if t + 1 == len(self._buckets):
            self._buckets.append({})
            self._bytes.append(0)
        return self._buckets[t + 1]

    def _move_bucket(self, t: int, limit: int) -> None:
        bucket = self._buckets[t]
        if t + 1 >= limit:
            for key in bucket:
                del self.counts[key]
        else:
            self._next_bucket(t).update(bucket)
            self._bytes[t + 1] += self._bytes[t]
            self.counts.update(dict.fromkeys(bucket, t + 1))
        bucket.clear()
        self._bytes[t] = 0

    def _move_keys(self, t: int, keys: list[Hashable], limit: int) -> None:
        bucket = self._buckets[t]
        for key in keys:
            entry = bucket.pop(key)
            self._bytes[t] -= entry[1]
            if t + 1 >= limit:
                del self.counts[key]
            else:
                self._next_bucket(t)[key] = entry
                self._bytes[t + 1] += entry[1]
                self.counts[key] = t + 1

    def _evict_most_sent(self) -> None:
        for t in range(len(self._buckets) - 1, -1, -1):
            if self._buckets[t]:
                self.discard(next(iter(self._buckets[t])))
                return
