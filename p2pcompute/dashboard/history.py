"""What the dashboard remembers between requests: members by state over the last hour, and rates (pure).

Theory of operation
-------------------
``MemberHistory`` keeps one sample of the member counts by state (alive,
suspect, dead, left) every ``step`` seconds for ``span`` seconds: a ring of
at most ``span / step`` points (360 for an hour at 10 s), so its size does not
grow with uptime or with the network. ``add(now, counts)`` is called by the
service's sampler; a sample in the same ``step``-long slot as the last one
replaces it (the newest view of a slot wins), an older one is ignored.

``Rates`` turns monotone counters (messages by type, bytes) into per-second
rates between the last two samples. A counter that went down (a restart of
what feeds it) restarts from its new value rather than showing a negative
rate. Both take ``now`` from the caller and do no I/O.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

STATES = ("alive", "suspect", "dead", "left")


class MemberHistory:
    def __init__(self, span: float = 3600.0, step: float = 10.0) -> None:
        if not (0 < step <= span):
            raise ValueError("need 0 < step <= span")
        self.span, self.step = span, step
        self._points: deque[tuple[float, tuple[int, ...]]] = deque(maxlen=int(span // step) + 1)

    def add(self, now: float, counts: Mapping[str, int]) -> None:
        point = (now, tuple(int(counts.get(s, 0)) for s in STATES))
        if self._points and now < self._points[-1][0]:
            return
        if self._points and now // self.step == self._points[-1][0] // self.step:
            self._points[-1] = point
        else:
            self._points.append(point)
        while self._points and self._points[0][0] < now - self.span:
            self._points.popleft()

    def series(self, now: float) -> dict:
        """``{"states": [...], "t": [seconds ago...], "counts": [[alive, suspect, dead, left], ...]}``, oldest first."""
        points = [(t, c) for t, c in self._points if now - self.span <= t <= now]
        return {"states": list(STATES), "t": [round(now - t, 1) for t, _ in points],
                "counts": [list(c) for _, c in points]}

    def __len__(self) -> int:
        return len(self._points)


class Rates:
    def __init__(self) -> None:
        self._last: tuple[float, dict[str, float]] | None = None
        self.rates: dict[str, float] = {}

    def add(self, now: float, counters: Mapping[str, float]) -> dict[str, float]:
        """The rate per second of each counter since the previous call (none on the first)."""
        if self._last is not None and now > self._last[0]:
            then, old = self._last
            dt = now - then
            self.rates = {k: max(0.0, v - old.get(k, 0.0)) / dt if v >= old.get(k, 0.0) else 0.0
                          for k, v in counters.items()}
        if self._last is None or now > self._last[0]:
            self._last = (now, dict(counters))
        return self.rates
