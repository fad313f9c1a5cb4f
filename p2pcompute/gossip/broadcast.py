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
scan. The queue holds at most ``max_items``; beyond that the most-sent item
is dropped.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any


class BroadcastQueue:
    """Items keyed by subject, sent at most ``limit`` times each, least-sent first."""

    def __init__(self, max_items: int = 8192) -> None:
        self._buckets: list[dict[Hashable, tuple[Any, int]]] = [{}]
        self._sent: dict[Hashable, int] = {}  # key -> transmits so far (its bucket)
        self._max_items = max_items

    def __len__(self) -> int:
        return len(self._sent)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._sent

    def transmits(self, key: Hashable) -> int | None:
        """How many times the item under ``key`` was sent, or None when not queued."""
        return self._sent.get(key)

    def push(self, key: Hashable, item: Any, size: int, keep_count: bool = False) -> None:
        """Queue ``item`` (about ``size`` bytes on the wire), replacing any item under ``key``.

        A replacement starts afresh, unless ``keep_count``: then an item still
        queued keeps its transmit count and place (a refinement of news already
        on its way, such as one more confirmation of a suspicion).
        """
        t = self._sent.get(key)
        if keep_count and t is not None:
            self._buckets[t][key] = (item, size)
            return
        self.discard(key)
        if len(self._sent) >= self._max_items:
            self._evict_most_sent()
        self._buckets[0][key] = (item, size)
        self._sent[key] = 0

    def discard(self, key: Hashable) -> None:
        t = self._sent.pop(key, None)
        if t is not None:
            del self._buckets[t][key]

    def has_fresh(self, below: int) -> bool:
        """True when some item was sent fewer than ``below`` times."""
        buckets = self._buckets
        if below >= len(buckets) or not self._sent:
            return bool(self._sent)
        return any(buckets[t] for t in range(below))

    def take(self, budget: int, limit: int, max_items: int) -> tuple[list[Any], int]:
        """Draw items for one message: at most ``max_items``, about ``budget`` bytes.

        Returns the items and their total size. The first item is always
        taken, even when larger than ``budget``, so a big item cannot block
        the queue. Each taken item counts one transmit.
        """
        chosen: list[tuple[Hashable, int]] = []
        used = 0
        left = len(self._sent)
        if not left:
            return [], 0
        for t, bucket in enumerate(self._buckets):
            if not bucket:
                continue
            if len(chosen) == left:
                break
            for key, (_, size) in bucket.items():
                if chosen and (used + size > budget or len(chosen) >= max_items):
                    return self._advance(chosen, limit), used
                chosen.append((key, t))
                used += size
        return self._advance(chosen, limit), used

    def _advance(self, chosen: list[tuple[Hashable, int]], limit: int) -> list[Any]:
        items = []
        buckets = self._buckets
        for key, t in chosen:
            entry = buckets[t].pop(key)
            items.append(entry[0])
            if t + 1 >= limit:
                del self._sent[key]
                continue
            if t + 1 == len(buckets):
                buckets.append({})
            buckets[t + 1][key] = entry
            self._sent[key] = t + 1
        return items

    def _evict_most_sent(self) -> None:
        for bucket in reversed(self._buckets):
            if bucket:
                key = next(iter(bucket))
                del bucket[key]
                del self._sent[key]
                return
