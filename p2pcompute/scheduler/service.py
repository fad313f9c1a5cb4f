"""The trio driver of the scheduler: every peer executes tasks, coordinates the jobs submitted to it,
and keeps replicas of other coordinators' job records.

Theory of operation
-------------------
The decisions are the pure state machines': ``ExecutorLeases`` (leases.py)
for this peer's slots, one ``JobState`` (job_state.py) per job coordinated
here, ``Placement`` (placement.py) across the dispatches of all of them.
This module only carries their commands over the Transport's request/response
(messages.py) and feeds back what comes in, with ``trio.current_time()`` as
``now``. Peers in the state machines are peer-id strings (CBOR-friendly, so
the job record travels as it is); times on the wire are durations.

*Executor role* (executing.py). Offers become reservations of this peer's
slots, grants bring the full payload and the input CIDs, runs (runner.py)
use the compute service's executor, results go back as output CIDs pinned
here and scalars inline. Offers from the peer itself short-cut the network.

*Coordinator role.* ``submit(plan)`` starts a ``JobState`` (at most
``max_jobs`` here). ``Dispatch``es are batched and placed on the candidates:
this peer and the live members with a capability record, with provider
hints for data locality: an output CID is known to be held by the executor
whose result was taken and, once fetched, by this peer; for an input with no
holder known here, the DHT's provider records are asked (providers.py:
bounded lookups, cached; only that task waits, at most ``lookups.timeout_s``,
then is placed with what is known; an input with no provider whose root
block no peer serves either fails its task "input not found" at once). Placement counts the
offers still unanswered per peer (``_reserved``) against that peer's budget;
a task no peer has room for waits, and is placed again as soon as offers are
answered (``Room``), not on a timer. Offers, grants and
revokes are requests; a peer that cannot be reached or refuses an offer is
a ``rejected`` failure (not charged). ``FetchResult`` pulls the output CIDs
through the storage service and pins them. Small inputs and outputs travel
inline instead (carry.py): a grant carries the blocks of the small inputs
held here, a result those of its small outputs; CIDs stay the identity (a
block is stored only if it hashes to its CID, anything missing is fetched).
Pins made on a task's path are announced in the background, at most one per
``announce_gap_s`` (each is a DHT lookup and an ADD_PROVIDER to the closest
peers: unpaced, the 400 pins of a 200-task map took a fifth of its coordinator's CPU
while its tasks waited; beyond the queue's bound, the storage service's periodic pass announces them). ``SetTimer`` arms one timer per
job. Membership is polled: a member that turns dead or left is
``MemberDied`` for every job (and ``CoordinatorDied`` for the leases).

*Replication* (replication.py). On ``Replicate`` the record goes to the
``K`` live members closest to the job id by XOR (replicas.py), full then
deltas. job_state.py's rule is kept: a ``Report`` is carried out (made
visible to ``GET /v1/jobs``, ``wait``) only once a replica acknowledged the
version before it (or a later one); with none acknowledging, the reports wait
(the newest progress one and any final one) and replication is retried every
``replicate_retry_s``. Replication never holds up a job's events: one round
at a time runs per job (``_replicator``) and carries, as one delta, every
change made while the last round was out, and for ``replicate_batch_s``
after it (progress only: a final report goes at once), so that a short job
costs its replicas two or three rounds, not one per state change. A peer with no other live member has nobody to wait
for. When a job's coordinator dies and this peer is the closest live replica
it named, it takes the job over, unless the record's other holders, asked
first, know of a newer line of it (replication.py, lines.py).

*Control API* (jobs_api.py): ``/v1/jobs`` to submit, list, describe, cancel.

Everything from a peer is checked: the wire types check their fields on
decoding, the state machines refuse what does not fit (``Refused``: the
reply says why), and a state machine's exception (a bug) is logged and
counted, never fatal to the service.
"""

from __future__ import annotations

import logging
import random
from collections import Counter, OrderedDict
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import cbor2
import trio

from ..errors import P2PComputeError, UserError
from ..node import wire
from ..node.identity import PeerId
from . import carry
from . import events as ev
from . import leases as lx
from .events import JobConfig
from .executing import ExecutingMixin
from .job_lookup import JobLookupMixin
from .job_state import JobState
from .verifying import AccusationNotice, VerifyingMixin
from .jobs_api import JobsApiMixin
from .messages import (MAX_CARRIED, MAX_ID, JobCancel, JobList, JobQuery, JobRecordDelta, JobRecordFull, LineQuery,
                       SchedAck, TaskAccept, TaskDone, TaskFailure, TaskGrant, TaskHeartbeat, TaskOffer, TaskRevoke)
