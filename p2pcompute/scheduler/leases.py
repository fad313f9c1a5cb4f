"""An executing peer's leases: reservations, slots, heartbeats. A pure state machine, events and now in.

Theory of operation
-------------------
A coordinator's offer is a *reservation* (Sparrow's late binding): it waits
in a bounded queue (``max_queued``; beyond it the offer is declined at once,
and the driver answers the coordinator with a ``rejected`` failure). When a
slot is free the oldest live reservation is *accepted* (``Accept``: the
driver sends ``OfferAccepted``) and holds the slot until the coordinator
grants the lease (``Run``) or revokes it (the task went to another peer
first); an accept left unanswered for ``accept_timeout_s`` gives the slot
back. A grant for an accept no longer open here (given back, or this peer
restarted) is declined, so that the coordinator queues the task again at
once instead of waiting for the lease to lapse. A reservation whose offer
deadline passed is dropped. So a peer never
runs more tasks than its slots, and each task runs at the first reserved
peer with a free slot.

A granted lease heartbeats to its coordinator every ``heartbeat_s`` until it
ends (``Ended``, when the driver has sent the result or failure) or is
revoked (``Stop``: kill the run). A coordinator that dies takes its queued
reservations and pending accepts with it; running tasks go on, their results
go to whoever coordinates the job next (which revokes them if it re-offered).
Offers and grants from peers are checked: an unknown lease, an offer from a
peer for a lease id it already used, or a grant for an offer we did not
accept is refused (``Refused``) and counted.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass
from typing import Any

from .events import Refused, SetTimer


@dataclass(frozen=True)
class ExecutorConfig:
    slots: int = 1
    max_queued: int = 16            # reservations waiting for a slot
    heartbeat_s: float = 10.0       # a third of the coordinators' lease
    accept_timeout_s: float = 10.0  # an accept the coordinator does not answer gives the slot back


# --- events -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Offer:
    job_id: str
    task: str
    coordinator: Any
    lease_id: str
    deadline: float
    spec: Any = None                 # the TaskSpec (or whatever the driver needs to run it)


@dataclass(frozen=True, slots=True)
class Grant:
    job_id: str
    task: str
    coordinator: Any
    lease_id: str
    expires: float


@dataclass(frozen=True, slots=True)
class Revoked:
    job_id: str
    coordinator: Any
    lease_id: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Ended:
    """The run of this lease finished, and the driver reported it (result or failure): the slot is free."""

    job_id: str
    lease_id: str


@dataclass(frozen=True, slots=True)
class CoordinatorDied:
    peer: Any


@dataclass(frozen=True, slots=True)
class SetSlots:
    slots: int


@dataclass(frozen=True, slots=True)
class Wake:
    """Time passed."""


# --- commands -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Accept:
    job_id: str
    task: str
    coordinator: Any
    lease_id: str


@dataclass(frozen=True, slots=True)
class Decline:
    job_id: str
    task: str
    coordinator: Any
    lease_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Run:
    job_id: str
    task: str
    coordinator: Any
    lease_id: str
    spec: Any


@dataclass(frozen=True, slots=True)
class Stop:
    job_id: str
    task: str
    lease_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class SendHeartbeat:
    job_id: str
    task: str
    coordinator: Any
    lease_id: str


def _malformed(e: Any) -> str | None:
    """Why an event built from a coordinator's message cannot be looked at (None: it can)."""
    for name in ("job_id", "lease_id", "task"):
        v = getattr(e, name, "")
        if not isinstance(v, str) or len(v) > 128:
            return f"{name} {str(v)[:80]!r} is not a short string"
    for name in ("deadline", "expires"):
        v = getattr(e, name, 0.0)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
            return f"{name} {v!r} is not a time"
    try:
        hash(getattr(e, "coordinator", None))
    except TypeError:
        return "coordinator is not a peer id"
    return None


class _Lease:
    __slots__ = ("offer", "state", "since")

    def __init__(self, offer: Offer, now: float) -> None:
        self.offer = offer
        self.state = "queued"        # queued | accepting | running
        self.since = now


