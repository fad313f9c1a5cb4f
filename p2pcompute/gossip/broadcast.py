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

Transmit counts are kept as an offset from the queue's *age*: an item's count
is ``age - base[key]``. The usual draw takes everything queued (a message
has room for all the news): then every item moves up one bucket at once,
which is one ``age`` increment and one empty bucket inserted at the front,
with no per-item work beyond listing the items; the bucket that reaches
``limit`` is dropped whole.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any


class BroadcastQueue:
    """Items keyed by subject, sent at most ``limit`` times each, least-sent first."""

    def __init__(self, max_items: int = 8192) -> None:
        self._buckets: list[dict[Hashable, tuple[Any, int]]] = [{}]  # by transmits: key -> (item, size)
        self._bytes: list[int] = [0]  # total size per bucket
        self._total = 0  # bytes queued
        self._age = 0  # draws that took everything so far
        self.queued: dict[Hashable, int] = {}  # key -> base (transmits = age - base); read-only outside
        self._max_items = max_items
        self._all: tuple | None = None  # every item, least-sent first, while no push or partial draw changed them

    def __len__(self) -> int:
        return len(self.queued)

    def __contains__(self, key: Hashable) -> bool:
        return key in self.queued

    def transmits(self, key: Hashable) -> int | None:
        """How many times the item under ``key`` was sent, or None when not queued."""
        base = self.queued.get(key)
        return None if base is None else self._age - base

    def push(self, key: Hashable, item: Any, size: int, refine: int | None = None) -> None:
        """Queue ``item`` (about ``size`` bytes on the wire), replacing any item under ``key``.

        A replacement starts afresh (never sent), unless ``refine`` is given:
        then an item still queued keeps its transmit count and place, and a new
        one starts as if already sent ``refine`` times (a refinement of news
        already on its way, such as one more confirmation of a suspicion).
        """
        self._all = None
        t = self.transmits(key)
        if refine is not None and t is not None:
            delta = size - self._buckets[t][key][1]
            self._bytes[t] += delta
            self._total += delta
            self._buckets[t][key] = (item, size)
            return
        self.discard(key)
        if len(self.queued) >= self._max_items:
            self._evict_most_sent()
        t = 0 if refine is None else refine
        while t >= len(self._buckets):
            self._buckets.append({})
            self._bytes.append(0)
        self._buckets[t][key] = (item, size)
        self._bytes[t] += size
        self._total += size
        self.queued[key] = self._age - t

    def discard(self, key: Hashable) -> None:
        base = self.queued.pop(key, None)
        if base is not None:
            self._all = None
            t = self._age - base
            size = self._buckets[t].pop(key)[1]
            self._bytes[t] -= size
            self._total -= size

    def has_fresh(self, below: int) -> bool:
        """True when some item was sent fewer than ``below`` times."""
        buckets = self._buckets
        if below >= len(buckets) or not self.queued:
            return bool(self.queued)
        return any(buckets[:below])

    def take(self, budget: int, limit: int, max_items: int) -> tuple[Sequence[Any], int]:
        """Draw items for one message: at most ``max_items``, about ``budget`` bytes.

        Returns the items and their total size. The first item is always
        taken, even when larger than ``budget``, so a big item cannot block
        the queue. Each taken item counts one transmit.
        """
        if not self.queued:
            return [], 0
        if self._total <= budget and len(self.queued) <= max_items:
            return self._take_all(limit)
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
            self._move_keys(t, list(self._buckets[t]), limit)
        return items, used

    def _take_all(self, limit: int) -> tuple[tuple[Any, ...], int]:
        buckets = self._buckets
        items = self._all
        if items is None:
            items = tuple([entry[0] for bucket in buckets if bucket for entry in bucket.values()])
        used = self._total
        buckets.insert(0, {})  # everything moves up one bucket: sent once more
        self._bytes.insert(0, 0)
        self._age += 1
        finished = 0
        while len(buckets) > limit:  # sent ``limit`` times (or more, if the limit shrank): done
            done = buckets.pop()
            self._total -= self._bytes.pop()
            finished += len(done)
            for key in done:
                del self.queued[key]
        # the order is unchanged by a draw of everything; finished items were the most sent, last
        self._all = items[: len(items) - finished] if finished else items
        if not buckets:
            buckets.append({})
            self._bytes.append(0)
        return items, used

    def _move_keys(self, t: int, keys: list[Hashable], limit: int) -> None:
        self._all = None
        bucket = self._buckets[t]
        queued = self.queued
        if t + 1 >= limit:
            for key in keys:
                del queued[key]
                size = bucket.pop(key)[1]
                self._bytes[t] -= size
                self._total -= size
            return
        if t + 1 == len(self._buckets):
            self._buckets.append({})
            self._bytes.append(0)
        up = self._buckets[t + 1]
        for key in keys:
            entry = bucket.pop(key)
            up[key] = entry
            self._bytes[t] -= entry[1]
            self._bytes[t + 1] += entry[1]
            queued[key] -= 1

    def _evict_most_sent(self) -> None:
        for t in range(len(self._buckets) - 1, -1, -1):
            if self._buckets[t]:
                self.discard(next(iter(self._buckets[t])))
                return
