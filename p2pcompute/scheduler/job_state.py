"""One job as its coordinator runs it: a pure state machine, events and ``now`` in, commands out.

Theory of operation
-------------------
*The DAG.* A task is ready once every task it depends on (``deps`` and the
tasks whose outputs are its inputs) is done. If one of them was skipped it is
skipped too; if it has a ``Condition``, the condition is evaluated on its
dependency's inline outputs: false skips it, an output missing or not a
number fails it (the job's fault). The job is done when every task is done or
skipped; it fails as soon as one task fails (the rest are cancelled).

*Dispatch.* Ready tasks, oldest first, become ``Dispatch`` commands (at most
``max_in_flight`` tasks placing or offered at once: the bound on queued
offers). Placement answers ``Placed(task, peers)``; each peer gets an offer
with its own lease id. The first ``OfferAccepted`` wins and gets
``GrantLease``; the other offers are revoked (late binding). No peer now:
the task waits for room, oldest first: ``Room(n)`` (the driver saw offers
answered, so reservations freed up) places the ``n`` oldest waiting again at
once; without one it asks again after ``placement_retry_s``, and fails with
placement's reason once it has waited ``placement_timeout_s``. Offers lapse after
``offer_timeout_s``; a task whose offers all lapsed or were refused is queued
again (not charged; at most ``max_declines`` times).

*Leases.* A lease lapses ``lease_s`` after its grant or last heartbeat.
The death of the running peer (membership declared it dead) is not the
task's fault: the task goes back at once, away from that peer, and is not
charged; it fails only after ``max_lost`` such losses (churn that eats every
run). Expiry, a crash, a timeout, a resource limit, a program
failure, a missing input or an unfetchable result is a *charged* failure:
the task goes back with exponential backoff (``RetryPolicy``, jitter ×0.5–1)
and placement is told to avoid the peers that failed it. The same failure
(kind and message, of an executor's own report) on ``same_failure_peers``
distinct peers is the job's fault: the task fails at once with that reason.
More than ``retries`` charged failures: the task and the job fail, with every
attempt's reason.

*Results, and the rule that no result is taken twice.* Only a
``ResultReady`` for the task's current lease from that lease's peer, while
the task runs, is taken: the task moves to ``fetching`` (outputs as CIDs are
pulled and pinned by the driver; inline-only results skip this) and then to
``done`` once, at ``Fetched``. Any other result is not taken and is counted:
``duplicate_results`` (the lease whose result was taken already),
``stale_results`` (a lease of ours that is no longer current: lapsed,
revoked, lost to another peer; or another coordinator's of this job, even
one issued after the record we took over from), or refused (a lease of our
own we never issued to that peer). A heartbeat or accept on a stale lease
is answered with ``Revoke``, so that its executor frees the slot.
The job record carries the epoch of its coordinator; lease ids are
``"<epoch>.<nonce>.<n>"``, the nonce drawn by each coordinator, so that two
replicas taking over from the same record (or a stale one) never issue the
same lease id. A replica that takes over (``from_record`` then
``start``) begins the next epoch: it revokes every offer and lease of the
record's placing, offered and running tasks and queues them again, not
charged; ``fetching`` tasks fetch again from the same lease. So in one line
of records a task becomes ``done`` once (or again, as a new result, if its
outputs turn out lost: ``ResultLost``, when only the dead coordinator had
fetched them and their executor is gone; then what reads them waits for the
new run; the trio service holds the job's end until every done task's
outputs were found again: ``hold_results``; a job that ended ``done`` reopens
on a ``ResultLost``: its successor found a job output nowhere). A ``done`` the dead coordinator
never replicated is lost with it and the task runs again. So the driver
must have a version acknowledged by a replica before it carries out a
``Report`` that follows that version's ``Replicate`` (they come in that
order): nothing the submitter was told is lost, no result it was told of is
taken twice.
(Two coordinators that both believe they lead, across a partition, could
each take a result: fencing them is the replication layer's job.)

*Record and stories.* ``version`` rises by one per ``handle`` that changed
anything, followed by ``Replicate(version)``; the replicas get ``to_record``
once, then ``delta``s (job_record.py). Each task keeps its ``story`` (now,
stimulus, old state, new state), as dask's worker state machine does; it is
not in the record (a takeover starts it afresh, attempts carry over).
Hostile input (a result for someone else's lease, a malformed result, an
unknown task) becomes ``Refused`` and a counter, never an exception.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter, deque
from typing import Any

from . import events as ev
from . import job_record
from .events import JobConfig
from .model import JobPlan, PlanError
from .task_run import (ACTIVE, CANCELLED, DONE, FAILED, FETCHING, OFFERED, PLACING, READY, RUNNING, SKIPPED,
                       TERMINAL, WAITING, TaskRun, check_result)

SAME_RULE_KINDS = frozenset({ev.CRASH, ev.TIMEOUT, ev.RESOURCE_EXCEEDED, ev.FAILED, ev.INPUT_NOT_FOUND})


class JobState:
    """The coordinator's state machine for one job. Call ``start(now)`` once, then ``handle(event, now)``."""

    def __init__(self, plan: JobPlan, now: float, rng: random.Random, config: JobConfig | None = None) -> None:
        plan.check()
        self.plan = plan
        self.job_id = plan.job_id
        self.config = config or JobConfig()
        self.rng = rng
        self.state = "running"          # running | done | failed | cancelled
        self.reason = ""
        self.version = 0
        self.epoch = 0
        self.nonce = rng.getrandbits(32)
        self.created = now
        self.stats: Counter = Counter()
        self.tasks: dict[str, TaskRun] = {t.task_id: TaskRun(t, self.config.story_len) for t in plan.tasks}
        self.counts: Counter = Counter({WAITING: len(self.tasks)})
        self._dependents: dict[str, list[str]] = {tid: [] for tid in self.tasks}
        self._deps: dict[str, tuple[str, ...]] = {}
        self._needs: dict[str, set[str]] = {tid: set() for tid in self.tasks}      # output CIDs consumers need
        self._needs_inline: dict[str, set[str]] = {tid: set() for tid in self.tasks}
        for t in plan.tasks:
            deps = tuple(dict.fromkeys((*t.deps, *(i.task for i in t.inputs if i.task))))
            self._deps[t.task_id] = deps
            self.tasks[t.task_id].pending = len(deps)
            for d in deps:
                self._dependents[d].append(t.task_id)
            for i in t.inputs:
                if i.task:
                    self._needs[i.task].add(i.output or i.name)
            if t.condition:
                self._needs_inline[t.condition.task].add(t.condition.output)
        for tid, out in plan.outputs:
            self._needs[tid].add(out)
        self._seq = 0
        self._heap: list[tuple[float, int, str, str, Any]] = []   # (when, seq, kind, task, lease or gen)
        self._ready: deque[str] = deque()
        self._waiting_room: dict[str, None] = {}  # tasks no peer had room for, oldest first (Room)
        self._dirty = False
        self._started = False
        self._reported_end = False
        self._timer: float | None = None
        self._resume: list[ev.Command] = []     # revokes and fetches a takeover owes (from_record)
        self._unconfirmed: set[str] = set()      # done tasks whose outputs a takeover must find (hold_results)
        self._changed: set[str] = set()          # tasks changed since the last delta()
        self._delta_base = 0                     # the version the last delta() carried

    @property
    def _lease_prefix(self) -> str:
        return f"{self.epoch}.{self.nonce:08x}."

    # --- entry points ---------------------------------------------------------------------------

    def start(self, now: float) -> list[ev.Command]:
        """Begin (or, after ``from_record``, resume) the job: the first dispatches, replicate, report."""
        if self._started:
            raise RuntimeError("JobState.start called twice")
        self._started = True
        out: list[ev.Command] = list(self._resume)
        self._resume.clear()
        if self.state == "running":
            self._release([tid for tid, t in self.tasks.items() if t.state == WAITING and t.pending == 0],
                          now, "start", out)
            self._expire(now, out)
        self._dirty = True
        return self._finish(now, out)

    def handle(self, event: ev.Event, now: float) -> list[ev.Command]:
        """Apply one event at time ``now``; return the commands to carry out, in order."""
        if not self._started:
            raise RuntimeError("JobState.handle before start")
        out: list[ev.Command] = []
        handler = getattr(self, "_on_" + type(event).__name__, None)
        if handler is None:
            raise TypeError(f"JobState cannot handle {type(event).__name__}")
        problem = self._malformed(event)
        if problem:
            self._refuse(getattr(event, "peer", None) if not problem.startswith("peer") else None, problem, out)
        elif self.state != "running" and not isinstance(event, (ev.ResultReady, ev.Heartbeat)) and not (
                self.state == "done" and isinstance(event, ev.ResultLost)):     # a done job may reopen
            pass
        else:
            handler(event, now, out)
        if self.state == "running":
            self._expire(now, out)
        return self._finish(now, out)

    def progress(self) -> ev.Progress:
        c = self.counts
        return ev.Progress(done=c[DONE], running=c[RUNNING] + c[FETCHING],
                           queued=c[WAITING] + c[READY] + c[PLACING] + c[OFFERED], failed=c[FAILED],
                           skipped=c[SKIPPED], cancelled=c[CANCELLED], total=len(self.tasks))

    def hold_results(self) -> list[str]:
        """After ``from_record``, for a driver that checks them: the done tasks whose outputs it must find
        again before the job may end, each answered by ``Fetched`` (with the task's accepted lease) or by
        ``ResultLost`` (the task runs again)."""
        if self.state == "running":
            self._unconfirmed = {tid for tid, t in self.tasks.items() if t.state == DONE and t.outputs}
        return sorted(self._unconfirmed)

    def next_deadline(self) -> float | None:
        return self._heap[0][0] if self._heap and self.state == "running" else None

    def outputs(self) -> tuple[tuple[str, str, str | None], ...]:
        """The job's result: (task, output, cid or None when that task was skipped)."""
        return tuple((tid, name, self.tasks[tid].outputs.get(name)) for tid, name in self.plan.outputs)

    def describe(self) -> list[dict[str, Any]]:
        """Per task, for ``describe JOB``: state, reason, attempts (peer, lease, times, outcome) and story."""
        return [{"task": tid, "stage": t.spec.stage, "state": t.state, "reason": t.reason,
                 "attempts": [dict(a) for a in t.attempts], "attempts_dropped": t.attempts_dropped,
                 "outputs": dict(t.outputs), "story": list(t.story)} for tid, t in self.tasks.items()]

    # --- events ---------------------------------------------------------------------------------

    def _on_Tick(self, e: ev.Tick, now: float, out: list) -> None:
        pass  # _expire runs after every event

    def _on_Placed(self, e: ev.Placed, now: float, out: list) -> None:
        t = self.tasks[e.task]
        if t.state != PLACING:
            self.stats["stale_placements"] += 1
            return
        if e.missing:                 # an input nobody holds: no attempt could run it (the job's fault)
            self._fail_task(t, self._text(e.missing), now, out)
            return
        peers = list(dict.fromkeys(e.peers))[: max(1, self.config.probes) * 4]
        if not peers:
            t.unplaced_since = now if t.unplaced_since is None else t.unplaced_since
            if now - t.unplaced_since >= self.config.placement_timeout_s:
                self._fail_task(t, f"no peer could run it for {now - t.unplaced_since:.0f} s: {e.reason}", now, out)
            else:
                self._wait_for_room(t, now, f"unplaced: {e.reason}", out)
            return
        t.unplaced_since = None
        for p in peers:
            lease = self._new_lease()
            t.offers[lease] = p
            t.issue(lease, p)
            self._push(now + self.config.offer_timeout_s, "offer", t.task_id, lease)
            out.append(ev.SendOffer(self.job_id, t.task_id, p, lease, now + self.config.offer_timeout_s))
        self._set(t, OFFERED, now, f"offered to {len(peers)}")

    def _on_OfferAccepted(self, e: ev.OfferAccepted, now: float, out: list) -> None:
        t = self.tasks[e.task]
        if t.offers.get(e.lease_id, _NONE) == e.peer and t.state == OFFERED:
            del t.offers[e.lease_id]
            for lease, p in t.offers.items():
                out.append(ev.Revoke(self.job_id, t.task_id, p, lease, "taken by another peer"))
            t.offers.clear()
            t.lease, t.peer, t.deadline = e.lease_id, e.peer, now + self.config.lease_s
            t.add_attempt({"peer": e.peer, "lease": e.lease_id, "start": now, "end": None, "outcome": "running",
                           "message": ""}, self.config.attempts_kept)
            self._push(t.deadline, "lease", t.task_id, e.lease_id)
            out.append(ev.GrantLease(self.job_id, t.task_id, e.peer, e.lease_id, t.deadline))
            self._set(t, RUNNING, now, f"granted {e.lease_id} to {e.peer!r}")
        elif self._ours(t, e.lease_id, e.peer):
            self.stats["late_accepts"] += 1
            out.append(ev.Revoke(self.job_id, t.task_id, e.peer, e.lease_id, "offer no longer open"))
        else:
            self._refuse(e.peer, f"accept of lease {e.lease_id!r} of {t.task_id} we never offered it", out)

    def _on_Heartbeat(self, e: ev.Heartbeat, now: float, out: list) -> None:
        t = self.tasks[e.task]
        if t.state == RUNNING and t.lease == e.lease_id and t.peer == e.peer:
            t.deadline = now + self.config.lease_s
        elif self._ours(t, e.lease_id, e.peer):
            self.stats["stale_heartbeats"] += 1
            if not (t.state == FETCHING and t.lease == e.lease_id):
                out.append(ev.Revoke(self.job_id, t.task_id, e.peer, e.lease_id, "lease no longer valid"))
        else:
            self._refuse(e.peer, f"heartbeat for lease {e.lease_id!r} of {t.task_id} it does not hold", out)

    def _on_ResultReady(self, e: ev.ResultReady, now: float, out: list) -> None:
        t = self.tasks[e.task]
        current = self.state == "running" and t.state == RUNNING and t.lease == e.lease_id and t.peer == e.peer
        if not current:
            if not self._ours(t, e.lease_id, e.peer):
                self._refuse(e.peer, f"result for lease {e.lease_id!r} of {t.task_id} it does not hold", out)
            elif t.accepted == e.lease_id:
                self.stats["duplicate_results"] += 1
            else:
                self.stats["stale_results"] += 1
            return
        problem = check_result(e, self._needs[t.task_id], self._needs_inline[t.task_id], self.config)
        if problem:
            self._refuse(e.peer, f"result of {t.task_id}: {problem}", out)
            self._attempt_failed(t, ev.FAILED, f"bad result: {problem}", now, out)
            return
        t.outputs, t.inline, t.sizes = dict(e.outputs), dict(e.inline), dict(e.sizes)
        t.accepted = e.lease_id
        t.note_log(e.lease_id, e.log, e.log_bytes)
        self._end_attempt(t, "ok", "", now)
        if t.outputs:
            out.append(ev.FetchResult(self.job_id, t.task_id, e.peer, e.lease_id, tuple(sorted(t.outputs.items()))))
            self._set(t, FETCHING, now, f"result of {e.lease_id}")
        else:
            self._done(t, now, f"result of {e.lease_id} (inline)", out)

    def _on_Fetched(self, e: ev.Fetched, now: float, out: list) -> None:
        t = self.tasks[e.task]
        if t.state == DONE and e.task in self._unconfirmed and e.lease_id == t.accepted:
            self._unconfirmed.discard(e.task)        # found again after a takeover (hold_results)
            self._check_end(now, out)
        elif t.state == FETCHING and t.lease == e.lease_id:
            self._done(t, now, f"fetched {e.lease_id}", out)
        else:
            self.stats["stale_fetches"] += 1

    def _on_FetchFailed(self, e: ev.FetchFailed, now: float, out: list) -> None:
        t = self.tasks[e.task]
        if t.state != FETCHING or t.lease != e.lease_id:
            self.stats["stale_fetches"] += 1
            return
        if t.attempts and t.attempts[-1]["lease"] == e.lease_id:
            t.attempts[-1]["outcome"] = "running"      # reopen it: the attempt failed after all
        t.outputs, t.inline, t.sizes, t.accepted = {}, {}, {}, None
        self._attempt_failed(t, ev.FETCH, self._text(e.message), now, out)

    def _on_TaskFailed(self, e: ev.TaskFailed, now: float, out: list) -> None:
        t = self.tasks[e.task]
        if e.kind not in ev.FAILURE_KINDS:
            self._refuse(e.peer, f"failure of {t.task_id} of unknown kind {str(e.kind)[:40]!r}", out)
            return
        message = self._text(e.message)
        if t.state == OFFERED and t.offers.get(e.lease_id, _NONE) == e.peer:
            del t.offers[e.lease_id]             # the peer refused the offer, whatever the kind it gave
            self._touch(t)
            self._declined(t, f"offer {e.lease_id} refused by {e.peer!r}: {message}", now, out)
        elif t.state == RUNNING and t.lease == e.lease_id and t.peer == e.peer:
            if e.kind == ev.REJECTED:            # gave the lease back: not the task's fault
                self._end_attempt(t, ev.REJECTED, message, now)
                t.lease = t.peer = None
                self._declined(t, f"lease {e.lease_id} given back by {e.peer!r}", now, out)
            else:
                t.note_log(e.lease_id, e.log, e.log_bytes)
                self._attempt_failed(t, e.kind, message, now, out)
        elif self._ours(t, e.lease_id, e.peer):
            self.stats["stale_failures"] += 1
        else:
            self._refuse(e.peer, f"failure for lease {e.lease_id!r} of {t.task_id} it does not hold", out)

    def _on_MemberDied(self, e: ev.MemberDied, now: float, out: list) -> None:
        for t in [t for t in self.tasks.values() if t.state in ACTIVE]:
            if t.state == OFFERED and e.peer in t.offers.values():
                for lease in [k for k, p in t.offers.items() if p == e.peer]:
                    del t.offers[lease]
                self._touch(t)
                if not t.offers:
                    self._requeue(t, 0.0, now, f"offered peer {e.peer!r} died", out)
            elif t.state == RUNNING and t.peer == e.peer:
                self._attempt_failed(t, ev.DIED, f"peer {e.peer!r} died", now, out)

    def _on_Room(self, e: ev.Room, now: float, out: list) -> None:
        n = e.tasks if isinstance(e.tasks, int) and not isinstance(e.tasks, bool) else 0
        while n > 0 and self._waiting_room:
            t = self.tasks[next(iter(self._waiting_room))]
            del self._waiting_room[t.task_id]
            if t.state == READY and t.not_before > now and not t.queued:   # still waiting (not re-placed since)
                t.not_before = now
                t.queued = True
                self._ready.append(t.task_id)
                n -= 1

    def waiting_for_room(self) -> int:
        """Tasks that found no peer with room (an upper bound: some may have been placed since)."""
        return len(self._waiting_room)

    def _on_ResultLost(self, e: ev.ResultLost, now: float, out: list) -> None:
        """A done task's outputs are gone: it runs again (not charged), and its dependents that have not
        yet read them wait for it again (their offers and leases withdrawn)."""
        t = self.tasks[e.task]
        if t.state != DONE or not t.outputs:
            self.stats["stale_losses"] += 1
            return
        if self.state == "done":      # its result is gone (its coordinator alone held it): the job reopens
            self.state, self.reason, self._reported_end = "running", "", False
            self.stats["reopened"] += 1
        self.stats["results_lost"] += 1
        self._unconfirmed.discard(t.task_id)
        message = self._text(e.message)
        for a in reversed(t.attempts):
            if a["outcome"] == "ok":
                a.update(outcome="lost", message=message)
                break
        t.outputs, t.inline, t.sizes, t.accepted = {}, {}, {}, None
        self._requeue(t, 0.0, now, f"result lost: {message}", out)
        for tid in self._dependents[t.task_id]:
            d = self.tasks[tid]
            if d.state in (READY, PLACING, OFFERED, RUNNING):
                if d.state == RUNNING:
                    out.append(ev.Revoke(self.job_id, d.task_id, d.peer, d.lease, f"input {t.task_id} lost"))
                    self._end_attempt(d, ev.REVOKED, f"input {t.task_id} lost", now)
                for lease, p in d.offers.items():
                    out.append(ev.Revoke(self.job_id, d.task_id, p, lease, f"input {t.task_id} lost"))
                d.offers.clear()
                d.lease = d.peer = None
                d.pending = 0
                self._set(d, WAITING, now, f"input {t.task_id} lost: waits for it again")
            if d.state == WAITING:
                d.pending += 1

    def _on_Cancel(self, e: ev.Cancel, now: float, out: list) -> None:
        self._end_job("cancelled", self._text(e.reason), now, out)

    # --- transitions ------------------------------------------------------------------------------

    def _set(self, t: TaskRun, state: str, now: float, stimulus: str) -> None:
        self.counts[t.state] -= 1
        self.counts[state] += 1
        t.story.append((now, stimulus, t.state, state))
        t.state = state
        self._touch(t)

    def _requeue(self, t: TaskRun, delay: float, now: float, stimulus: str, out: list) -> None:
        for lease, p in t.offers.items():
            out.append(ev.Revoke(self.job_id, t.task_id, p, lease, "offer withdrawn"))
        t.offers.clear()
        t.lease = t.peer = None
        t.not_before = now + delay
        self._set(t, READY, now, stimulus)
        if delay > 0:
            self._push(t.not_before, "ready", t.task_id, None)
        elif not t.queued:
            t.queued = True
            self._ready.append(t.task_id)

    def _declined(self, t: TaskRun, stimulus: str, now: float, out: list) -> None:
        t.declines += 1
        if t.declines > self.config.max_declines:
            self._fail_task(t, f"{t.declines} offers refused or lapsed; last: {stimulus}", now, out)
        elif not t.offers:
            self._wait_for_room(t, now, stimulus, out)

    def _wait_for_room(self, t: TaskRun, now: float, stimulus: str, out: list) -> None:
        """Back to ready until ``Room`` (or, failing one, ``placement_retry_s``): no peer took it now."""
        self._requeue(t, self.config.placement_retry_s, now, stimulus, out)
        self._waiting_room.setdefault(t.task_id)      # a task that waits again keeps its place

    def _end_attempt(self, t: TaskRun, outcome: str, message: str, now: float) -> None:
        if t.attempts and t.attempts[-1]["lease"] == t.lease and t.attempts[-1]["outcome"] == "running":
            t.attempts[-1].update(end=now, outcome=outcome, message=message)

    def _attempt_failed(self, t: TaskRun, kind: str, message: str, now: float, out: list) -> None:
        """A charged failure of the running (or fetching) attempt: back with backoff, or the task fails."""
        peer, lease = t.peer, t.lease
        self._end_attempt(t, kind, message, now)
        if kind == ev.EXPIRED:
            out.append(ev.Revoke(self.job_id, t.task_id, peer, lease, "lease expired"))
        t.lease = t.peer = None
        t.failed_peers.add(peer)
        if kind == ev.DIED:        # the peer's fault, not the task's: not charged to retries, bounded apart
            t.lost += 1
            if t.lost > self.config.max_lost:
                self._fail_task(t, f"lost with its executor {t.lost} times; attempts: " + "; ".join(t.reasons()),
                                now, out)
            else:
                self._requeue(t, 0.0, now, f"{kind} on {peer!r} ({lease}): {message}", out)
            return
        t.failures += 1
        policy = self.plan.retry
        if kind in SAME_RULE_KINDS:
            seen = t.same.setdefault((kind, message), set())
            seen.add(peer)
            if len(seen) >= policy.same_failure_peers:
                self._fail_task(t, f"failed the same way on {len(seen)} peers ({kind}: {message})", now, out)
                return
        if t.failures > policy.retries:
            self._fail_task(t, f"failed {t.failures} times; attempts: " + "; ".join(t.reasons()), now, out)
            return
        delay = min(policy.backoff_max_s, policy.backoff_s * 2.0 ** (t.failures - 1)) * (0.5 + 0.5 * self.rng.random())
        self._requeue(t, delay, now, f"{kind} on {peer!r} ({lease}): {message}", out)

    def _fail_task(self, t: TaskRun, reason: str, now: float, out: list) -> None:
        t.reason = reason
        self._set(t, FAILED, now, reason)
        self._end_job("failed", f"task {t.task_id} failed: {reason}", now, out)

    def _done(self, t: TaskRun, now: float, stimulus: str, out: list) -> None:
        self.stats["results_accepted"] += 1
        self._set(t, DONE, now, stimulus)
        self._release(self._dependents[t.task_id], now, f"{t.task_id} done", out, dec=True)

    def _release(self, tids: list[str], now: float, stimulus: str, out: list, dec: bool = False) -> None:
        """Tasks whose deps may all be finished: make them ready, skip them, or fail on a bad condition."""
        work = deque((tid, stimulus, dec) for tid in tids)
        while work and self.state == "running":
            tid, why, decrement = work.popleft()
            t = self.tasks[tid]
            if decrement:
                t.pending -= 1
            if t.pending > 0 or t.state != WAITING:
                continue
            skipped = [d for d in self._deps[tid] if self.tasks[d].state == SKIPPED]
            verdict = True
            if not skipped and t.spec.condition is not None:
                c = t.spec.condition
                try:
                    verdict = c.holds(self.tasks[c.task].inline)
                except PlanError as e:
                    self._fail_task(t, str(e), now, out)
                    return
            if skipped or not verdict:
                t.reason = f"depends on skipped {skipped[0]}" if skipped else \
                    f"condition {c.task}.{c.output} {c.op} {c.value} is false"
                self._set(t, SKIPPED, now, f"{why}: {t.reason}")
                work.extend((d, f"{tid} skipped", True) for d in self._dependents[tid])
            else:
                self._requeue(t, 0.0, now, why, out)
        self._check_end(now, out)

    def _check_end(self, now: float, out: list) -> None:
        if (self.state == "running" and self.counts[DONE] + self.counts[SKIPPED] == len(self.tasks)
                and not self._unconfirmed):
            self._end_job("done", "", now, out)

    def _end_job(self, state: str, reason: str, now: float, out: list) -> None:
        if self.state != "running":
            return
        self.state, self.reason = state, reason
        for t in self.tasks.values():
            if t.state in TERMINAL:
                continue
            for lease, p in t.offers.items():
                out.append(ev.Revoke(self.job_id, t.task_id, p, lease, f"job {state}"))
            t.offers.clear()
            if t.state in (RUNNING, FETCHING):
                if t.state == RUNNING:
                    out.append(ev.Revoke(self.job_id, t.task_id, t.peer, t.lease, f"job {state}"))
                self._end_attempt(t, ev.REVOKED, f"job {state}", now)
            self._set(t, CANCELLED, now, f"job {state}")
        self._heap.clear()
        self._ready.clear()
        self._waiting_room.clear()
        self._dirty = True

    # --- timers and dispatch ----------------------------------------------------------------------

    def _push(self, when: float, kind: str, tid: str, token: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, kind, tid, token))

    def _expire(self, now: float, out: list) -> None:
        while self._heap and self._heap[0][0] <= now and self.state == "running":
            _, _, kind, tid, token = heapq.heappop(self._heap)
            t = self.tasks[tid]
            if kind == "ready" and t.state == READY and t.not_before <= now and not t.queued:
                t.queued = True
                self._ready.append(tid)
            elif kind == "offer" and t.state == OFFERED and token in t.offers:
                out.append(ev.Revoke(self.job_id, tid, t.offers.pop(token), token, "offer lapsed"))
                self._touch(t)
                self._declined(t, f"offer {token} lapsed", now, out)
            elif kind == "lease" and t.state == RUNNING and t.lease == token:
                if t.deadline <= now:
                    self._attempt_failed(t, ev.EXPIRED, f"no heartbeat for {self.config.lease_s:g} s", now, out)
                else:
                    self._push(t.deadline, "lease", tid, token)
            elif kind == "placing" and t.state == PLACING and t.gen == token:
                self._requeue(t, 0.0, now, "no placement answer", out)
        in_flight = self.counts[PLACING] + self.counts[OFFERED]
        while self._ready and in_flight < self.config.max_in_flight and self.state == "running":
            t = self.tasks[self._ready.popleft()]
            t.queued = False
            if t.state != READY or t.not_before > now:
                continue
            t.gen += 1
            self._push(now + self.config.offer_timeout_s, "placing", t.task_id, t.gen)
            out.append(ev.Dispatch(self.job_id, t.task_id, max(1, self.config.probes), t.spec.requirements,
                                   self._resolve_inputs(t), frozenset(t.failed_peers)))
            self._set(t, PLACING, now, "dispatch")
            in_flight += 1

    def _resolve_inputs(self, t: TaskRun) -> tuple[tuple[str, str, int | None], ...]:
        res = []
        for i in t.spec.inputs:
            if i.cid is not None:
                res.append((i.name, i.cid, i.size))
            else:
                src = self.tasks[i.task]
                name = i.output or i.name
                res.append((i.name, src.outputs.get(name, ""), src.sizes.get(name, i.size)))
        return tuple(res)

    def _finish(self, now: float, out: list) -> list:
        if self._dirty:
            self._dirty = False
            self.version += 1
            out.append(ev.Replicate(self.job_id, self.version))
            if self.state == "running":
                out.append(ev.Report(self.job_id, "progress", self.progress()))
            elif not self._reported_end:
                self._reported_end = True
                out.append(ev.Report(self.job_id, self.state, self.progress(), self.reason, self.outputs()))
        nd = self.next_deadline()
        if nd is not None and nd != self._timer:
            self._timer = nd
            out.append(ev.SetTimer(nd))
        return out

    # --- checks -----------------------------------------------------------------------------------

    def _new_lease(self) -> str:
        self._seq += 1
        return f"{self._lease_prefix}{self._seq}"

    def _malformed(self, e: ev.Event) -> str | None:
        """Why an event built from a peer's message cannot even be looked at (None: it can)."""
        task, lease = getattr(e, "task", None), getattr(e, "lease_id", "")
        if hasattr(e, "peer"):
            try:
                hash(e.peer)
            except TypeError:
                return f"peer {type(e.peer).__name__} is not a peer id"
        if not isinstance(lease, str) or len(lease) > 64:
            return f"lease id {str(lease)[:80]!r} is not a lease id"
        if task is not None and (not isinstance(task, str) or task not in self.tasks):
            return f"job {self.job_id} has no task {str(task)[:80]!r}"
        return None

    def _ours(self, t: TaskRun, lease: Any, peer: Any) -> bool:
        """A lease of this task we issued to ``peer``, or another coordinator's (we may not know it: it was
        issued after the record we took over from): stale, answered by a revoke, not refused."""
        if t.issued.get(lease, _NONE) == peer:
            return True
        return lease.count(".") == 2 and not lease.startswith(self._lease_prefix)

    def _text(self, s: Any) -> str:
        return str(s)[: self.config.max_text]

    def _refuse(self, peer: Any, reason: str, out: list) -> None:
        self.stats["refused"] += 1
        out.append(ev.Refused(peer, reason))

    # --- the record (job_record.py) -------------------------------------------------------------

    def to_record(self) -> dict[str, Any]:
        """The whole job as a CBOR-friendly dict: what replicas keep and ``from_record`` resumes from."""
        return job_record.to_record(self)

    def delta(self) -> dict[str, Any]:
        """The tasks changed since the last ``delta``, for ``job_record.apply_delta`` at the replicas."""
        return job_record.delta(self)

    @classmethod
    def from_record(cls, record: dict[str, Any], now: float, rng: random.Random,
                    config: JobConfig | None = None) -> JobState:
        """A replica takes over: the next epoch, running work re-offered (see the module doc). Then ``start``."""
        return job_record.from_record(cls, record, now, rng, config)

    def _touch(self, t: TaskRun) -> None:
        self._changed.add(t.task_id)
        self._dirty = True

    def _take_over(self, t: TaskRun, now: float) -> None:
        out = self._resume
        if t.state in (PLACING, OFFERED, RUNNING):
            if t.state == RUNNING:
                out.append(ev.Revoke(self.job_id, t.task_id, t.peer, t.lease, "coordinator changed"))
                self._end_attempt(t, ev.REVOKED, "coordinator changed", now)
            self._requeue(t, 0.0, now, "takeover: queued again", out)
        elif t.state == FETCHING:
            out.append(ev.FetchResult(self.job_id, t.task_id, t.peer, t.lease, tuple(sorted(t.outputs.items()))))
        elif t.state == READY:
            if t.not_before > now:
                self._push(t.not_before, "ready", t.task_id, None)
            else:
                t.queued = True
                self._ready.append(t.task_id)


_NONE = object()   # a sentinel no peer equals
