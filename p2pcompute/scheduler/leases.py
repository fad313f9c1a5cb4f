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

*Fencing.* A lease id begins with its coordinator's epoch
(``"<epoch>.<nonce>.<n>"``, job_state.py). Per job this peer keeps the
highest epoch it has seen (bounded: ``MAX_JOBS_SEEN`` jobs, the oldest
forgotten). An offer or grant of an older epoch comes from a coordinator
that was replaced (it was partitioned, or declared dead while alive): it is
refused with a reason that starts with ``fenced:`` (a ``rejected`` offer
for the old coordinator: it steps down only when a replica says so, as one
hostile peer could feed this peer a false epoch). When a newer epoch appears, the older
epoch's reservations and pending accepts of that job go. A revoke is taken
from the coordinator that offered the lease, or from the job's successor:
a revoke whose ``epoch`` is above the lease's (the new coordinator stops
the runs of the old one, which it re-offered).
"""

from __future__ import annotations

import heapq
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any

from .events import Refused, SetTimer

MAX_JOBS_SEEN = 4096          # jobs whose highest epoch is remembered for fencing


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
    epoch: int = -1                  # the revoking coordinator's epoch (-1: not said)


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
    if type(getattr(e, "epoch", 0)) is not int:
        return "epoch is not an integer"
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
        self._epochs: OrderedDict[str, int] = OrderedDict()   # job -> the highest epoch seen (fencing)

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
        elif isinstance(event, (Offer, Grant)) and self._fenced(event, out):
            pass
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
            if x is None or (x.offer.coordinator != event.coordinator
                             and not event.epoch > lease_epoch(event.lease_id, event.epoch)):
                self.stats["stale_revokes"] += 1
            else:
                self._seen(event.job_id, event.epoch)     # only a revoke of a lease held here says so
                if x.offer.coordinator != event.coordinator:
                    self.stats["successor_revokes"] += 1
                self._leases.pop((event.job_id, event.lease_id), None)   # _seen may have fenced it out already
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

    def _fenced(self, e: Offer | Grant, out: list) -> bool:
        """An offer or grant of an older epoch than this job's newest seen here: refused (True)."""
        epoch = lease_epoch(e.lease_id)
        known = self._epochs.get(e.job_id, -1)
        if 0 <= epoch < known:               # a lease id of another form says nothing of epochs
            self.stats["fenced"] += 1
            out.append(Refused(e.coordinator, f"fenced: job {e.job_id} is at epoch {known} here, "
                                              f"lease {e.lease_id!r} is of epoch {epoch}"))
            return True
        self._seen(e.job_id, epoch)
        return False

    def _seen(self, job_id: str, epoch: int) -> None:
        """A coordinator of ``job_id`` at ``epoch``: a newer one drops the older epochs' reservations."""
        known = self._epochs.get(job_id, -1)
        if epoch <= known:
            return
        self._epochs[job_id] = epoch
        self._epochs.move_to_end(job_id)
        while len(self._epochs) > MAX_JOBS_SEEN:
            self._epochs.popitem(last=False)
        if known < 0:
            return
        for k, x in list(self._leases.items()):
            if k[0] == job_id and x.state != "running" and lease_epoch(k[1]) < epoch:
                del self._leases[k]
                self.stats["fenced"] += 1

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


def lease_epoch(lease_id: str, default: int = -1) -> int:
    """The coordinator epoch a lease id begins with (``"<epoch>.<nonce>.<n>"``); ``default`` if none."""
    head = lease_id.split(".", 1)[0]
    return int(head) if head.isdigit() and len(head) <= 9 else default
