"""What goes into the scheduler's state machines (events, config) and what comes out (commands).

The coordinator's ``JobState`` (job_state.py) and the executor's
``ExecutorLeases`` (leases.py) each take ``handle(event, now)`` and return a
list of commands, as membership does. Peers are whatever hashable the driver
uses (``PeerId`` on the network, short strings in tests). Lease ids are
strings the coordinator makes (``"<epoch>.<n>"``), unique within a job across
coordinator fail-overs.

One task's round trip, coordinator side:

    JobState                       driver / Placement            executor
    Dispatch(task, wanted, ...) ->  Placement.place(...)
                               <-  Placed(task, peers)
    SendOffer(peer, lease) ...  ->  (one offer per reserved peer)  reservation queued
                               <-  OfferAccepted(task, peer, lease) (first free slot)
    GrantLease(peer, lease, exp)->                                 runs the task
    Revoke(other offers)        ->                                 drops its reservation
                               <-  Heartbeat(task, peer, lease)    every lease/3
                               <-  ResultReady(...) / TaskFailed(...)
    FetchResult(task, cids)     ->  bitswap pull + pin
                               <-  Fetched(task, lease) / FetchFailed(...)
    Replicate(version), Report(progress | done | failed | cancelled)

(The issue's brief named the accept ``LeaseGranted``: here the executor's
accept is ``OfferAccepted`` and the coordinator's answer ``GrantLease``, so
that the name says who decides. Late binding: of a task's offers, the first
accepted wins; the others are revoked.)

Timers are commands too: ``SetTimer(at)`` asks the driver to feed ``Tick``
at ``at`` (a new ``SetTimer`` replaces the old; an early Tick is harmless).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

Peer = Hashable

# failure kinds an executor reports (TaskFailed.kind)
CRASH = "crash"                          # the executing process died
TIMEOUT = "timeout"                      # the attempt ran past requirements.timeout_s
RESOURCE_EXCEEDED = "resource_exceeded"  # memory or other limit hit
FAILED = "failed"                        # the task's own program failed (exception, bad exit)
REJECTED = "rejected"                    # the peer refused the offer: not an attempt, never charged
INPUT_NOT_FOUND = "input_not_found"      # an input CID nobody served within a bounded search
FAILURE_KINDS = frozenset({CRASH, TIMEOUT, RESOURCE_EXCEEDED, FAILED, REJECTED, INPUT_NOT_FOUND})
# kinds the coordinator itself records on an attempt
EXPIRED = "expired"                      # no heartbeat within the lease
DIED = "died"                            # membership declared the peer dead
FETCH = "fetch"                          # the result's outputs could not be pulled
REVOKED = "revoked"                      # cancelled, or taken over by a new coordinator (not charged)


# --- events into JobState ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed (``now`` is ``handle``'s argument): leases and offers expire, backoffs end."""


@dataclass(frozen=True, slots=True)
class Placed:
    """Placement's answer to a ``Dispatch``: the peers to offer ``task`` to (empty: none now, and why).
    ``missing``: an input of the task nobody holds (the DHT asked, its root block sought): it fails now."""

    task: str
    peers: tuple[Peer, ...]
    reason: str = ""
    missing: str = ""


@dataclass(frozen=True, slots=True)
class OfferAccepted:
    """``peer`` has a free slot and asks for the task of offer ``lease_id`` (late binding)."""

    task: str
    peer: Peer
    lease_id: str


@dataclass(frozen=True, slots=True)
class Heartbeat:
    task: str
    peer: Peer
    lease_id: str


@dataclass(frozen=True, slots=True)
class ResultReady:
    """A finished attempt: ``outputs`` name -> CID held by the executor; ``inline`` name -> small scalar."""

    task: str
    peer: Peer
    lease_id: str
    outputs: dict[str, str] = field(default_factory=dict)
    inline: dict[str, Any] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)   # output name -> bytes, when the executor knows
    log: str = ""                  # the attempt's stderr as a CID held by the executor ("": none), and its size
    log_bytes: int = 0


@dataclass(frozen=True, slots=True)
class TaskFailed:
    """An attempt (or, with kind ``rejected``, an offer) failed; ``kind`` one of ``FAILURE_KINDS``."""

    task: str
    peer: Peer
    lease_id: str
    kind: str
    message: str = ""
    log: str = ""                  # as ResultReady's
    log_bytes: int = 0


@dataclass(frozen=True, slots=True)
class Fetched:
    """The outputs of the accepted result of ``task`` are pulled and pinned here."""

    task: str
    lease_id: str


@dataclass(frozen=True, slots=True)
class FetchFailed:
    task: str
    lease_id: str
    message: str = ""