from .model import JobPlan, PlanError
from .placement import Candidate, Placement, unmet_plan
from .plan import full_payload
from .providers import LookupConfig, ProviderLookups, probe_root
from .replicas import K, successor
from .replication import MAX_RECORD_BYTES, RECORD_PROTOCOL, RECORD_STREAMS, ReplicationMixin

log = logging.getLogger(__name__)
TERMINAL = ("done", "failed", "cancelled")
MAX_PROVIDERS = 100_000      # CIDs whose holders the coordinator remembers for placement (oldest dropped)
NOTE_INPUTS_FROM = 1 << 20      # a granted peer is noted as holding its task's inputs of this many bytes or more
MAX_HOLDERS = 8
MAX_ANNOUNCE_QUEUE = 4096    # CIDs waiting to be announced in the background (oldest dropped)
REANNOUNCE_S = 600.0         # a CID announced from here is not announced again from the task path within this


@dataclass
class SchedulerConfig:
    job: JobConfig = field(default_factory=lambda: JobConfig(lease_s=30.0, offer_timeout_s=60.0))
    heartbeat_s: float = 10.0          # a third of the lease
    accept_timeout_s: float = 10.0
    max_queued: int = 16               # reservations waiting for a slot here
    slots: int | None = None           # tasks run at once here (default: the compute service's cpus)
    max_jobs: int = 1000               # jobs coordinated here at once (finished ones count until evicted)
    max_replicas_held: int = 1000
    max_replica_bytes: int = 256 << 20  # job records held for others, in all (one coordinator: an eighth)
    replicas: int = K
    request_timeout_s: float = 10.0
    fetch_timeout_s: float = 60.0
    lost_result_timeout_s: float = 10.0   # after a takeover, a result whose executor is gone too: run it again
    takeover_query_s: float = 1.0      # before a takeover, the record's other holders are asked for a newer line
    replicate_retry_s: float = 2.0
    replica_passed_s: float = 30.0     # a replica whose request failed is passed over this long (replication.py)
    replicate_batch_s: float = 0.05    # after a round, more changes wait this long to go as one delta (not a final one)
    announce_gap_s: float = 0.1        # background announcements of pins made on tasks' paths: at most one per this
    max_inflight: int = 512            # messages being sent at once; beyond it offers are refused here
    poll_s: float = 1.0                # membership poll
    record_stream_over: int = 512 << 10   # full records larger than this go over a stream (replication.py)
    lookups: LookupConfig = field(default_factory=LookupConfig)   # DHT provider lookups for placement
    verification_threshold: int = 10   # anchors of replicate(..., anchor=1): results in a row matching an anchor
    ledger_max_peers: int = 10_000     # peers the reputation ledger remembers (verifying.py)
    sybil: Any = None                  # verification/sybil.py SybilRules for replicas (None: the defaults)


class _Job:
    def __init__(self, js: JobState, submitted: float) -> None:
        self.js = js
        self.lock = trio.Lock()
        self.timer: float | None = None
        self.inputs: dict[str, tuple] = {}          # task -> the inputs of its latest Dispatch
        self.full_sent: set[PeerId] = set()
        self.replicas: list[PeerId] = []
        self.held: list[tuple[int, ev.Report]] = []  # (version it follows, report) waiting for an acknowledgement
        self.want = 0                               # the newest version to replicate
        self.acked = 0                              # the newest version a replica acknowledged
        self.replicating = False                    # its replicator task runs
        self.urgent = trio.Event()                  # a final report waits: the next round goes at once
        self.report: ev.Report | None = None        # the last report carried out
        self.done = trio.Event()
        self.submitted = submitted
        self.fenced = ""                             # a replica holds a newer coordinator's line: step down
        self.repick = False                          # a replica was passed over: another round at once


