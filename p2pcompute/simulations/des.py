"""A plain discrete-event engine: one heap, a virtual clock, a seeded random generator.

Theory of operation
-------------------
Everything that will happen is an entry ``(when, seq, fn, a, b)`` on one
heap; ``run_until(t)`` pops entries in time order (``seq`` breaks ties in
scheduling order, so a run is a pure function of the seed), sets ``now`` to
the entry's time and calls ``fn(a, b)``. Callbacks schedule further entries
with ``at`` / ``after``. There is no trio, no task and no timer object per
peer: a simulation of a thousand peers is one loop over one heap, which is
what makes a virtual hour affordable (DESIGN.md, "How a simulation driver
costs").

Cancellation is lazy: an entry cannot be removed, so whoever schedules a
timer remembers its current deadline and ignores entries that no longer match
(see ``cluster.py``). ``quantum`` (seconds, 0: off) rounds the times passed
to ``timer`` up to a grid so that timers of many peers share instants; message
deliveries use ``at`` and are never rounded.

All randomness of a simulation should come from ``rng`` (or generators seeded
from it), never from the global ``random`` module.

Garbage collection. A simulation holds millions of long-lived objects (a
member table per peer: N² entries), and CPython's cyclic collector rescans
them at every full collection: at 1000 peers that was about an eighth of the
CPU time. ``quiet_gc`` (a context manager for a run) freezes what exists into
the permanent generation and raises the young threshold; ``settle_gc`` (call
it between steps) freezes what survived the last step; ``paused_gc`` turns
collection off for a bulk build (a converged network's tables). Reference
counting still frees everything as before; only cyclic garbage waits until
the run ends. None of it changes a result.
"""

from __future__ import annotations

import contextlib
import gc
import heapq
import math
import random
from collections.abc import Callable, Iterator
from typing import Any

Callback = Callable[[Any, Any], None]


class Engine:
    """The event loop of one simulation. ``now`` is virtual time in seconds."""

    __slots__ = ("now", "rng", "quantum", "events", "_heap", "_seq")

    def __init__(self, seed: int, *, quantum: float = 0.0) -> None:
        if quantum < 0:
            raise ValueError("quantum must be >= 0")
        self.now = 0.0
        self.rng = random.Random(seed)
        self.quantum = quantum
        self.events = 0  # entries executed so far
        self._heap: list[tuple] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._heap)

    def at(self, when: float, fn: Callback, a: Any = None, b: Any = None) -> None:
        """Call ``fn(a, b)`` at virtual time ``when`` (not before ``now``)."""
        if when < self.now:
            when = self.now
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, fn, a, b))

    def after(self, delay: float, fn: Callback, a: Any = None, b: Any = None) -> None:
        self.at(self.now + delay, fn, a, b)

    def timer(self, when: float, fn: Callback, a: Any = None, b: Any = None) -> float:
        """Like ``at`` with ``when`` rounded up to the quantum; returns the time used."""
        q = self.quantum
        if q:
            when = math.ceil(when / q - 1e-9) * q
        self.at(when, fn, a, b)
        return max(when, self.now)

    def next_time(self) -> float:
        return self._heap[0][0] if self._heap else math.inf

    def run_until(self, t_end: float) -> None:
        """Execute every entry due at or before ``t_end``; leave ``now`` at ``t_end``."""
        heap = self._heap
        pop = heapq.heappop
        count = 0
        while heap and heap[0][0] <= t_end:
            when, _, fn, a, b = pop(heap)
            self.now = when
            fn(a, b)
            count += 1
        self.events += count
        if t_end > self.now:
            self.now = t_end


@contextlib.contextmanager
def quiet_gc(young: int = 20_000) -> Iterator[None]:
    """For a whole run: long-lived objects out of the collector's way; thresholds restored after."""
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(young, thresholds[0]), thresholds[1], max(1000, thresholds[2]))
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def settle_gc() -> None:
    """Between steps of a run inside ``quiet_gc``: what survived so far is long-lived."""
    gc.freeze()


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic collection while a bulk of long-lived objects is built (the previous state after)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