@dataclass(frozen=True, slots=True)
class MemberDied:
    peer: Peer


@dataclass(frozen=True, slots=True)
class Room:
    """Placement has room again for about ``tasks`` tasks (offers were answered, reservations freed up):
    that many of the tasks that found no peer are placed again now, oldest first."""

    tasks: int


@dataclass(frozen=True, slots=True)
class ResultLost:
    """A done task's outputs can be found nowhere (after a takeover: only the dead coordinator had fetched
    them, and their executor is gone too): the task runs again, and what reads them waits for it."""

    task: str
    message: str = ""


@dataclass(frozen=True, slots=True)
class Cancel:
    reason: str = "cancelled by the user"


# --- commands out of JobState ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Dispatch:
    """Ask Placement for ``wanted`` peers for ``task``; answer with ``Placed``.

    ``inputs``: (name, cid, size or None) with task outputs already resolved to CIDs;
    ``avoid``: peers that failed this task (placement uses them only if nobody else can).
    """

    job_id: str
    task: str
    wanted: int
    requirements: Any                      # model.Requirements
    inputs: tuple[tuple[str, str, int | None], ...] = ()
    avoid: frozenset = frozenset()


@dataclass(frozen=True, slots=True)
class SendOffer:
    """Reserve a slot at ``peer`` for ``task``; the offer lapses at ``deadline``."""

    job_id: str
    task: str
    peer: Peer
    lease_id: str
    deadline: float


@dataclass(frozen=True, slots=True)
class GrantLease:
    """``peer`` won ``task``: run it, heartbeat before ``expires`` (each heartbeat extends the lease)."""

    job_id: str
    task: str
    peer: Peer
    lease_id: str
    expires: float


@dataclass(frozen=True, slots=True)
class Revoke:
    """Withdraw an offer or stop a running attempt at ``peer``."""

    job_id: str
    task: str
    peer: Peer
    lease_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class FetchResult:
    """Pull and pin ``cids`` (output name -> CID) from ``peer`` (or any provider); answer Fetched/FetchFailed."""

    job_id: str
    task: str
    peer: Peer
    lease_id: str
    cids: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Replicate:
    """The job record changed: send ``to_record()`` (at least this version) to the replicas.

    A driver carries out a ``Replicate`` before any later ``Report`` of the same ``handle`` call:
    a result counts as accepted once a record saying so is replicated (see job_state.py).
    """

    job_id: str
    version: int


@dataclass(frozen=True, slots=True)
class Progress:
    done: int
    running: int
    queued: int
    failed: int
    skipped: int
    cancelled: int
    total: int


@dataclass(frozen=True, slots=True)
class Report:
    """For the submitter: ``kind`` is ``progress``, ``done``, ``failed`` or ``cancelled``."""

    job_id: str
    kind: str
    progress: Progress
    reason: str = ""
    outputs: tuple[tuple[str, str, str | None], ...] = ()   # (task, output, cid) of the job's result


@dataclass(frozen=True, slots=True)
class Refused:
    """A peer's message was refused (unknown task, wrong peer for a lease, malformed result): log it."""

    peer: Peer
    reason: str


@dataclass(frozen=True, slots=True)
class SetTimer:
    at: float


Event = (Tick | Placed | OfferAccepted | Heartbeat | ResultReady | TaskFailed | Fetched | FetchFailed | MemberDied
         | Room | ResultLost | Cancel)
Command = Dispatch | SendOffer | GrantLease | Revoke | FetchResult | Replicate | Report | Refused | SetTimer


@dataclass(frozen=True)
class JobConfig:
    """Tunables of one job's coordinator."""

    lease_s: float = 30.0              # a lease lapses this long after its grant or last heartbeat
    offer_timeout_s: float = 300.0     # an unanswered offer (a reservation in a busy peer's queue) lapses
    probes: int = 2                    # d: peers each task is offered to (Sparrow's d)
    max_in_flight: int = 1000          # tasks being placed or offered at once (bounds queued offers)
    placement_retry_s: float = 1.0     # no peer free now: ask placement again after this (unless Room comes first)
    placement_timeout_s: float = 600.0  # no peer could take the task for this long: it fails with the reason
    max_declines: int = 1000           # offers refused or lapsed for one task before it fails
    max_lost: int = 10                 # runs of one task lost with their executor (died) before it fails
    story_len: int = 64                # story entries kept per task (oldest dropped)
    attempts_kept: int = 128           # attempts kept per task in the record (oldest dropped, counted)
    max_outputs: int = 1024            # outputs (and inline values) per result
    max_text: int = 4096               # failure messages and inline strings are cut to this
