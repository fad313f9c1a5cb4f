"""The scheduler's wire messages (codes 400–411 and 415–419 of the registry in node/messages.py; append-only).

Every one is a request answered by ``SchedAck`` (ok, or refused with a reason),
except ``TaskHeartbeat`` (one-way) and the questions with answers of their
own (``LineQuery``/``LineAnswer``, ``JobQuery``/``JobInfo``, ``JobList``/``JobListing``). Times cross the wire as durations
(``valid_s``, ``expires_s``): peers' clocks are not compared. A message is
checked when it is decoded (``__post_init__``: lengths, counts, finite
numbers); a bad one never reaches the service (the transport answers the
sender nothing: the frame is dropped and counted, as every undecodable frame).
Payloads and records are CBOR bytes, bounded by the transport's message
limit (1 MiB; a larger full record travels on a stream, replication.py) and
by the plan's own bounds (``model.MAX_PAYLOAD_BYTES``), checked again where
they are decoded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..node.wire import message
from .lines import valid_line
from .model import MAX_INPUTS_PER_TASK
from .task_logs import MAX_LOG_BYTES

MAX_ID = 128                 # a job id, task id or lease id
MAX_REASON = 4096
MAX_INPUTS = MAX_INPUTS_PER_TASK   # (name, CID) pairs of one grant: the task's inputs
MAX_OUTPUTS = 1024
MAX_CID = 256
MAX_REPLICAS = 8
MAX_CARRIED = 256 << 10      # bytes of blocks a grant or a result carries inline (small inputs and outputs)
MAX_CARRIED_BLOCKS = 256


def _carried(blocks: tuple[tuple[str, bytes], ...]) -> None:
    """Blocks carried inline: (CID, bytes) pairs, at most MAX_CARRIED bytes (each checked against its
    CID where it is stored: a block that does not hash to its CID is dropped there)."""
    if len(blocks) > MAX_CARRIED_BLOCKS:
        raise ValueError(f"more than {MAX_CARRIED_BLOCKS} blocks carried")
    total = 0
    for cid, data in blocks:
        if type(cid) is not str or not 0 < len(cid) <= MAX_CID or type(data) is not bytes:
            raise ValueError("a carried block is not a (CID, bytes) pair")
        total += len(data)
    if total > MAX_CARRIED:
        raise ValueError(f"blocks carried over {MAX_CARRIED} bytes")


def _ids(**values: str) -> None:
    for name, v in values.items():
        if type(v) is not str or not 0 < len(v) <= MAX_ID:
            raise ValueError(f"{name} must be 1 to {MAX_ID} characters")


def _log(cid: str, size: int) -> None:
    if type(cid) is not str or len(cid) > MAX_CID or type(size) is not int or not 0 <= size <= MAX_LOG_BYTES:
        raise ValueError(f"log is not a CID and a size of at most {MAX_LOG_BYTES} bytes")


def _seconds(name: str, v: float) -> None:
    if not (math.isfinite(v) and 0 <= v <= 30 * 86400):
        raise ValueError(f"{name} {v!r} is not a duration of at most 30 days")


@message(400)
@dataclass(frozen=True)
class TaskOffer:
    """Coordinator -> executor: reserve a slot for ``task`` (Sparrow's late binding); lapses in ``valid_s``."""

    job_id: str
    task: str
    lease_id: str
    valid_s: float

    def __post_init__(self) -> None:
        _ids(job_id=self.job_id, task=self.task, lease_id=self.lease_id)
        _seconds("valid_s", self.valid_s)


@message(401)
@dataclass(frozen=True)
class TaskAccept:
    """Executor -> coordinator: a slot is free, the task of offer ``lease_id`` may come."""

    job_id: str
    task: str
    lease_id: str

    def __post_init__(self) -> None:
        _ids(job_id=self.job_id, task=self.task, lease_id=self.lease_id)


@message(402)
@dataclass(frozen=True)
class TaskGrant:
    """Coordinator -> executor: run it. ``payload``: ``plan.full_payload``; ``inputs``: (name, CID) pairs;
    ``blocks``: the blocks of small inputs the coordinator holds, carried inline (no bitswap round trip)."""

    job_id: str
    task: str
    lease_id: str
    expires_s: float
    payload: bytes
    inputs: tuple[tuple[str, str], ...] = ()
    blocks: tuple[tuple[str, bytes], ...] = ()

    def __post_init__(self) -> None:
        _ids(job_id=self.job_id, task=self.task, lease_id=self.lease_id)
        _seconds("expires_s", self.expires_s)
        _carried(self.blocks)
        if len(self.inputs) > MAX_INPUTS:
            raise ValueError(f"more than {MAX_INPUTS} inputs")
        for name, cid in self.inputs:
            if not (0 < len(name) <= MAX_ID and 0 < len(cid) <= MAX_CID):
                raise ValueError("an input is not a (name, CID) pair of short strings")


@message(403)
@dataclass(frozen=True)
class TaskRevoke:
    """Coordinator -> executor: drop the offer or stop the run of ``lease_id``. ``epoch``: the revoking
    coordinator's (a job's new coordinator revokes its predecessor's leases: leases.py; -1: not said)."""

    job_id: str
    task: str
    lease_id: str
    reason: str = ""
    epoch: int = -1

    def __post_init__(self) -> None:
        _ids(job_id=self.job_id, task=self.task, lease_id=self.lease_id)
        if len(self.reason) > MAX_REASON:
            raise ValueError(f"reason over {MAX_REASON} characters")
        if type(self.epoch) is not int or not -1 <= self.epoch < 1 << 31:
            raise ValueError("epoch is not a small integer")


@message(404)
@dataclass(frozen=True)
class TaskHeartbeat:
    job_id: str
    task: str
    lease_id: str

    def __post_init__(self) -> None:
        _ids(job_id=self.job_id, task=self.task, lease_id=self.lease_id)


@message(405)
@dataclass(frozen=True)
class TaskDone:
    """Executor -> coordinator: outputs as CIDs (pinned at the executor), small scalars inline, and the
    blocks of small outputs carried inline (``blocks``: the coordinator stores those that hash to their CID)."""

    job_id: str
    task: str
    lease_id: str
    outputs: dict[str, str] = field(default_factory=dict)
    inline: dict[str, Any] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    log: str = ""                  # the run's stderr: a CID pinned at the executor ("" when none; task_logs.py)
    log_bytes: int = 0
    blocks: tuple[tuple[str, bytes], ...] = ()
    claim: bytes = b""             # the executor's signed ResultClaim (verification/signed.py, code 420)

    def __post_init__(self) -> None:
        _ids(job_id=self.job_id, task=self.task, lease_id=self.lease_id)
        _carried(self.blocks)
        if type(self.claim) is not bytes or len(self.claim) > 1024:
            raise ValueError("a result claim is bytes of at most 1024")
        for what, d in (("outputs", self.outputs), ("inline", self.inline), ("sizes", self.sizes)):
            if len(d) > MAX_OUTPUTS:
                raise ValueError(f"more than {MAX_OUTPUTS} {what}")
        _log(self.log, self.log_bytes)
        # the values' kinds are job_state's check (task_run.check_result): refused there with the reason


@message(406)
@dataclass(frozen=True)
class TaskFailure:
    """Executor -> coordinator: the attempt failed (or, kind ``rejected``, the offer or grant is refused)."""

    job_id: str
    task: str
    lease_id: str
    kind: str
    message: str = ""
    log: str = ""                  # as TaskDone's
    log_bytes: int = 0

    def __post_init__(self) -> None:
        _ids(job_id=self.job_id, task=self.task, lease_id=self.lease_id)
        if len(self.kind) > 32 or len(self.message) > MAX_REASON:
            raise ValueError("kind or message too long")
        _log(self.log, self.log_bytes)


@message(407)
@dataclass(frozen=True)
class JobRecordFull:
    """Coordinator -> replica: the whole job record (CBOR of ``JobState.to_record``) and the replica set."""

    job_id: str
    record: bytes
    replicas: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _ids(job_id=self.job_id)
        if len(self.replicas) > MAX_REPLICAS or any(len(r) > 128 for r in self.replicas):
            raise ValueError(f"more than {MAX_REPLICAS} replicas")


@message(408)
@dataclass(frozen=True)
class JobRecordDelta:
    """Coordinator -> replica: ``JobState.delta`` in CBOR; a replica that misses a version answers ``gap``."""

    job_id: str
    delta: bytes

    def __post_init__(self) -> None:
        _ids(job_id=self.job_id)


@message(409)
@dataclass(frozen=True)
class SchedAck:
    ok: bool
    reason: str = ""

    def __post_init__(self) -> None:
        if len(self.reason) > MAX_REASON:
            raise ValueError(f"reason over {MAX_REASON} characters")


@message(410)
@dataclass(frozen=True)
class LineQuery:
    """A replica about to take ``job_id`` over -> the record's other live holders: the newest line of the job
    you know (a record held, a line dropped and fenced, the job coordinated there)? Answered by ``LineAnswer``
    (lines.py, replication.py)."""

    job_id: str

    def __post_init__(self) -> None:
        _ids(job_id=self.job_id)


@message(411)
@dataclass(frozen=True)
class LineAnswer:
    """The answer to ``LineQuery``: the newest line (``epoch``, ``nonce``) of ``job_id`` known; -1, -1: none."""

    job_id: str
    epoch: int = -1
    nonce: int = -1

    def __post_init__(self) -> None:
        _ids(job_id=self.job_id)
        if not valid_line((self.epoch, self.nonce)):
            raise ValueError("epoch and nonce are not a line: two small integers, or -1 and -1")


@message(415)
@dataclass(frozen=True)
class JobQuery:
    """Any peer -> a job's coordinator or replica: what do you know of ``job_id``? Answered by ``JobInfo``."""

    job_id: str

    def __post_init__(self) -> None:
        _ids(job_id=self.job_id)


@message(416)
@dataclass(frozen=True)
class JobInfo:
    """The answer to ``JobQuery``: ``summary`` is the CBOR of the job's summary (jobs_api.py's form, with its
    tasks when they fit); ``source`` is ``coordinator`` (it runs the job) or ``replica`` (its copy of the
    record); not ``found``: neither."""

    found: bool
    source: str = ""
    summary: bytes = b""

    def __post_init__(self) -> None:
        if self.source not in ("", "coordinator", "replica"):
            raise ValueError(f"source {self.source[:40]!r} is not coordinator or replica")


@message(417)
@dataclass(frozen=True)
class JobCancel:
    """Any peer -> a job's coordinator: cancel ``job_id`` (a ``cancel`` through a peer that does not
    coordinate it). Answered by ``SchedAck``; the coordinator refuses a peer that may not (job_lookup.py)."""

    job_id: str
    reason: str = ""

    def __post_init__(self) -> None:
        _ids(job_id=self.job_id)
        if type(self.reason) is not str or len(self.reason) > 512:
            raise ValueError("reason over 512 characters")


@message(418)
@dataclass(frozen=True)
class JobList:
    """Any peer -> a member: the jobs you coordinate (``jobs --all``), at most ``limit``, in ``state`` if
    given. Answered by ``JobListing``."""

    state: str = ""
    limit: int = 100

    def __post_init__(self) -> None:
        if self.state not in ("", "running", "done", "failed", "cancelled", "submitted"):
            raise ValueError(f"state {str(self.state)[:40]!r} is not a job state")
        if type(self.limit) is not int or not 0 < self.limit <= 1000:
            raise ValueError("limit is not 1 to 1000")


@message(419)
@dataclass(frozen=True)
class JobListing:
    """The answer to ``JobList``: the CBOR of a list of job summaries (without tasks), newest first;
    ``more``: how many more there were past the limit."""

    jobs: bytes = b""
    more: int = 0

    def __post_init__(self) -> None:
        if type(self.more) is not int or self.more < 0:
            raise ValueError("more is not a count")
