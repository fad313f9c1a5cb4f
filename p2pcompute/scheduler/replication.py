"""The scheduler service's replication of job records (a mixin of ``SchedulerService``, service.py).

Theory of operation. On a ``Replicate`` the coordinator sends the job record
to the ``K`` live members closest to the job id by XOR (replicas.py): the
full record (CBOR of ``JobState.to_record``, with the replica set) to a
replica that has none from this coordinator yet, then deltas
(``JobState.delta``, computed once per ``Replicate``); a replica that misses
one answers ``gap`` and gets the full record; so does every replica when a
delta would not fit in a message (many tasks changed at once: a cancel of a
large job, a takeover). A full record over ``record_stream_over`` bytes goes as one
frame on a stream of its own (``RECORD_PROTOCOL``, at most
``MAX_RECORD_BYTES``; a replica reads ``RECORD_STREAMS`` at once and resets
the others), a smaller one as a request. The sends run in the
service's nursery; ``_replicate`` returns once one replica acknowledged (or
every one answered, or twice the request timeout passed): the service
carries out the ``Report``s that follow only then (job_state.py's rule).
A replica checks a record before keeping it (CBOR, the job id, a plan
``from_wire`` accepts, peer ids) and holds at most ``max_replicas_held``
(a finished job's record makes room). When the coordinator of a record held
here dies and this peer is the closest live replica of the set it named,
it takes the job over: ``JobState.from_record`` (the next epoch), ``start``,
and the results the old coordinator had fetched are pulled here (one found
nowhere is ``ResultLost``: its task runs again). A job that had ended
``done`` is not taken over, but its outputs are pulled here
(``_check_finished``); one found nowhere reopens it here (a takeover too).

The line question. The copy held here may be stale: another holder may have
taken the job over already (it saw the coordinator die first; this peer's
view differs) and even ended it. So before a takeover this peer asks the
record's other live holders, in parallel, the newest line they know of the
job (``LineQuery`` 410, answered ``LineAnswer`` 411 from a record held, a
line fenced here, or the job coordinated here: ``_on_line_query``) and waits
``takeover_query_s`` (1 s). lines.py's ``TakeoverAsk`` decides, as it does in
the job simulation: a newer line than the copy's means the job went on
without it, so the copy is dropped and that line fenced here, never taken
over (``takeovers_averted``); otherwise, once the time is over, the job is
taken over, unless a newer record came meanwhile (it replaces the copy). A
holder that cannot be reached or times out is no answer
(``line_queries_unanswered``), and so is a reply that is no ``LineAnswer``
of this job (``line_answers_ignored``); a frame that breaks ``LineAnswer``'s
bounds does not decode (the transport drops and counts it). A dead
coordinator's jobs are asked about at once (``TAKEOVERS_AT_ONCE``), off the
membership poll. Each holder is trusted about the line it reports (a known
limit: a hostile one can make this peer drop its copy; lines.py).

Passing over. A replica whose request failed in the transport (timed out,
unreachable, disconnected: not a refusal it sent) is *passed over* by this
coordinator for ``replica_passed_s``: every job's next round picks its
replicas without it (``replicas.pick``), and the round that passed it over
is followed by another at once, which sends the full record to the next
closest member. So a job keeps ``K`` live copies while a peer that died is
not yet declared dead by membership (seconds: suspicion, then its timeout).
``replicas_passed_over`` counts them; at most ``MAX_PASSED`` are remembered.

Fencing. A record's line is (epoch, nonce); a replica keeps the higher line
(a newer epoch; of two replicas that both took over, the higher nonce) and
answers a full record or delta of a lower one ``fenced: ...``. A job dropped
here (a record left for room or for a newer line, a job stepped down from or
evicted) leaves its line in ``fences`` (at most ``MAX_FENCES``): a record of
a lower line is fenced off here too, and the line question hears of it. A
coordinator that hears that was replaced (partitioned, or declared dead while alive): it
steps down (``_step_down``), reporting nothing more. Its reports were never
carried out past its last acknowledged version, and executors refuse its
offers and grants of an older epoch (leases.py), so no result is taken twice.
"""

