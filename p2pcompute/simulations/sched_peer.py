"""One simulated peer's scheduler: the coordinator, replica and executor sides of the real state machines.

Theory of operation
-------------------
A ``SchedPeer`` sits next to a ``SimPeer`` of the cluster (cluster.py) and
drives the scheduler's pure state machines exactly as the trio driver will:

* *Coordinator.* One ``JobState`` per job it coordinates. ``Dispatch``es of
  one ``handle`` go to ``Placement`` as one batch, with candidates from this
  peer's membership view (alive members and their capability records, and
  itself) and provider hints from the scenario (where each input file and
  each finished output is); the oracle gets the exact live peers and queues
  instead. Offers, grants, revokes and fetches become messages.
* *Replication.* ``Replicate`` marks the job dirty; at most
  ``replicate_delay`` later the changes go to the job's k replicas (the k
  peers of this view closest to the job ID: ``replicas.closest``, as the
  trio service picks them): a full record to a new or
  lagging replica, then deltas. A replica applies them (``apply_delta``) and
  acks full records and the job's end; a ``RecordGap`` asks for the full
  record. A ``Report`` that ends the job is flushed at once and carried out
  only once a replica acked a version at least that of the ``Replicate``
  before it (job_state.py's rule); until then the flush repeats every
  ``replicate_retry_s``. Then the replicas are told to forget the job (and
  drop an ended record ``keep_ended_s`` after it came anyway: the
  coordinator, if alive, repeats it until acked).
  An ack names the record's line (epoch, nonce): a replica keeps the higher
  line (a newer epoch; between two replicas that both took over, the
  higher nonce), and a coordinator that hears of a higher line than its own
  was replaced (declared dead while alive, or a sibling) and drops the job,
  reporting nothing. A record for a job this peer coordinates is judged the
  same way (the trio service's ``_against_own``). A peer that drops a record
  (left out by a newer line, told to forget, ended and kept long enough) or
  ends a job it coordinates remembers the line for ``fence_keep_s``, so that
  an older line (two replicas that both took over: a peer that joined lately
  may not yet know the other is alive) is fenced off there rather than
  acked, and no copy of another line lingers to be taken over after the end.
* *Takeover.* When this peer's membership declares a job's coordinator dead
  and this peer is the first replica of the record's list still alive in
  its view, it resumes the job with ``JobState.from_record`` and ``start``,
  picks its own replicas and sends them the full record. The r-th live
  replica waits r · ``takeover_wait_s`` and takes over only if no newer
  record came meanwhile (the first may not hold the record, or be dead
  unnoticed). Before any takeover the replica asks the record's other live
  holders for the newest line they know of the job (``line?``: a record held,
  a line dropped and fenced, the job coordinated there) and waits
  ``takeover_query_s`` (lines.py's ``TakeoverAsk`` decides, as in the trio
  service's replication.py): a newer line means the job was taken over already (and
  may have ended and been forgotten), so its copy is dropped and fenced
  (``takeovers_averted``) instead of run to its end a second time. The new coordinator sends the full record to the old replicas
  it did not choose, too: a record whose replica list leaves this peer out
  makes it drop its copy, so that it never takes over a second time.
* *Executor.* ``ExecutorLeases`` holds reservations and slots. A granted task
  "runs" for the duration the scenario gives it, plus the time to pull its
  inputs when this peer does not hold them; then the result (outputs as
  CIDs) goes back and the coordinator's fetch is answered after the transfer
  time. A revoke from a peer other than the offer's coordinator is taken
  when that coordinator is dead in this view (the job's new coordinator
  speaks for it: ``ExecutorLeases`` itself only knows the first).

Messages go through ``world.send`` (the cluster's link model: latency, loss
as a stream retransmission, rare outright drops, nothing reaches a crashed
peer). Timers are engine entries cancelled lazily.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from ..gossip.messages import DEAD
from ..scheduler import events as ev
from ..scheduler import leases as lx
from ..scheduler.job_record import RecordGap, apply_delta
from ..scheduler.job_state import JobState
from ..scheduler.lines import AVERT, TAKE_OVER, TakeoverAsk, known_line
from ..scheduler.model import PlanError
from ..scheduler.placement import Candidate, Placement, PlacementConfig
from ..scheduler.replicas import closest, pick
from ..scheduler.verification.replicated import BanPeer, LoadTensors

FINAL = ("done", "failed", "cancelled")


@dataclass
class Coordinated:
    """A job this peer coordinates."""

    js: JobState
    replicas: list = field(default_factory=list)
    synced: dict = field(default_factory=dict)       # replica -> version it acked (-1: needs the full record)
    flush_at: float | None = None
    final: tuple | None = None                        # (version, Report[, again]) waiting for a replica's ack
    timer_at: float | None = None
    fetches: dict = field(default_factory=dict)       # (task, lease) -> fetch generation
    waiting: dict = field(default_factory=dict)       # replica -> when the oldest send it has not acked went
    passed: dict = field(default_factory=dict)        # member -> when it was passed over as a replica (silent)
    checking: bool = False                            # a silence check is scheduled


@dataclass
class Held:
    """A job record this peer keeps as a replica."""

    record: dict
    coordinator: Any
    replicas: list


class SchedPeer:
    """The scheduler side of one simulated peer (see the module doc)."""

    def __init__(self, world: Any, peer: Any, rng: random.Random) -> None:
        self.world, self.peer, self.id, self.rng = world, peer, peer.id, rng
        s = world.s
        self.placement = Placement(random.Random(rng.getrandbits(64)), PlacementConfig(
            mode=s.placement, locality_weight=s.locality_weight, holders_only_share=s.holders_only_share,
            busy_holders_move=s.busy_holders_move))
        self.ex = lx.ExecutorLeases(lx.ExecutorConfig(slots=s.slots, max_queued=s.max_queued,
                                                      heartbeat_s=s.job_config.lease_s / 3))
        self.ex_timer: float | None = None
        self.jobs: dict[str, Coordinated] = {}
        self.held: dict[str, Held] = {}
        self.fences: dict[str, tuple] = {}             # job -> the line of a record dropped here (a while)
        self.asking: dict[str, tuple] = {}             # job -> (TakeoverAsk, Held): the other holders asked (lines.py)
        self.runs: dict[tuple[str, str], tuple[str, Any, float, bool]] = {}   # (job, lease) -> task, coord, end, local
        self._cands: list[Candidate] | None = None
        self._room: tuple | None = None                    # (the candidates it was made from, peer -> a free slot)
        self.verify_env = world.trust.env(self)             # this peer's ledger, shared by its jobs (trust.py)

    # --- membership -------------------------------------------------------------------------

    def view_changed(self) -> None:
        self._cands = None

    def alive(self, pid: Any) -> bool:
        """Not declared dead (alive or suspect) in this peer's view."""
        state = self.peer.membership.state_of(pid)
        return pid == self.id or (state is not None and state < DEAD)

    def member_died(self, pid: Any) -> None:
        self._cands = None
        now = self.world.now
        self._ex(self.ex.handle(lx.CoordinatorDied(pid), now))
        for job_id in list(self.jobs):
            c = self.jobs.get(job_id)
            if c is None:
                continue
            if pid in c.replicas:
                self._pick_replicas(c)
                self._schedule_flush(c, now)
            self._feed(c, ev.MemberDied(pid))
        for job_id in list(self.held):
            self._maybe_take_over(job_id)

    def has_room(self, peer: Any) -> bool:
        """A free slot at ``peer`` by the capability records this peer sees (trust.py's crew offers)."""
        if self._room is None or self._room[0] is not self._cands:
            self._room = (self.candidates(), {c.peer: c.free_slots > 0 for c in self.candidates()})
        return self._room[1].get(peer, False)

    def candidates(self) -> list[Candidate]:
        if self.world.s.placement == "oracle":
            return self.world.oracle_candidates()
        if self._cands is None:
            m = self.peer.membership
            cands = [self.world.own_candidate(self)]
            for pid in m.alive_members():
                member = m.member(pid)
                if member is not None and member.record is not None:
                    cands.append(Candidate.from_record(member.record))
            cands.sort(key=lambda c: self.world.index_of(c.peer))
            self._cands = cands
        return self._cands

    # --- coordinator ---------------------------------------------------------------------------

    def submit(self, plan: Any, epoch: int = 0) -> None:
        """``epoch``: where the job's line starts (a resubmission starts above every line of the earlier
        submissions, whose fences may outlive them)."""
        now = self.world.now
        js = JobState(plan, now, random.Random(self.rng.getrandbits(64)), self.world.s.job_config, self.verify_env)
        js.epoch = epoch
        c = Coordinated(js)
        self.jobs[plan.job_id] = c
        self._pick_replicas(c)
        self._commands(c, js.start(now))
        self._flush(c.js.job_id, None)

    def _pick_replicas(self, c: Coordinated) -> None:
        s, now = self.world.s, self.world.now
        if c.passed:
            c.passed = {p: t for p, t in c.passed.items() if now - t < s.replica_passed_s}
        keep = pick(c.js.job_id, self.peer.membership.alive_members(), s.replicas, c.passed)
        for p in c.replicas:                  # a replica left out (a closer peer joined) forgets the job
            if p not in keep:
                self.world.send(self, p, "forget", (c.js.job_id, c.js.epoch))
        for p in keep:
            if p not in c.synced:
                c.synced[p] = -1
        c.replicas = keep
        c.synced = {p: v for p, v in c.synced.items() if p in keep}
        c.waiting = {p: t for p, t in c.waiting.items() if p in keep}

    def _check_silence(self, job: str, _: Any) -> None:
        """Replicas that did not ack a record sent ``replica_silence_s`` ago are passed over (replicas.pick)."""
        c = self.jobs.get(job)
        if c is None or not self.peer.alive:
            return
        c.checking = False
        w = self.world
        silent = [p for p, t in c.waiting.items() if w.now - t >= w.s.replica_silence_s]
        if silent:
            for p in silent:
                c.passed[p] = w.now
            self._pick_replicas(c)
            self._flush(job, None)
        elif c.waiting:
            self._watch(c)

    def _watch(self, c: Coordinated) -> None:
        if not c.checking:
            c.checking = True
            w = self.world
            w.engine.after(w.s.replica_silence_s, self._check_silence, c.js.job_id, None)

    def _feed(self, c: Coordinated, event: Any) -> None:
        if c.js.job_id in self.jobs:
            self._commands(c, c.js.handle(event, self.world.now))

    def _commands(self, c: Coordinated, cmds: list) -> None:
        w, now, job = self.world, self.world.now, c.js.job_id
        dispatches = []
        for cmd in cmds:
            kind = type(cmd)
            if kind is ev.Dispatch:
                dispatches.append(cmd)
            elif kind is ev.SendOffer:
                w.send(self, cmd.peer, "offer", (job, cmd.task, cmd.lease_id, cmd.deadline))
            elif kind is ev.GrantLease:
                w.send(self, cmd.peer, "grant", (job, cmd.task, cmd.lease_id, cmd.expires))
            elif kind is ev.Revoke:
                w.send(self, cmd.peer, "revoke", (job, cmd.task, cmd.lease_id, cmd.reason))
            elif kind is ev.FetchResult:
                gen = c.fetches.get((cmd.task, cmd.lease_id), 0) + 1
                c.fetches[cmd.task, cmd.lease_id] = gen
                w.send(self, cmd.peer, "fetch", (job, cmd.task, cmd.lease_id, cmd.cids))
                w.engine.after(w.s.fetch_timeout_s, self._fetch_timeout, (job, cmd.task, cmd.lease_id), gen)
            elif kind is ev.Replicate:
                self._schedule_flush(c, now)
            elif kind is ev.Report:
                if cmd.kind in FINAL:             # the end goes to the replicas at once
                    c.final = (c.js.version, cmd)
                    c.flush_at = now
                    w.engine.at(now, self._flush, job, now)
            elif kind is ev.SetTimer:
                if c.timer_at != cmd.at:
                    c.timer_at = cmd.at
                    w.engine.at(cmd.at, self._job_timer, job, cmd.at)
            elif kind is ev.Refused:
                w.refused(cmd.reason)
            elif kind is BanPeer:
                w.trust.ban(self, cmd)
            elif kind is LoadTensors:
                w.trust.load(self, c, cmd)
        if dispatches:
            placed = self.placement.place(dispatches, self.candidates(), w.providers_for(dispatches))
            for p in placed:
                self._feed(c, p)

    def _job_timer(self, job: str, at: float) -> None:
        c = self.jobs.get(job)
        if c is not None and self.peer.alive and c.timer_at == at:
            c.timer_at = None
            self._feed(c, ev.Tick())

    def _fetch_timeout(self, key: tuple, gen: int) -> None:
        job, task, lease = key
        c = self.jobs.get(job)
        if c is not None and self.peer.alive and c.fetches.get((task, lease)) == gen:
            del c.fetches[task, lease]
            self._feed(c, ev.FetchFailed(task, lease, "no answer to the fetch"))

    def _schedule_flush(self, c: Coordinated, now: float) -> None:
        if c.flush_at is None:
            c.flush_at = now + self.world.s.replicate_delay
            self.world.engine.at(c.flush_at, self._flush, c.js.job_id, c.flush_at)

    def _flush(self, job: str, token: float | None) -> None:
        c = self.jobs.get(job)
        if c is None or not self.peer.alive or (token is not None and c.flush_at != token):
            return
        c.flush_at = None
        js, w = c.js, self.world
        if len(c.replicas) < w.s.replicas:       # fewer than k known when last picked (a peer that had just joined)
            self._pick_replicas(c)
        delta = js.delta()
        full = None
        ended = js.state != "running"
        for p in c.replicas:
            if c.synced.get(p, -1) < 0:
                full = full if full is not None else js.to_record()
                w.send(self, p, "record", (job, full, c.replicas))
                c.waiting.setdefault(p, w.now)
            else:
                w.send(self, p, "delta", (job, delta, c.replicas))
                if ended:                      # a delta of a running job is not acked (a gap is)
                    c.waiting.setdefault(p, w.now)
        if c.waiting:
            self._watch(c)
        if c.final is not None or not c.replicas:
            self._release(c)
            if c.final is not None:            # not acked yet: send again until a replica has it
                c.flush_at = w.now + w.s.replicate_retry_s
                w.engine.at(c.flush_at, self._flush, job, c.flush_at)
                for p in c.replicas:
                    c.synced[p] = -1

    def _release(self, c: Coordinated) -> None:
        """Carry out the final report once a replica holds a version at least as new (or none can)."""
        if c.final is None:
            return
        version, report = c.final[:2]
        if any(v >= version for v in c.synced.values()) or not c.replicas:
            again = len(c.final) > 2
            c.final = None
            self.world.job_reported(self, c.js, report, again)
            del self.jobs[c.js.job_id]
            self.held.pop(c.js.job_id, None)          # no copy of another line lingers here to take over
            self._fence(c.js.job_id, (c.js.epoch, c.js.nonce))
            for p in c.replicas:                  # the submitter knows: the replicas may forget the job
                self.world.send(self, p, "forget", (c.js.job_id, c.js.epoch))

    def on_ack(self, src: Any, job: str, version: int, gap: bool, line: tuple) -> None:
        c = self.jobs.get(job)
        if c is None or src not in c.synced:
            return
        c.waiting.pop(src, None)
        if not gap and line != (c.js.epoch, c.js.nonce):
            if line > (c.js.epoch, c.js.nonce):   # another coordinator's line won: we are fenced off
                del self.jobs[job]
                self.world.fenced()
            return
        c.synced[src] = -1 if gap else max(c.synced[src], version)
        if gap:
            self._schedule_flush(c, self.world.now)
        self._release(c)

    # --- replica ---------------------------------------------------------------------------------

    def on_record(self, src: Any, job: str, body: dict, replicas: list, full: bool) -> None:
        """A full record or a delta from a coordinator. Of two lines (epoch, nonce), the higher one wins:
        a sender of a lower line is answered with ours, which fences it off (``on_ack``)."""
        held = self.held.get(job)
        w = self.world
        try:
            line = (int(body["epoch"]), int(body["nonce"]))
            mine = (held.record["epoch"], held.record["nonce"]) if held is not None else self.fences.get(job, (-1, -1))
            if held is None and mine > line:       # dropped here for a newer line: the sender's is fenced off
                w.send(self, src, "ack", (job, -1, False, mine))
                return
            c = self.jobs.get(job)
            if c is not None:                      # this peer coordinates the job too: the higher line wins
                own = (c.js.epoch, c.js.nonce)
                if own > line:
                    w.send(self, src, "ack", (job, -1, False, own))
                    return
                if own < line:
                    del self.jobs[job]
                    w.fenced()
            if mine > line:
                w.send(self, src, "ack", (job, held.record["version"], False, mine))
                return
            if full:
                record = held.record if held is not None and mine == line and held.record["version"] > body["version"] else body
            elif mine < line or held is None:
                raise RecordGap("no record of this line held")
            else:
                record = apply_delta(held.record, body)
        except RecordGap:
            w.send(self, src, "ack", (job, -1, True, ()))
            return
        except (PlanError, KeyError, TypeError, ValueError) as e:
            w.refused(f"record: {e}")
            return
        if self.id not in replicas:           # a newer coordinator chose other replicas: forget the job
            self.held.pop(job, None)
            self._fence(job, line)
            return
        self.held[job] = Held(record, src, list(replicas))
        if full or record["state"] != "running":   # a delta of a running job needs no ack: a gap says it
            w.send(self, src, "ack", (job, record["version"], False, line))
        if record["state"] != "running":           # ended: kept a while in case the ack or "forget" is lost
            w.engine.after(w.s.keep_ended_s, self._drop_ended, job, record)

    def _drop_ended(self, job: str, record: dict) -> None:
        h = self.held.get(job)
        if h is not None and h.record is record:
            del self.held[job]
            self._fence(job, (record["epoch"], record["nonce"]))

    def _fence(self, job: str, line: tuple) -> None:
        """Remember a dropped record's line for ``fence_keep_s``, so that an older line of the job (a coordinator
        replaced while alive, still running it) is fenced off here rather than acked as a new record: as the
        trio service does, which keeps the records it holds until it needs their room."""
        if line > self.fences.get(job, (-1, -1)):
            self.fences[job] = line
            w = self.world
            w.engine.after(w.s.fence_keep_s, self._unfence, job, line)

    def _unfence(self, job: str, line: tuple) -> None:
        if self.fences.get(job) == line:
            del self.fences[job]

    def _take_over_late(self, job: str, seen: tuple) -> None:
        h = self.held.get(job)
        if self.peer.alive and h is not None and (h.record["epoch"], h.coordinator) == seen:
            self._maybe_take_over(job, force=True)   # nobody sent a newer record: the first did not take over

    def _maybe_take_over(self, job: str, force: bool = False) -> None:
        h = self.held.get(job)
        if h is None or self.alive(h.coordinator) or job in self.jobs:
            return
        alive = closest(job, [p for p in h.replicas if self.alive(p)], len(h.replicas))   # successor() first
        if self.id not in alive:
            return
        rank = alive.index(self.id)
        w = self.world
        if rank > 0 and not force:        # the first live replica takes over; the next ones, later, if not
            w.engine.after(w.s.takeover_wait_s * rank, self._take_over_late, job, (h.record["epoch"], h.coordinator))
            return
        if job in self.asking:
            return
        line = (h.record["epoch"], h.record["nonce"])
        asked = [p for p in h.replicas if p != self.id and self.alive(p)]
        ask = TakeoverAsk.start(line, asked)     # first: does another holder know of a newer line? (lines.py)
        self.asking[job] = (ask, h)
        for p in asked:
            w.send(self, p, "line?", (job,))
        w.engine.after(w.s.takeover_query_s, self._asked, job, ask)

    def on_line(self, src: Any, job: str, line: tuple) -> None:
        """Another holder's answer to ``line?`` (``TakeoverAsk``): a newer line than the record held here means
        the job was taken over (and maybe ended) already: the copy here is dropped and fenced, never taken
        over."""
        asking = self.asking.get(job)
        if asking is None:
            return
        ask, h = asking
        if ask.answer(src, line) != AVERT:
            return
        del self.asking[job]
        now = self.held.get(job)
        if now is not None and (now.record["epoch"], now.record["nonce"]) < ask.newest:
            del self.held[job]
        self._fence(job, ask.newest)
        self.world.averted()

    def best_line(self, job: str) -> tuple:
        """The newest line of ``job`` known here: a record held, a line dropped (fenced), the job coordinated."""
        h, c = self.held.get(job), self.jobs.get(job)
        return known_line(self.fences.get(job), (h.record["epoch"], h.record["nonce"]) if h is not None else None,
                          (c.js.epoch, c.js.nonce) if c is not None else None)

    def _asked(self, job: str, ask: TakeoverAsk) -> None:
        asking = self.asking.get(job)
        if asking is None or asking[0] is not ask:
            return
        del self.asking[job]                     # the time allowed is over: no newer line was answered
        h = asking[1]
        if (ask.verdict() == TAKE_OVER and self.peer.alive and self.held.get(job) is h
                and not self.alive(h.coordinator) and job not in self.jobs):
            self._take_over_now(job, h)

    def _take_over_now(self, job: str, h: Held) -> None:
        del self.held[job]
        w = self.world
        record = w.copy_record(h.record)
        js = JobState.from_record(record, w.now, random.Random(self.rng.getrandbits(64)), w.s.job_config,
                                  self.verify_env)
        c = Coordinated(js)
        self.jobs[job] = c
        w.took_over(self, js)
        self._pick_replicas(c)
        cmds = js.start(w.now)
        if js.state in FINAL:                 # ended before its coordinator died: say so again (same outcome)
            c.final = (js.version, ev.Report(job, js.state, js.progress(), js.reason, js.outputs()), True)
        self._commands(c, cmds)
        self._flush(job, None)
        full = None
        for p in h.replicas:                  # the record's other replicas learn who leads now, and drop it
            if p not in c.replicas and p != self.id and self.alive(p):
                full = full if full is not None else js.to_record()
                w.send(self, p, "record", (job, full, c.replicas))

    # --- executor --------------------------------------------------------------------------------

    def _ex(self, cmds: list) -> None:
        w, now = self.world, self.world.now
        for cmd in cmds:
            kind = type(cmd)
            if kind is lx.Accept:
                w.send(self, cmd.coordinator, "accept", (cmd.job_id, cmd.task, cmd.lease_id))
            elif kind is lx.Decline:
                w.send(self, cmd.coordinator, "failed", (cmd.job_id, cmd.task, cmd.lease_id, ev.REJECTED, cmd.reason))
            elif kind is lx.Run:
                duration, local = w.run_time(self, cmd.job_id, cmd.task)
                end = now + duration
                self.runs[cmd.job_id, cmd.lease_id] = (cmd.task, cmd.coordinator, end, local)
                w.engine.at(end, self._run_done, (cmd.job_id, cmd.lease_id), end)
            elif kind is lx.Stop:
                self.runs.pop((cmd.job_id, cmd.lease_id), None)
            elif kind is lx.SendHeartbeat:
                w.send(self, cmd.coordinator, "heartbeat", (cmd.job_id, cmd.task, cmd.lease_id))
            elif kind is ev.SetTimer:
                if self.ex_timer != cmd.at:
                    self.ex_timer = cmd.at
                    w.engine.at(cmd.at, self._ex_wake, cmd.at, None)
            elif kind is ev.Refused:
                w.refused(cmd.reason)

    def _ex_wake(self, at: float, _: Any) -> None:
        if self.peer.alive and self.ex_timer == at:
            self.ex_timer = None
            self._ex(self.ex.handle(lx.Wake(), self.world.now))

    def _run_done(self, key: tuple, end: float) -> None:
        run = self.runs.get(key)
        if not self.peer.alive or run is None or run[2] != end:
            return
        del self.runs[key]
        job, lease = key
        task, coordinator, _, local = run
        w = self.world
        failure = w.attempt_fails(job, task)
        if failure:
            w.send(self, coordinator, "failed", (job, task, lease, ev.CRASH, failure))
        else:
            cid = w.output_made(self, job, task, lease, local)
            w.send(self, coordinator, "result", (job, task, lease, {"out": cid}, {"out": w.s.output_bytes}))
        self._ex(self.ex.handle(lx.Ended(job, lease), w.now))

    # --- messages in ---------------------------------------------------------------------------

    def receive(self, src: Any, kind: str, body: tuple) -> None:
        now, w = self.world.now, self.world
        if kind == "offer":
            job, task, lease, deadline = body
            self._ex(self.ex.handle(lx.Offer(job, task, src, lease, deadline), now))
        elif kind == "grant":
            job, task, lease, expires = body
            self._ex(self.ex.handle(lx.Grant(job, task, src, lease, expires), now))
        elif kind == "revoke":
            job, task, lease, reason = body
            run = self.runs.get((job, lease))
            coordinator = src
            if run is not None and run[1] != src and not self.alive(run[1]):
                coordinator = run[1]          # the job's new coordinator stops the old one's run
            self._ex(self.ex.handle(lx.Revoked(job, coordinator, lease, reason), now))
        elif kind == "fetch":
            job, task, lease, cids = body
            if not w.trust.lazy(self):                 # a lazy liar has nothing to serve (trust.py)
                w.send(self, src, "fetched", (job, task, lease), delay=w.s.output_bytes / w.s.bandwidth)
        elif kind in ("record", "delta"):
            job, record, replicas = body
            self.on_record(src, job, record, replicas, kind == "record")
        elif kind == "forget":
            job, epoch = body
            h = self.held.get(job)
            if h is not None and h.record["epoch"] <= epoch:
                del self.held[job]
                self._fence(job, (h.record["epoch"], h.record["nonce"]))
        elif kind == "ack":
            job, version, gap, line = body
            self.on_ack(src, job, version, gap, line)
        elif kind == "line?":
            w.send(self, src, "line", (body[0], self.best_line(body[0])))
        elif kind == "line":
            self.on_line(src, *body)
        else:
            job = body[0]
            c = self.jobs.get(job)
            if c is None:
                w.stale(kind)
                return
            if kind == "accept":
                self._feed(c, ev.OfferAccepted(body[1], src, body[2]))
            elif kind == "heartbeat":
                self._feed(c, ev.Heartbeat(body[1], src, body[2]))
            elif kind == "result":
                _, task, lease, outputs, sizes = body
                self._feed(c, ev.ResultReady(task, src, lease, outputs, {}, sizes))
            elif kind == "failed":
                _, task, lease, fkind, message = body
                self._feed(c, ev.TaskFailed(task, src, lease, fkind, message))
            elif kind == "fetched":
                _, task, lease = body
                if c.fetches.pop((task, lease), None) is not None:
                    self._feed(c, ev.Fetched(task, lease))

    def own_load(self) -> tuple[int, float]:
        ex = self.ex
        return ex.free_slots(), (ex.busy() + ex.queued()) / max(1, ex.slots)