class ExecutorLeases:
    """One peer's view of the leases it holds. ``handle(event, now)`` -> commands."""

    def __init__(self, config: ExecutorConfig | None = None) -> None:
        self.config = config or ExecutorConfig()
        self.slots = self.config.slots
        self.stats: Counter = Counter()
        self._leases: dict[tuple[str, str], _Lease] = {}      # (job, lease) -> lease, in arrival order
        self._heap: list[tuple[float, int, str, tuple[str, str]]] = []   # (when, seq, kind, key)
        self._seq = 0
        self._timer: float | None = None

    def busy(self) -> int:
        return sum(1 for x in self._leases.values() if x.state != "queued")

    def free_slots(self) -> int:
        return max(0, self.slots - self.busy())

    def queued(self) -> int:
        return sum(1 for x in self._leases.values() if x.state == "queued")

    def running(self) -> list[tuple[str, str]]:
        return [k for k, x in self._leases.items() if x.state == "running"]

    def handle(self, event: Any, now: float) -> list:
        out: list = []
        problem = _malformed(event)
        if problem:
            self.stats["refused"] += 1
            out.append(Refused(getattr(event, "coordinator", None), problem))
        elif isinstance(event, Offer):
            self._on_offer(event, now, out)
        elif isinstance(event, Grant):
            x = self._leases.get((event.job_id, event.lease_id))
            if x is None:                     # we gave up the accept (timeout, restart): give the lease back
                self.stats["grants_given_back"] += 1
                out.append(Decline(event.job_id, event.task, event.coordinator, event.lease_id,
                                   "no accept of this lease is open here"))
            elif x.state != "accepting" or x.offer.coordinator != event.coordinator or x.offer.task != event.task:
                self.stats["refused"] += 1
                out.append(Refused(event.coordinator, f"grant of lease {event.lease_id!r} we did not accept"))
            else:
                x.state, x.since = "running", now
                self._push(now + self.config.heartbeat_s, "running", (event.job_id, event.lease_id))
                o = x.offer
                out.append(Run(o.job_id, o.task, o.coordinator, o.lease_id, o.spec))
        elif isinstance(event, Revoked):
            x = self._leases.get((event.job_id, event.lease_id))
            if x is None or x.offer.coordinator != event.coordinator:
                self.stats["stale_revokes"] += 1
            else:
                del self._leases[event.job_id, event.lease_id]
                if x.state == "running":
                    out.append(Stop(event.job_id, x.offer.task, event.lease_id, event.reason))
        elif isinstance(event, Ended):
            self._leases.pop((event.job_id, event.lease_id), None)
        elif isinstance(event, CoordinatorDied):
            for k, x in list(self._leases.items()):
                if x.offer.coordinator == event.peer and x.state != "running":
                    del self._leases[k]
        elif isinstance(event, SetSlots):
            self.slots = max(0, int(event.slots))
        elif not isinstance(event, Wake):
            raise TypeError(f"ExecutorLeases cannot handle {type(event).__name__}")
        self._expire(now, out)
        self._fill(now, out)
        if self._heap and self._heap[0][0] != self._timer:
            self._timer = self._heap[0][0]
            out.append(SetTimer(self._timer))
        return out

    def _on_offer(self, o: Offer, now: float, out: list) -> None:
        key = (o.job_id, o.lease_id)
        if key in self._leases:
            self.stats["refused"] += 1
            out.append(Refused(o.coordinator, f"offer of lease {o.lease_id!r} of job {o.job_id} again"))
        elif o.deadline <= now:
            self.stats["lapsed"] += 1
        elif self.queued() >= self.config.max_queued and not self.free_slots():
            self.stats["declined"] += 1
            out.append(Decline(o.job_id, o.task, o.coordinator, o.lease_id,
                               f"{self.config.max_queued} reservations queued, no free slot"))
        else:
            self._leases[key] = _Lease(o, now)
            self._push(o.deadline, "queued", key)

    def _fill(self, now: float, out: list) -> None:
        free = self.free_slots()
        for key, x in self._leases.items():
            if free <= 0:
                break
            if x.state == "queued":
                x.state, x.since = "accepting", now
                free -= 1
                self._push(now + self.config.accept_timeout_s, "accepting", key)
                o = x.offer
                out.append(Accept(o.job_id, o.task, o.coordinator, o.lease_id))

    def _push(self, when: float, kind: str, key: tuple[str, str]) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, kind, key))

    def _expire(self, now: float, out: list) -> None:
        while self._heap and self._heap[0][0] <= now:
            _, _, kind, key = heapq.heappop(self._heap)
            x = self._leases.get(key)
            if x is None or x.state != kind:
                continue
            if x.state == "queued":
                del self._leases[key]
                self.stats["lapsed"] += 1
            elif x.state == "accepting":
                del self._leases[key]
                self.stats["accept_timeouts"] += 1
            else:  # running: heartbeat
                o = x.offer
                out.append(SendHeartbeat(o.job_id, o.task, o.coordinator, o.lease_id))
                self._push(now + self.config.heartbeat_s, "running", key)