from __future__ import annotations

import logging
import random
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import cbor2
import trio

from ..errors import P2PComputeError, WireError
from ..node import wire
from ..node.framing import FrameReader, frame
from ..node.identity import PeerId
from .job_record import RecordGap, apply_delta
from .job_state import JobState
from .lines import AVERT, TakeoverAsk, known_line, line_of
from .messages import JobRecordDelta, JobRecordFull, LineAnswer, LineQuery, SchedAck
from .model import JobPlan, PlanError
from .replicas import pick

log = logging.getLogger("p2pcompute.scheduler.service")
RECORD_PROTOCOL = "/p2pcompute/sched/record/1.0.0"
MAX_RECORD_BYTES = 64 << 20      # a full record sent over a stream (a message carries at most 1 MiB)
DELTA_HEADROOM = 4096            # a delta's message framing and fields beyond the CBOR of the delta
RECORD_STREAMS = 2               # full records received at once (each held in memory while it is checked)
MAX_FENCES = 10_000              # lines of jobs dropped here that are remembered (oldest forgotten first)
TAKEOVERS_AT_ONCE = 64           # jobs of one dead coordinator whose other holders are asked at once
MAX_PASSED = 4096                # peers passed over as replicas that are remembered
TRANSPORT_FAILURES = ("RequestTimeout", "PeerUnreachable", "PeerDisconnected", "TransportError")


@dataclass
class _Replica:
    record: dict
    coordinator: PeerId
    replicas: tuple[PeerId, ...]
    size: int = 0          # bytes received for it (the full record and the deltas since): its share of the budget