class SchedulerService(ExecutingMixin, ReplicationMixin, JobsApiMixin, JobLookupMixin, VerifyingMixin):
    name = "scheduler"

    def __init__(self, config: SchedulerConfig | None = None, rng: random.Random | None = None) -> None:
        self.config = config or SchedulerConfig()
        self.rng = rng or random.Random()
        self.node: Any = None
        self.jobs: dict[str, _Job] = {}
        self.held: dict = {}                        # job id -> replication._Replica
        self.fences: OrderedDict[str, tuple] = OrderedDict()   # job id -> the line of a job dropped here (bounded)
        self._asking: set[str] = set()              # jobs whose other holders are asked before a takeover
        self.placement = Placement(random.Random(self.rng.getrandbits(64)))
        self.leases: lx.ExecutorLeases | None = None
        self._dispatches: list[ev.Dispatch] = []
        self._place_wake = trio.Event()
        self._room = False                           # offers were answered since placement last gave room
        self._timer_wake = trio.Event()
        self._exec_timer: float | None = None
        self._granted: dict[tuple[str, str], tuple[bytes, tuple, tuple]] = {}   # payload, inputs, blocks
        self._runs: dict[tuple[str, str], trio.CancelScope] = {}
        self._run_coordinator: dict[tuple[str, str], PeerId] = {}
        self._nursery: trio.Nursery | None = None
        self._inflight = 0
        self._alive: set[PeerId] = set()
        self._gone: set[PeerId] = set()                # members seen alive, then dead or left (until back)
        self._providers: OrderedDict[str, set[str]] = OrderedDict()   # CID -> peers that hold it (locality)
        self.lookups: ProviderLookups | None = None    # the DHT's providers of inputs (with a DHT service)
        self.stats = {"refused": 0, "errors": 0, "takeovers": 0, "takeovers_averted": 0, "replication_failures": 0,
                      "replicas_passed_over": 0, "dropped_sends": 0, "tasks_run": 0}
        self._local: dict[type, Any] = {}
        self._record_slots = trio.Semaphore(RECORD_STREAMS)
        self._carried: dict[tuple[str, str], tuple] = {}     # (job, lease) -> blocks a TaskDone carried
        self._to_announce: OrderedDict[Any, None] = OrderedDict()   # CIDs pinned here, to announce
        self._announced: OrderedDict[Any, float] = OrderedDict()    # CID -> when it was queued last
        self._announce_wake = trio.Event()

    # --- Service protocol ----------------------------------------------------------------------

    def attach(self, node: Any) -> None:
        self.node = node
        if "compute" not in node.services or "storage" not in node.services:
            raise UserError("the scheduler service needs the storage and compute services attached first")
        handlers = {TaskOffer: self._on_offer, TaskAccept: self._on_accept, TaskGrant: self._on_grant,
                    TaskRevoke: self._on_revoke, TaskDone: self._on_done, TaskFailure: self._on_failure,
                    JobRecordFull: self._on_record, JobRecordDelta: self._on_delta}
        for msg_type, handler in handlers.items():
            node.transport.on_request(msg_type, handler)
        node.transport.on_message(TaskHeartbeat, self._on_heartbeat)
        node.transport.on_request(JobQuery, self._on_job_query)
        node.transport.on_request(LineQuery, self._on_line_query)
        node.transport.on_message(AccusationNotice, self._on_accusation)
        node.transport.on_request(JobCancel, self._on_job_cancel)
        node.transport.on_request(JobList, self._on_job_list)
        node.transport.on_stream(RECORD_PROTOCOL, self._record_stream)
        self._local = {**handlers, TaskHeartbeat: self._on_heartbeat}

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        compute = self.node.services["compute"]
        slots = self.config.slots or getattr(compute.executor, "cpus", None) or max(1, int(self.node.resources.cpus))
        self.leases = lx.ExecutorLeases(lx.ExecutorConfig(slots=slots, max_queued=self.config.max_queued,
                                                          heartbeat_s=self.config.heartbeat_s,
                                                          accept_timeout_s=self.config.accept_timeout_s))
        if "dht" in self.node.services:
            self.lookups = ProviderLookups(self._dht_providers, self.config.lookups)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._timer_loop)
            nursery.start_soon(self._place_loop)
            nursery.start_soon(self._poll_loop)
            nursery.start_soon(self._announce_loop)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    def status(self) -> dict[str, Any]:
        states: dict[str, int] = {}
        for job in self.jobs.values():
            states[job.js.state] = states.get(job.js.state, 0) + 1
        out = {"jobs": states, "replicas_held": len(self.held), **self.stats}
        if self.leases is not None:
            out["slots"] = {"total": self.leases.slots, "busy": self.leases.busy(), "queued": self.leases.queued()}
        if self.lookups is not None:
            out["provider_lookups"] = {**self.lookups.stats, "cached": len(self.lookups.cache)}
        return out

    def api_routes(self) -> dict:
        return {("POST", "/v1/jobs"): self._api_submit, ("GET", "/v1/jobs"): self._api_list,
                ("GET", "/v1/jobs/{id}"): self._api_describe, ("POST", "/v1/jobs/cancel/{id}"): self._api_cancel,
                ("GET", "/v1/jobs/logs/{id}"): self._api_logs}

    # --- what callers use ------------------------------------------------------------------------

    async def submit(self, plan: JobPlan) -> str:
        """Coordinate ``plan`` from this peer; returns its job id. ``UserError`` if it cannot be taken."""
        if self.leases is None:
            raise UserError("the scheduler is starting")
        try:
            plan.check()
        except PlanError as exc:
            raise UserError(f"the plan is malformed: {exc}") from None
        if not 0 < len(plan.job_id) <= MAX_ID:
            raise UserError(f"a job id has 1 to {MAX_ID} characters")
        if plan.job_id in self.jobs:
            raise UserError(f"job {plan.job_id} is already here")
        self._evict_finished()
        if len(self.jobs) >= self.config.max_jobs:
            raise UserError(f"{len(self.jobs)} jobs coordinated here: at most {self.config.max_jobs}")
        problems = unmet_plan(plan, self.candidates())
        if problems:
            raise UserError("no known peer can run part of the job: " + "; ".join(problems))
        now = trio.current_time()
        self.submitted_here(plan.job_id)
        js = JobState(plan, now, random.Random(self.rng.getrandbits(64)), self.config.job, self.verify_env())
        size = len(cbor2.dumps(js.to_record()))
        if size > MAX_RECORD_BYTES // 2:     # room to grow with attempts and results
            raise UserError(f"the job's record would be {size:,} bytes, over the {MAX_RECORD_BYTES // 2:,} its "
                            "replication carries: split it into smaller jobs")
        job = _Job(js, now)
        self.jobs[plan.job_id] = job
        async with job.lock:
            await self._carry(job, job.js.start(now))
        return plan.job_id

    async def wait(self, job_id: str) -> ev.Report:
        """The job's final report, once it is carried out (replicated)."""
        job = self.jobs[job_id]
        await job.done.wait()
        assert job.report is not None
        return job.report

    async def cancel(self, job_id: str, reason: str = "cancelled by the user") -> None:
        job = self.jobs.get(job_id)
        if job is None:
            raise UserError(f"no job {job_id} is coordinated here")
        await self._feed(job, ev.Cancel(reason[:512]))

    def summary(self, job_id: str) -> dict[str, Any]:
        job = self.jobs[job_id]
        r = job.report
        return {"job_id": job_id, "name": job.js.plan.name, "coordinator": str(self.node.peer_id),
                "state": ("running" if r.kind == "progress" else r.kind) if r else "submitted",
                "reason": r.reason if r else "",
                "progress": asdict(r.progress) if r else None, "epoch": job.js.epoch,
                "replicas": [str(p) for p in job.replicas],
                "outputs": [list(o) for o in r.outputs] if r else []}

    def candidates(self) -> list[Candidate]:
        from ..gossip.capability import SUPPORTED_OPSET_NAMES, detect_resources

        res = self.node.resources
        slots = self.leases.slots if self.leases else 1
        out = [Candidate(str(self.node.peer_id), slots, res.cpus, res.memory, detect_resources()["arch"],
                         dict(res.labels), SUPPORTED_OPSET_NAMES, True, 0.0)]
        membership = self.node.services.get("membership")
        if membership is not None and membership.sm is not None:
            for m in membership.sm.members():
                if m.state == "alive" and m.record is not None and m.peer != self.node.peer_id:
                    out.append(replace(Candidate.from_record(m.record), peer=str(m.peer)))
        return out

    def _new_job(self, js: JobState, now: float) -> _Job:
        return _Job(js, now)

    # --- coordinator: feeding jobs and carrying out their commands ---------------------------------

    async def _feed(self, job: _Job, event: Any) -> list[str]:
        """Feed one event to a job; the reasons of anything it refused."""
        async with job.lock:
            offered = job.js.counts["offered"]
            try:
                cmds = job.js.handle(event, trio.current_time())
            except Exception:
                self.stats["errors"] += 1
                log.exception("job %s failed on %s (the service goes on)", job.js.job_id, type(event).__name__)
                return ["internal error"]
            if job.js.counts["offered"] < offered:    # offers answered: reservations freed for waiting tasks
                self._room = True
                self._place_wake.set()
            return await self._carry(job, cmds)

    async def _carry(self, job: _Job, cmds: list) -> list[str]:
        refused: list[str] = []
        for c in cmds:
            if isinstance(c, ev.Dispatch):
                job.inputs[c.task] = c.inputs
                self._to_place(c)
            elif isinstance(c, ev.SendOffer):
                self._spawn(self._offer, c, reject=(job, c))
            elif isinstance(c, ev.GrantLease):
                self._spawn(self._grant, job, c)
            elif isinstance(c, ev.Revoke):
                self._spawn(self._tell, c.peer, TaskRevoke(c.job_id, c.task, c.lease_id, c.reason[:4096],
                                                           job.js.epoch))
            elif isinstance(c, ev.FetchResult):
                self._spawn(self._fetch, job, c, self._carried.pop((c.job_id, c.lease_id), ()))
            elif isinstance(c, ev.Replicate):  # coalesced: one round at a time (_replicator), never awaited here
                job.want = max(job.want, c.version)
                if not job.replicating and self._nursery is not None:
                    job.replicating = True
                    self._nursery.start_soon(self._replicator, job)
            elif isinstance(c, ev.Report):     # of the progress reports waiting, only the newest matters
                job.held = [(v, r) for v, r in job.held if r.kind != "progress"] + [(job.want, c)]
                if c.kind in TERMINAL:
                    job.urgent.set()
                self._release(job)
            elif isinstance(c, ev.Refused):
                self.stats["refused"] += 1
                refused.append(c.reason)
                log.info("job %s refused a message from %s: %s", job.js.job_id, c.peer, c.reason)
            elif isinstance(c, ev.SetTimer):
                job.timer = c.at
                self._timer_wake.set()
            else:
                self.carry_verification(job, c)
        return refused

    def _release(self, job: _Job) -> None:
        """Carry out the reports whose version (or a later one) a replica acknowledged."""
        while job.held and job.held[0][0] <= job.acked:
            _, r = job.held.pop(0)
            if r.kind == "done" and self.evidence_problem(job):    # the submitter's own check (verifying.py)
                r = replace(r, kind="failed", reason=f"evidence check failed: {self.evidence_problem(job)}")
            job.report = r
            if r.kind in TERMINAL:
                log.info("job %s %s %s", job.js.job_id, r.kind, r.reason)
                job.done.set()

    async def _replicator(self, job: _Job) -> None:
        """Replicate ``job`` until a replica acknowledged its newest version: one round at a time, each round
        carrying every change since the last (a delta), so that a job's events never wait on a replica.
        A round's first acknowledgement releases the reports it covers; the next round starts once every
        replica answered the last (a replica's deltas stay in order), or after twice the request timeout."""
        try:
            while (job.acked < job.want or job.repick) and not job.fenced:   # fenced: stepped down, no more rounds
                target, everyone, ok = job.js.version, trio.Event(), False
                try:
                    ok = await self._replicate(job, everyone)
                except Exception:
                    self.stats["errors"] += 1
                    log.exception("replicating job %s failed (tried again)", job.js.job_id)
                if ok:
                    job.acked = max(job.acked, target)
                    self._release(job)
                    with trio.move_on_after(2 * self.config.request_timeout_s):
                        await everyone.wait()
                    if job.replicas and job.acked < job.want and not job.repick:   # the next little while's, as one
                        with trio.move_on_after(self.config.replicate_batch_s):
                            await job.urgent.wait()
                else:
                    await trio.sleep(self.config.replicate_retry_s)
        finally:
            job.replicating = False

    def _spawn(self, fn: Any, *args: Any, reject: tuple | None = None) -> None:
        if self._nursery is None or self._inflight >= self.config.max_inflight:
            self.stats["dropped_sends"] += 1
            if reject is not None and self._nursery is not None:    # an offer not sent: refused, not charged
                job, c = reject
                self._nursery.start_soon(self._feed, job, ev.TaskFailed(c.task, c.peer, c.lease_id, ev.REJECTED,
                                                                        "too many messages in flight"))
            return

        async def run() -> None:
            try:
                await fn(*args)
            except Exception:
                self.stats["errors"] += 1
                log.exception("scheduler task %s failed", getattr(fn, "__name__", fn))
            finally:
                self._inflight -= 1

        self._inflight += 1
        self._nursery.start_soon(run)

    async def _ask(self, peer: PeerId | str, msg: Any, timeout: float | None = None) -> SchedAck:
        """A request to ``peer`` (this peer's own handler for itself); transport errors become a refusal."""
        peer = peer if isinstance(peer, PeerId) else PeerId.from_string(peer)
        try:
            if peer == self.node.peer_id:
                reply = await self._local[type(msg)](peer, msg)
            else:
                reply = await self.node.transport.request(peer, msg, timeout or self.config.request_timeout_s)
        except P2PComputeError as exc:
            return SchedAck(False, f"{type(exc).__name__}: {exc}"[:4096])
        return reply if isinstance(reply, SchedAck) else SchedAck(False, f"unexpected reply {type(reply).__name__}")

    async def _tell(self, peer: PeerId | str, msg: Any) -> None:
        reply = await self._ask(peer, msg)
        if not reply.ok:
            log.debug("%s to %s: %s", type(msg).__name__, str(peer)[:16], reply.reason)

    async def _offer(self, c: ev.SendOffer) -> None:
        reply = await self._ask(c.peer, TaskOffer(c.job_id, c.task, c.lease_id,
                                                  max(0.0, c.deadline - trio.current_time())))
        job = self.jobs.get(c.job_id)
        if not reply.ok and job is not None:
            await self._feed(job, ev.TaskFailed(c.task, c.peer, c.lease_id, ev.REJECTED, reply.reason))

    async def _grant(self, job: _Job, c: ev.GrantLease) -> None:
        spec = job.js.tasks[c.task].spec
        try:
            payload = full_payload(job.js.plan, spec)
        except PlanError as exc:
            await self._feed(job, ev.TaskFailed(c.task, c.peer, c.lease_id, ev.FAILED, str(exc)))
            return
        inputs = tuple((name, cid) for name, cid, _ in job.inputs.get(c.task, ()))
        try:
            msg = TaskGrant(c.job_id, c.task, c.lease_id, max(0.0, c.expires - trio.current_time()), payload, inputs)
            if c.peer != str(self.node.peer_id):
                size = len(wire.encode(msg, max_size=self.node.transport.max_message))  # too large: the job's fault
                budget = min(MAX_CARRIED, self.node.transport.max_message - size - (64 << 10))
                small = [cid for _, cid, n in job.inputs.get(c.task, ()) if cid and (n or 0) <= budget]
                if small and budget > 0:       # small inputs held here go with the grant (no bitswap round trip)
                    blocks = await trio.to_thread.run_sync(carry.gather, self.node.services["storage"].blockstore,
                                                           small, budget)
                    msg = replace(msg, blocks=blocks)
        except (ValueError, P2PComputeError) as exc:
            await self._feed(job, ev.TaskFailed(c.task, c.peer, c.lease_id, ev.FAILED, f"cannot be granted: {exc}"))
            return
        reply = await self._ask(c.peer, msg)
        if reply.ok:      # it fetches the inputs now: tasks reading large ones prefer it (a split's row/column blocks)
            for _, cid, size in job.inputs.get(c.task, ()):
                if size and size >= NOTE_INPUTS_FROM:
                    self._note(cid, c.peer)
        if not reply.ok:  # unreachable or refused: given back now (not charged), rather than after its whole lease
            log.info("grant of %s/%s to %s: %s", c.job_id, c.task, c.peer[:16], reply.reason)
            await self._feed(job, ev.TaskFailed(c.task, c.peer, c.lease_id, ev.REJECTED,
                                                f"grant not taken: {reply.reason}"[:4096]))

    async def _fetch(self, job: _Job, c: ev.FetchResult, carried: tuple = ()) -> None:
        from ..storage.cid import Cid

        storage = self.node.services["storage"]
        T0 = trio.current_time()
        # outputs here already (run here, or carried by the result: stored if they hash right) are pinned
        # and announced later; the others are fetched
        here = await trio.to_thread.run_sync(carry.keep, storage.blockstore, carried, [x for _, x in c.cids], True)
        for cid in here:
            self._announce_soon(Cid.parse(cid))
        try:
            for _, cid in c.cids:
                if cid not in here:
                    await storage.fetch(Cid.parse(cid), pin=True, timeout=self.config.fetch_timeout_s)
        except P2PComputeError as exc:
            await self._feed(job, ev.FetchFailed(c.task, c.lease_id, str(exc)[:4096]))
            return
        for _, cid in c.cids:
            self._note(cid, str(self.node.peer_id))
        await self._feed(job, ev.Fetched(c.task, c.lease_id))

    def _note(self, cid: str, peer: str) -> None:
        """``peer`` holds ``cid`` (it made it, or fetched it): placement prefers it for tasks reading it."""
        holders = self._providers.pop(cid, set())
        if len(holders) < MAX_HOLDERS:
            holders.add(peer)
        self._providers[cid] = holders
        while len(self._providers) > MAX_PROVIDERS:
            self._providers.popitem(last=False)

    # --- provider hints: known holders, else the DHT's (providers.py) -----------------------------------

    def _to_place(self, d: ev.Dispatch) -> None:
        """Queue ``d`` for placement; first, up to the lookup timeout, the DHT's providers of inputs with no
        known holder. Only ``d`` waits for them: the other dispatches are placed meanwhile."""
        unknown = [cid for _, cid, _ in d.inputs if cid and cid not in self._providers]
        if self.lookups is not None and self._nursery is not None and self.lookups.unknown(unknown):
            self._nursery.start_soon(self._place_after_lookups, d, unknown)
            return
        self._dispatches.append(d)
        self._place_wake.set()

    async def _place_after_lookups(self, d: ev.Dispatch, cids: list[str]) -> None:
        assert self.lookups is not None and self._nursery is not None
        await self.lookups.resolve(self._nursery, cids)
        await self.lookups.settle(c for c in cids if self.lookups.known(c) is None)   # a lookup that timed out
        nobody = set(self.lookups.nobody(c for c in cids if c not in self._providers))
        for name, cid, _ in d.inputs:           # no provider: its root block sought, else it fails now
            if cid in nobody:
                wait = min(self.config.lookups.probe_s, self.config.fetch_timeout_s)   # no longer than an executor
                why = await self.lookups.absent(cid, lambda c: probe_root(self.node, c, wait))
                job = self.jobs.get(d.job_id)
                if why and job is not None:
                    await self._feed(job, ev.Placed(d.task, (), "", f"{ev.INPUT_NOT_FOUND}: input {name} ({cid}) "
                                                                      f"not found: {why}"))
                    return
        self._dispatches.append(d)
        self._place_wake.set()

    def _hints(self, batch: list[ev.Dispatch]) -> dict[str, tuple[str, ...]]:
        """CID -> peers holding it, for placement: those known here, else the DHT's (cached)."""
        out: dict[str, tuple[str, ...]] = {}
        for d in batch:
            for _, cid, _ in d.inputs:
                if cid in self._providers:
                    out[cid] = tuple(self._providers[cid])
                elif self.lookups is not None and cid not in out:
                    found = self.lookups.known(cid)
                    if found:
                        out[cid] = found
        return out

    async def _dht_providers(self, cid: str) -> list[str]:
        from ..storage.cid import Cid

        dht, key, want = self.node.services["dht"], Cid.parse(cid).multihash, self.config.lookups.want
        here = dht.providers.get(key, trio.current_time(), want)   # records announced to this peer: no round trip
        if here:
            return [str(r.provider) for r in here]
        return [row["peer_id"] for row in await dht.find_providers(key, want)]

    def _announce_soon(self, cid: Any) -> None:
        """Announce a CID pinned here in the background (off a task's path); the oldest are dropped beyond
        a bound (the storage service's periodic pass announces every pin anyway). One announced here within
        ``REANNOUNCE_S`` is not announced again (the same input submitted, the same output made, job after job)."""
        now = trio.current_time()
        if now - self._announced.get(cid, -REANNOUNCE_S) < REANNOUNCE_S:
            return
        self._announced[cid] = now
        self._announced.move_to_end(cid)
        while len(self._announced) > MAX_ANNOUNCE_QUEUE:
            self._announced.popitem(last=False)
        self._to_announce[cid] = None
        while len(self._to_announce) > MAX_ANNOUNCE_QUEUE:
            self._to_announce.popitem(last=False)
        self._announce_wake.set()

    async def _announce_loop(self) -> None:
        storage = self.node.services["storage"]
        while True:
            await self._announce_wake.wait()
            self._announce_wake = trio.Event()
            while self._to_announce:
                cid, _ = self._to_announce.popitem(last=False)
                await storage.announce(cid)
                await trio.sleep(self.config.announce_gap_s)   # a DHT provide is ~20 requests: paced, off dispatch's CPU

    # --- membership --------------------------------------------------------------------------------

    def _live(self) -> set[PeerId]:
        """The members alive (or only suspected) now."""
        membership = self.node.services.get("membership")
        if membership is None or membership.sm is None:
            return set()
        return {m.peer for m in membership.sm.members() if m.state in ("alive", "suspect")}

    def _departed(self) -> set[PeerId]:
        """The members dead or left now."""
        membership = self.node.services.get("membership")
        if membership is None or membership.sm is None:
            return set()
        return {m.peer for m in membership.sm.members() if m.state in ("dead", "left")}

    async def _poll_loop(self) -> None:
        while True:
            alive = self._live()
            gone, self._alive = self._alive - alive, alive
            # a coordinator whose records are held here may have come and gone between two polls (a short job
            # done within a second of the peers meeting): its departure counts though it was never seen alive
            departed = self._departed()
            gone |= {h.coordinator for h in self.held.values() if h.coordinator in departed} - self._gone
            self._gone = (self._gone | gone) - alive if len(self._gone) < 4096 else gone
            for peer in gone:                  # dead, left, or dropped from the table
                await self._member_died(peer)
            await trio.sleep(self.config.poll_s)

    async def _member_died(self, peer: PeerId) -> None:
        running = [job for job in self.jobs.values() if job.js.state == "running"]
        held = sum(1 for h in self.held.values() if h.coordinator == peer and h.record.get("state") == "running")
        # membership logs the departure itself: this line is worth an INFO only when there is work to hand on
        (log.info if running or held else log.debug)(
            "member %s is gone: its tasks in the %d running job(s) coordinated here are placed again; %d job(s) "
            "it coordinated go to their closest replica", peer.short, len(running), held)
        self._exec(lx.CoordinatorDied(peer))
        for job in running:
            await self._feed(job, ev.MemberDied(str(peer)))
        me = self.node.peer_id
        heirs = []
        for job_id, held in list(self.held.items()):
            if held.coordinator == peer and held.record.get("state") == "running":
                if successor(job_id, held.replicas, self._alive | {me}) == me:
                    heirs.append(job_id)
            elif held.coordinator == peer and held.record.get("state") == "done":   # its results outlive it
                if successor(job_id, held.replicas, self._alive | {me}) == me:
                    self._spawn(self._check_finished, job_id, peer)
        if heirs and self._nursery is not None:   # each asks the other holders first: the poll goes on meanwhile
            self._nursery.start_soon(self._take_overs, heirs)
        elif heirs:
            await self._take_overs(heirs)

    # --- timers and placement ----------------------------------------------------------------------

    async def _timer_loop(self) -> None:
        while True:
            self._timer_wake = trio.Event()
            times = [j.timer for j in self.jobs.values() if j.timer is not None]
            if self._exec_timer is not None:
                times.append(self._exec_timer)
            with trio.move_on_at(min(times) if times else float("inf")):
                await self._timer_wake.wait()
            now = trio.current_time()
            if self._exec_timer is not None and self._exec_timer <= now:
                self._exec_timer = None
                self._exec(lx.Wake())
            for job in list(self.jobs.values()):
                if job.timer is not None and job.timer <= now:
                    job.timer = None
                    await self._feed(job, ev.Tick())

    def _reserved(self) -> Counter:
        """Peer -> offers of the jobs coordinated here that it has not answered yet (its reservations)."""
        out: Counter = Counter()
        for job in self.jobs.values():
            if job.js.state == "running" and job.js.counts["offered"]:
                for t in job.js.tasks.values():
                    if t.state == "offered":
                        out.update(t.offers.values())
        return out

    async def _give_room(self) -> None:
        """Offers were answered: tasks that found no peer with room are placed again now, as many as the
        peers' budgets have room for (placement.room), instead of after their retry timer."""
        waiting = [j for j in self.jobs.values() if j.js.state == "running" and j.js.waiting_for_room()]
        if not waiting:
            return
        room = self.placement.room(self.candidates(), self._reserved())
        n = -(-room // max(1, self.config.job.probes))
        for job in waiting:
            if n <= 0:
                break
            k = min(n, job.js.waiting_for_room())
            await self._feed(job, ev.Room(n))
            n -= k

    async def _place_loop(self) -> None:
        while True:
            await self._place_wake.wait()
            self._place_wake = trio.Event()
            if self._room:
                self._room = False
                try:
                    await self._give_room()
                except Exception:
                    self.stats["errors"] += 1
                    log.exception("giving room to waiting tasks failed (their retry timers place them)")
            batch, self._dispatches = self._dispatches, []
            if not batch:
                continue
            try:
                providers = self._hints(batch)
                placed = self.placement.place(batch, self.candidates(), providers, self._reserved())
            except Exception:
                self.stats["errors"] += 1
                log.exception("placement failed (the tasks are placed again when their placing lapses)")
                continue
            for d, p in zip(batch, placed):
                job = self.jobs.get(d.job_id)
                if job is not None:
                    await self._feed(job, p)

    # --- coordinator: what executors send ------------------------------------------------------------

    async def _to_job(self, job_id: str, event: Any) -> SchedAck:
        job = self.jobs.get(job_id)
        if job is None:
            return SchedAck(False, f"no job {job_id[:128]} is coordinated here")
        refused = await self._feed(job, event)
        return SchedAck(not refused, "; ".join(refused)[:4096])

    async def _on_accept(self, peer: PeerId, msg: TaskAccept) -> SchedAck:
        return await self._to_job(msg.job_id, ev.OfferAccepted(msg.task, str(peer), msg.lease_id))

    async def _on_heartbeat(self, peer: PeerId, msg: TaskHeartbeat) -> SchedAck:
        return await self._to_job(msg.job_id, ev.Heartbeat(msg.task, str(peer), msg.lease_id))

    async def _on_done(self, peer: PeerId, msg: TaskDone) -> SchedAck:
        key = (msg.job_id, msg.lease_id)
        if msg.blocks:                        # for the FetchResult the result's acceptance gives (_carry)
            self._carried[key] = msg.blocks
        try:
            ack = await self._to_job(msg.job_id, ev.ResultReady(msg.task, str(peer), msg.lease_id,
                                                                dict(msg.outputs), dict(msg.inline), dict(msg.sizes), msg.log,
                                                                msg.log_bytes, msg.claim))
        finally:
            self._carried.pop(key, None)      # not taken: nothing of it stays
        if ack.ok:                            # a result taken: its outputs are at that peer
            for cid in msg.outputs.values():
                self._note(cid, str(peer))
        return ack

    async def _on_failure(self, peer: PeerId, msg: TaskFailure) -> SchedAck:
        return await self._to_job(msg.job_id, ev.TaskFailed(msg.task, str(peer), msg.lease_id, msg.kind, msg.message,
                                                            msg.log, msg.log_bytes))