class ReplicationMixin:
    """Needs of the service: node, config, jobs, held, fences, _asking, stats, rng, _nursery, _ask, _carry, _spawn,
    _live, _new_job."""

    node: Any
    config: Any
    jobs: dict
    held: dict
    fences: OrderedDict
    _asking: set
    stats: dict
    rng: random.Random
    _nursery: Any

    async def _replicate(self, job: Any, everyone: trio.Event | None = None) -> bool:
        """Send the job's record to its replicas; True once one acknowledged (or there is none).
        ``everyone`` is set once every replica answered. The full record is encoded only if one needs it."""
        me = self.node.peer_id
        everyone = trio.Event() if everyone is None else everyone
        job.repick = False
        job.replicas = pick(job.js.job_id, [p for p in self._live() if p != me], self.config.replicas,
                            self._passed_over())
        if not job.replicas:
            everyone.set()
            return True
        delta = cbor2.dumps(job.js.delta())   # only when someone is there to receive it
        encoded: dict[str, bytes] = {}

        def full() -> bytes:          # as of when a replica first needs it: newer than the delta is fine
            if "full" not in encoded:
                encoded["full"] = cbor2.dumps(job.js.to_record())
            return encoded["full"]

        names = tuple(str(p) for p in job.replicas)
        delta_bytes = delta                  # one over a message's limit: the full record goes instead (a stream)
        if len(delta_bytes) + DELTA_HEADROOM > getattr(self.node.transport, "max_message", 1 << 20):
            self.stats["oversized_deltas"] = self.stats.get("oversized_deltas", 0) + 1
            job.full_sent.clear()
        state = {"acked": 0, "left": len(job.replicas)}
        first = trio.Event()              # the first acknowledgement, or every replica answered

        async def one(peer: PeerId) -> None:
            reply = SchedAck(False, "")
            try:
                if peer in job.full_sent:
                    reply = await self._ask(peer, JobRecordDelta(job.js.job_id, delta))
                if not reply.ok:
                    reply = await self._send_full(peer, JobRecordFull(job.js.job_id, full(), names))
                    if reply.ok:
                        job.full_sent.add(peer)
                if not reply.ok:
                    job.full_sent.discard(peer)
                    log.debug("replica %s of %s: %s", peer.short, job.js.job_id, reply.reason)
                    if reply.reason.split(":", 1)[0] in TRANSPORT_FAILURES:
                        self._pass_over(peer)
                        job.repick = True            # the next round goes to the next closest at once
                if reply.reason.startswith("fenced:"):
                    job.fenced = reply.reason            # a newer coordinator's line is held there
                    self._step_down(job)
            finally:
                state["left"] -= 1
                if reply.ok:
                    state["acked"] += 1
                if reply.ok or not state["left"]:
                    first.set()
                if not state["left"]:
                    everyone.set()

        if self._nursery is None:
            everyone.set()
            return False
        for p in job.replicas:            # the slower replicas are answered in the background
            self._nursery.start_soon(one, p)
        with trio.move_on_after(2 * self.config.request_timeout_s):
            await first.wait()
        if job.fenced:
            self._step_down(job)
            return False
        if not state["acked"]:
            self.stats["replication_failures"] += 1
        return state["acked"] > 0

    def _pass_over(self, peer: PeerId) -> None:
        passed = self.__dict__.setdefault("_passed", OrderedDict())
        if peer not in passed:
            self.stats["replicas_passed_over"] += 1
        passed.pop(peer, None)
        passed[peer] = trio.current_time()
        while len(passed) > MAX_PASSED:
            passed.popitem(last=False)

    def _passed_over(self) -> set[PeerId]:
        """The members not to send records to now: they did not answer one lately (passing over, above)."""
        passed = self.__dict__.get("_passed")
        if not passed:
            return set()
        since = trio.current_time() - self.config.replica_passed_s
        while passed and next(iter(passed.values())) < since:
            passed.popitem(last=False)
        return set(passed)

    def _against_own(self, job_id: str, line: tuple) -> str:
        """A record of a job this peer coordinates too: of the two lines the higher wins. Ours: the sender
        is fenced (the reason). Theirs: this peer steps down and keeps the record as a replica ("")."""
        job = self.jobs.get(job_id)
        if job is None:
            return ""
        mine = (job.js.epoch, job.js.nonce)
        if mine > line:
            return f"fenced: this peer coordinates the job at epoch {job.js.epoch}"
        if mine < line:
            job.fenced = f"a record of epoch {line[0]} came from another coordinator"
            self._step_down(job)
        return ""

    def _step_down(self, job: Any) -> None:
        """A replica holds a newer coordinator's line of this job: this peer was replaced (partitioned, or
        declared dead while alive). It drops the job and carries out no more of its reports; the job's
        runs it granted are the new coordinator's to revoke (their leases are of an older epoch)."""
        if self.jobs.get(job.js.job_id) is job:
            del self.jobs[job.js.job_id]
            self._fence(job.js.job_id, (job.js.epoch, job.js.nonce))
            self.stats["stepped_down"] = self.stats.get("stepped_down", 0) + 1
            log.warning("job %s: %s; this coordinator (epoch %d) steps down", job.js.job_id, job.fenced,
                        job.js.epoch)

    async def _send_full(self, peer: PeerId, msg: JobRecordFull) -> SchedAck:
        """A full record: as a request when it is small, else as one frame on a stream of its own."""
        if len(msg.record) <= self.config.record_stream_over:
            return await self._ask(peer, msg)
        try:
            data = wire.encode(msg, max_size=MAX_RECORD_BYTES)
            with trio.fail_after(self.config.request_timeout_s + len(data) / (1 << 20)):   # 1 MiB/s at least
                stream = await self.node.transport.open_stream(peer, RECORD_PROTOCOL)
                try:
                    await stream.write(frame(data))
                    answer = await FrameReader(stream, 1 << 16).read_frame()
                finally:
                    await stream.close()
            reply = wire.decode(answer or b"", max_size=1 << 16).message
        except (P2PComputeError, trio.TooSlowError) as exc:
            return SchedAck(False, f"record stream: {type(exc).__name__}: {exc}"[:4096])
        return reply if isinstance(reply, SchedAck) else SchedAck(False, "the record stream's answer is no SchedAck")

    async def _record_stream(self, peer: PeerId, stream: Any) -> None:
        """A full record on a stream: one frame in (a ``JobRecordFull``), one ``SchedAck`` out."""
        try:
            self._record_slots.acquire_nowait()
        except trio.WouldBlock:
            await stream.reset()             # busy: the coordinator tries again at its next replication
            return
        try:
            reply = SchedAck(False, "no record within the time allowed")
            with trio.move_on_after(self.config.request_timeout_s + MAX_RECORD_BYTES / (1 << 20)):
                try:
                    data = await FrameReader(stream, MAX_RECORD_BYTES + 1024).read_frame()
                    msg = wire.decode(data or b"", max_size=MAX_RECORD_BYTES + 1024).message
                    if not isinstance(msg, JobRecordFull):
                        raise WireError(f"a {type(msg).__name__} on the record stream")
                    reply = await self._on_record(peer, msg)
                except WireError as exc:
                    reply = SchedAck(False, f"bad record frame: {exc}"[:4096])
            await stream.write(frame(wire.encode(reply)))
            await stream.close()
        finally:
            self._record_slots.release()

    def _room_for(self, peer: PeerId, job_id: str, size: int) -> str | None:
        """Make room for ``size`` more bytes of ``job_id``'s record from ``peer``; why not, if it cannot be made.

        Held records are bounded in count (``max_replicas_held``) and in bytes (``max_replica_bytes``),
        and one coordinator may fill at most an eighth of the bytes (a hostile peer cannot crowd out the
        records of others). Records of finished jobs, oldest first, make room; running ones never do."""
        budget = self.config.max_replica_bytes
        from_peer = sum(h.size for j, h in self.held.items() if h.coordinator == peer and j != job_id)
        if from_peer + size > budget // 8:
            return f"records from this coordinator would pass {budget // 8} bytes held here"

        def over() -> bool:
            old = self.held[job_id].size if job_id in self.held else 0
            count = len(self.held) + (job_id not in self.held)
            return (count > self.config.max_replicas_held
                    or sum(h.size for h in self.held.values()) - old + size > budget)

        while over():
            finished = next((j for j, h in self.held.items() if h.record.get("state") != "running" and j != job_id),
                            None)
            if finished is None:
                return (f"{len(self.held)} records of running jobs held here: at most "
                        f"{self.config.max_replicas_held} and {budget} bytes")
            self._fence(finished, line_of(self.held.pop(finished).record))   # the oldest finished one makes room
        return None

    async def _on_record(self, peer: PeerId, msg: JobRecordFull) -> SchedAck:
        refused = self._room_for(peer, msg.job_id, len(msg.record))
        if refused is not None:
            return SchedAck(False, refused)
        try:
            record = cbor2.loads(msg.record)
            if not isinstance(record, dict) or record.get("job_id") != msg.job_id:
                raise PlanError("the record is not a job record of this job")
            JobPlan.from_wire(record["plan"])           # a record we could not take over from is refused now
            replicas = tuple(PeerId.from_string(p) for p in msg.replicas)
        except Exception as exc:   # cbor2 and the plan's checks raise several types on garbage
            return SchedAck(False, f"bad job record: {type(exc).__name__}: {exc}"[:4096])
        old = self.held.get(msg.job_id)
        if old is not None and line_of(old.record) > line_of(record):
            return SchedAck(False, _fenced(old.record))
        fence = self.fences.get(msg.job_id)
        if old is None and fence is not None and fence > line_of(record):   # dropped here for a newer line
            return SchedAck(False, f"fenced: a newer line of this job is known here (epoch {fence[0]})")
        refused = self._against_own(msg.job_id, line_of(record))
        if refused:
            return SchedAck(False, refused)
        self.held[msg.job_id] = _Replica(record, peer, replicas, len(msg.record))
        return SchedAck(True)

    async def _on_delta(self, peer: PeerId, msg: JobRecordDelta) -> SchedAck:
        held = self.held.get(msg.job_id)
        if held is None:
            return SchedAck(False, "gap: no record of this job here")
        refused = self._room_for(peer, msg.job_id, held.size + len(msg.delta))
        if refused is not None:
            return SchedAck(False, refused)
        try:
            delta = cbor2.loads(msg.delta)
            if not isinstance(delta, dict):
                raise PlanError("a delta is a map")
            if line_of(held.record) > line_of(delta):
                return SchedAck(False, _fenced(held.record))
            refused = self._against_own(msg.job_id, line_of(delta))
            if refused:
                return SchedAck(False, refused)
            held.record = apply_delta(held.record, delta)
        except RecordGap as exc:
            return SchedAck(False, f"gap: {exc}")
        except Exception as exc:
            return SchedAck(False, f"bad delta: {type(exc).__name__}: {exc}"[:4096])
        held.coordinator = peer if delta.get("epoch", -1) == held.record.get("epoch") else held.coordinator
        held.size += len(msg.delta)
        return SchedAck(True)

    def _fence(self, job_id: str, line: tuple) -> None:
        """Remember the line of a job dropped here (a record left for room or for a newer line, a job stepped
        down from or forgotten): an older line of it is fenced off here, and a replica about to take it over
        learns of it (``LineQuery``). At most ``MAX_FENCES`` jobs, the oldest forgotten first."""
        if line > self.fences.get(job_id, (-1, -1)):
            self.fences[job_id] = line
        self.fences.move_to_end(job_id)
        while len(self.fences) > MAX_FENCES:
            self.fences.popitem(last=False)

    async def _on_line_query(self, peer: PeerId, msg: LineQuery) -> LineAnswer:
        """The newest line of the job known here: a record held, a line dropped and fenced, the job coordinated."""
        held, job = self.held.get(msg.job_id), self.jobs.get(msg.job_id)
        line = known_line(self.fences.get(msg.job_id), line_of(held.record) if held is not None else None,
                          (job.js.epoch, job.js.nonce) if job is not None else None)
        return LineAnswer(msg.job_id, *line)

    async def _take_overs(self, job_ids: list[str]) -> None:
        """Take these jobs over (each asks its other holders first), at most ``TAKEOVERS_AT_ONCE`` at once."""
        limit = trio.CapacityLimiter(TAKEOVERS_AT_ONCE)

        async def one(job_id: str) -> None:
            async with limit:
                try:
                    await self._take_over(job_id)
                except Exception:
                    self.stats["errors"] += 1
                    log.exception("taking job %s over failed (the service goes on)", job_id)

        async with trio.open_nursery() as nursery:
            for job_id in job_ids:
                nursery.start_soon(one, job_id)

    async def _take_over(self, job_id: str) -> None:
        """Take over a job held here whose coordinator died, unless another holder knows of a newer line."""
        held = self.held.get(job_id)
        if held is None or job_id in self.jobs or job_id in self._asking:
            return
        self._asking.add(job_id)
        try:
            go = await self._no_newer_line(job_id, held)
        finally:
            self._asking.discard(job_id)
        if go and self.held.get(job_id) is held and job_id not in self.jobs:   # no newer record came meanwhile
            del self.held[job_id]
            await self._take_over_now(job_id, held)

    async def _no_newer_line(self, job_id: str, held: _Replica) -> bool:
        """Ask the record's other live holders in parallel for the newest line they know of the job
        (``LineQuery``; lines.py decides) and wait ``takeover_query_s``: True to take over. A newer line means
        the job went on without this copy: it is dropped and that line fenced here (``takeovers_averted``).
        An answer that is no ``LineAnswer`` of this job is no answer (``line_answers_ignored``), nor is a
        holder that cannot be reached, times out or answers with a frame that does not decode (the transport
        drops it: ``line_queries_unanswered``)."""
        me = self.node.peer_id
        live = self._live()
        ask = TakeoverAsk.start(line_of(held.record), [p for p in held.replicas if p != me and p in live])
        wait = self.config.takeover_query_s

        async def one(peer: PeerId, scope: trio.CancelScope) -> None:
            try:
                reply = await self.node.transport.request(peer, LineQuery(job_id), wait)
            except Exception as exc:     # unreachable, a timeout, an answer that does not decode: no answer
                log.debug("line query of %s to %s: %s", job_id, peer.short, exc)
                ask.no_answer(peer)
                self.stats["line_queries_unanswered"] = self.stats.get("line_queries_unanswered", 0) + 1
                return
            bad = ask.bad
            line = (reply.epoch, reply.nonce) if isinstance(reply, LineAnswer) and reply.job_id == job_id else None
            if ask.answer(peer, line) == AVERT:
                scope.cancel()
            if ask.bad > bad:
                self.stats["line_answers_ignored"] = self.stats.get("line_answers_ignored", 0) + 1
                log.info("job %s: %s answered the line query with %s: ignored", job_id, peer.short,
                         type(reply).__name__)

        with trio.move_on_after(2 * wait + 1):          # each request ends by ``wait`` (its timeout): a backstop
            async with trio.open_nursery() as nursery:
                for peer in ask.asked:
                    nursery.start_soon(one, peer, nursery.cancel_scope)
                nursery.start_soon(trio.sleep, wait)       # the whole time: a newer record may come meanwhile
        if ask.verdict() != AVERT:
            return True
        if self.held.get(job_id) is held:
            del self.held[job_id]
        self._fence(job_id, ask.newest)
        self.stats["takeovers_averted"] = self.stats.get("takeovers_averted", 0) + 1
        log.warning("job %s: a holder knows of a newer line (epoch %d) than the record held here (epoch %d): "
                    "not taken over, the copy here is dropped", job_id, ask.newest[0], ask.held[0])
        return False

    async def _take_over_now(self, job_id: str, held: _Replica) -> None:
        now = trio.current_time()
        try:
            js = JobState.from_record(held.record, now, random.Random(self.rng.getrandbits(64)), self.config.job,
                                      self.verify_env())
        except PlanError as exc:
            log.warning("cannot take job %s over: %s", job_id, exc)
            return
        self.stats["takeovers"] += 1
        log.warning("coordinator %s of job %s died: taking it over (epoch %d)", held.coordinator.short, job_id,
                    js.epoch)
        held_results = js.hold_results()        # the job does not end before these are found (or run again)
        job = self._new_job(js, now)
        for t in js.plan.tasks:                 # fetching tasks need no inputs; dispatches bring them anew
            job.inputs[t.task_id] = ()
        self.jobs[job_id] = job
        async with job.lock:
            await self._carry(job, js.start(now))
        self._spawn(self._pull_results, job, held.coordinator, held_results)

    async def _pull_results(self, job: Any, gone: PeerId, tasks: list[str]) -> None:
        """After a takeover: bring here the results of ``tasks`` its old coordinator (``gone``) had fetched;
        each found is ``Fetched`` (the job's end waits for them: ``JobState.hold_results``). One that cannot
        be found (only the dead coordinator had it and its executor is gone too) is ``ResultLost``: the task
        runs again. When its executor is gone, the search is cut short (``lost_result_timeout_s``)."""
        from ..storage.cid import Cid
        from . import events as ev

        storage = self.node.services["storage"]
        live = {str(p) for p in self._live()} | {str(self.node.peer_id)}
        limit = trio.CapacityLimiter(8)

        async def pull(task: str, lease: str, cids: list[str], maker: str | None) -> None:
            timeout = self.config.fetch_timeout_s if maker in live else self.config.lost_result_timeout_s
            async with limit:
                try:
                    for cid in cids:
                        await storage.fetch(Cid.parse(cid), pin=True, timeout=timeout)
                except P2PComputeError as exc:
                    self.stats["results_lost"] = self.stats.get("results_lost", 0) + 1
                    log.warning("job %s: a result of %s is lost with coordinator %s: %s (it runs again)",
                                job.js.job_id, task, gone.short, exc)
                    await self._feed(job, ev.ResultLost(task, f"not found after the takeover: {exc}"[:4096]))
                    return
            for cid in cids:
                self._note(cid, str(self.node.peer_id))
            await self._feed(job, ev.Fetched(task, lease))

        async with trio.open_nursery() as nursery:
            for tid in tasks:
                t = job.js.tasks[tid]
                maker = next((a["peer"] for a in reversed(t.attempts) if a["outcome"] == "ok"), None)
                nursery.start_soon(pull, tid, t.accepted, sorted(t.outputs.values()), maker)


    async def _check_finished(self, job_id: str, gone: PeerId) -> None:
        """A job that ended ``done`` whose coordinator (``gone``) died, held here as its closest live replica:
        its outputs are pulled here and pinned (its results outlive their coordinator). An output found
        nowhere (only the dead coordinator held it, and its maker is gone too or lost it) reopens the job:
        it is taken over and ``ResultLost`` runs again the task that made it, and, found nowhere either,
        the results that task read (top-down, as job_state.py needs), instead of the user getting a CID
        nobody can serve. At most four jobs are checked at once."""
        checks = self.__dict__.setdefault("_finished_checks", trio.CapacityLimiter(4))   # jobs checked at once
        async with checks:
            await self._check_finished_now(job_id, gone)

    async def _check_finished_now(self, job_id: str, gone: PeerId) -> None:
        from ..storage.cid import Cid
        from . import events as ev

        held = self.held.get(job_id)
        if held is None or held.record.get("state") != "done":
            return
        try:
            plan = JobPlan.from_wire(held.record["plan"])
            rows = {t["id"]: t for t in held.record["tasks"]}
        except (PlanError, KeyError, TypeError) as exc:
            log.warning("cannot check the results of job %s: %s", job_id, exc)
            return
        reads = {t.task_id: [i.task for i in t.inputs if i.task] for t in plan.tasks}
        storage = self.node.services["storage"]
        live = {str(p) for p in self._live()} | {str(self.node.peer_id)}
        limit = trio.CapacityLimiter(8)
        lost: dict[str, str] = {}

        async def pull(tid: str) -> None:
            row = rows[tid]
            maker = next((a.get("peer") for a in reversed(row["attempts"]) if a.get("outcome") == "ok"), None)
            timeout = self.config.fetch_timeout_s if maker in live else self.config.lost_result_timeout_s
            async with limit:
                try:
                    for cid in sorted(row["outputs"].values()):
                        await storage.fetch(Cid.parse(cid), pin=True, timeout=timeout)
                except (P2PComputeError, ValueError) as exc:
                    lost[tid] = str(exc)[:1024]
                    return
            for cid in row["outputs"].values():
                self._note(cid, str(self.node.peer_id))

        checked: set[str] = set()
        order: list[str] = []
        level = list(dict.fromkeys(tid for tid, _ in plan.outputs))
        while level:
            level = [t for t in level if t not in checked and t in rows and rows[t].get("state") == "done"
                     and rows[t].get("outputs")]
            checked.update(level)
            async with trio.open_nursery() as nursery:
                for tid in level:
                    nursery.start_soon(pull, tid)
            now_lost = [t for t in level if t in lost]
            order += now_lost
            level = list(dict.fromkeys(d for t in now_lost for d in reads[t]))
        if not order:
            return
        if job_id in self.jobs or self.held.get(job_id) is not held:
            return                         # taken over meanwhile (or replaced by a newer record)
        log.warning("job %s ended done, but %d of its results were held only by its coordinator %s, which died: "
                    "it reopens here and runs %s again", job_id, len(order), gone.short, ", ".join(order[:5]))
        await self._take_over(job_id)
        job = self.jobs.get(job_id)
        if job is None:
            return
        js = job.js
        job.report = ev.Report(job_id, js.state, js.progress(), js.reason, js.outputs())   # replicated: shown
        self.stats["reopened"] = self.stats.get("reopened", 0) + 1
        for tid in order:
            await self._feed(job, ev.ResultLost(tid, f"not found after coordinator {gone.short} died: {lost[tid]}"))


def _fenced(held: dict) -> str:
    return f"fenced: a newer coordinator's record of this job is held (epoch {line_of(held)[0]})"
