"""JobState's verified tasks: several executions per task, chosen by the coordinator, until the strategy accepts.

Theory of operation
-------------------
A job whose ``verification`` is not ``none`` gets one ``Replicated`` beside
its ``JobState`` (job_state.py keeps ``none`` jobs on its one-lease path,
untouched). When a task leaves ``ready`` it becomes ``running`` here, with a
``TaskVerification`` (engine.py) built from the job's strategy; its commands
drive the task:

* ``Execute(n)``: n more executions. A ``Dispatch`` asks placement for about
  ``3n + 2`` peers; of its answer the coordinator keeps the peers that are not
  excluded (they gave a result already, run this task now, or are banned by
  the ledger) and picks n of them at random with its own rng, under the Sybil
  rules (sybil.py: no two replicas of a task in one /24 or joined within one
  window) when the driver gives ``facts``. An anchored strategy's task with no
  vetted peer on it yet gets one first: a vetted peer of the answer, else one
  of the coordinator's crew (Ledger.crew) alive with a free slot, else the
  answer's peer nearest to vetting.
* ``Execute(vetted=True)`` (an escalation with no trusted peer): offered
  directly to a vetted peer of the ledger, alive, not on this task; none: lost. Each picked peer gets its own offer
  (no late binding among replicas: a peer never picks itself). Too few
  peers: the rest is placed again after ``placement_retry_s``; nothing for
  ``placement_timeout_s``: those executions are lost (``v.lost``).
* ``Execute(trusted=True)``: one offer to a peer the driver's ``trusted(job)``
  names (the submitter's own peer); none: ``v.lost(trusted)``, the strategy
  falls back (a vote). A trusted peer that refuses (busy) is asked again after
  ``placement_retry_s``.
* An offer refused or lapsed is placed again (it was no execution; at most
  ``max_declines``). A granted execution that fails, lapses or whose peer
  dies is lost (``v.lost``). A ``ResultReady`` on a current execution is
  checked like any result (``check_result``), and its signed claim
  (signed.py) when it carries one or the driver requires them; then
  ``v.result``. A result refused is a lost execution.
* ``Accept``: the other executions are revoked, the task takes the accepted
  result and goes on by JobState's path (``fetching`` from the accepted
  result's peer, then ``done``): a task is accepted once per line of records,
  as any. Its evidence (what was accepted and why; signed when the driver
  gives an identity) goes into the task's record (``TaskRun.verified``).
* ``Reject``: the ledger counts it; a proven one bans the peer (``learn``)
  and a ``BanPeer`` command tells the driver (to spread an accusation).
* ``GiveUp``: the task fails (and so the job).
* ``PeerBanned`` (from the driver, for every running job): a done task whose
  accepted result rests on the banned peer (it agreed, and no trusted
  execution did) is retracted and runs again, after the done tasks that read
  it (they read a result now in doubt): ``ResultLost``'s path, the
  acceptance taken back (``results_retracted``, not counted as accepted).
* ``Load`` (tensors for a tolerance or a check): a ``LoadTensors`` command; the
  driver answers ``TensorsLoaded`` or ``TensorsUnavailable``.

A task that runs again later (its fetch failed, its result was lost) starts a
new verification. A takeover queues running tasks again (job_state.py):
their executions are stale leases of the old epoch, and verification starts
afresh. Pure: events and ``now`` in, commands out; randomness from the job's rng.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

from .. import events as ev
from ..task_run import RUNNING, TaskRun, check_result
from . import signed, sybil
from .engine import Accept, Execute, GiveUp, Load, Outcome, Reject, Strategy, TaskInfo, TaskVerification
from .reputation import Ledger

MAX_EXECS = 64        # executions (offered or running) of one task at once


# --- what the driver gives a verified job ------------------------------------------------------------

@dataclass
class VerifyEnv:
    """The driver's side: the ledger shared by its jobs, who is trusted, Sybil facts, signing."""

    ledger: Ledger = field(default_factory=Ledger)
    trusted: Callable[[str], list] = lambda job_id: []            # peers trusted for re-executions of a job
    facts: Callable[[Hashable], sybil.PeerFacts] | None = None    # None: no Sybil rules (a simulation)
    rules: sybil.SybilRules = field(default_factory=sybil.SybilRules)
    traits: Callable[[Any], tuple[bool, str | None]] | None = None   # TaskSpec -> (portable, check)
    identity: Any = None                                          # signs evidence (node Identity) if set
    require_claims: bool = False                                  # refuse results without a signed claim
    suspected: Callable[[Hashable], bool] = lambda peer: False    # accused by others: left out while others can
    live: Callable[[Hashable], bool] = lambda peer: True          # a vetted peer asked directly must be alive
    crew: int = 8                                                 # peers being vetted that get work first
    free: Callable[[Hashable], bool] = lambda peer: True          # has a free slot (by its capability record)
    endorse: Callable[..., None] | None = None                    # (job, task, anchor, peers): an anchored acceptance
                                                                  # for other ledgers (Ledger.endorse), or None


# --- its own events and commands -------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class TensorsLoaded:
    task: str
    index: int
    outputs: dict
    inputs: dict | None = None


@dataclass(frozen=True, slots=True)
class PeerBanned:
    """The driver's ledger banned ``peer`` (this job's proof, another job's, or an accusation judged here)."""

    peer: Any


@dataclass(frozen=True, slots=True)
class TensorsUnavailable:
    task: str
    index: int


@dataclass(frozen=True, slots=True)
class LoadTensors:
    """Fetch and decode the outputs of result ``index`` (and the task's inputs): answer TensorsLoaded."""

    job_id: str
    task: str
    index: int
    peer: Any
    outputs: tuple
    inputs: tuple = ()


@dataclass(frozen=True, slots=True)
class BanPeer:
    """This coordinator proved ``peer`` wrong on ``task`` and banned it (``accusation``: signed, or b"")."""

    job_id: str
    task: str
    peer: Any
    reason: str
    accusation: bytes = b""
    outputs: tuple = ()                 # the accused's outputs ((name, CID), ...)


def task_traits(spec: Any) -> tuple[bool, str | None]:
    """(portable, check) of a task: a graph's own answer; wasm is portable; anything unreadable is not
    portable (an exact disagreement is then no proof, so an honest peer is never banned for rounding)."""
    if spec.kind == "wasm":
        return True, None
    try:
        from ..plan import decode_payload
        from .checks import graph_check
        task = decode_payload(spec.payload)[0]
        return bool(task.graph.portable()), graph_check(task.graph)
    except Exception:          # noqa: BLE001 - a payload we cannot judge is simply not portable
        return False, None


class _Exec:
    __slots__ = ("peer", "trusted", "running", "deadline", "attempt", "vetted")

    def __init__(self, peer: Any, trusted: bool, vetted: bool = False) -> None:
        self.peer, self.trusted, self.running, self.deadline, self.attempt = peer, trusted, False, 0.0, None
        self.vetted = vetted


class _VTask:
    __slots__ = ("v", "execs", "want", "gen", "unplaced_since", "lease_of", "sizes_of")

    def __init__(self, v: TaskVerification) -> None:
        self.v = v
        self.execs: dict[str, _Exec] = {}
        self.want = 0                     # untrusted executions still to place
        self.gen = 0                      # placement generation (stale Placed / timers)
        self.unplaced_since: float | None = None
        self.lease_of: dict[int, str] = {}
        self.sizes_of: dict[int, dict] = {}


class Replicated:
    """The verified tasks of one ``JobState`` (see the module doc)."""

    def __init__(self, js: Any, strategy: Strategy, env: VerifyEnv | None) -> None:
        self.js = js
        self.strategy = strategy
        self.env = env or VerifyEnv()
        self.crew_size = self.env.crew
        self.tasks: dict[str, _VTask] = {}

    # --- from JobState --------------------------------------------------------------------------

    @property
    def threshold(self) -> int | None:
        """The strategy's vetting threshold (adaptive's), else the ledger's."""
        return getattr(self.strategy, "threshold", None)

    def vetted(self, peer: Any) -> bool:
        return self.env.ledger.is_trusted(peer, self.threshold)

    def dispatch(self, t: TaskRun, now: float, out: list) -> None:
        """A ready task starts running: a new verification, its first executions."""
        js = self.js
        portable, check = (self.env.traits or task_traits)(t.spec)
        info = TaskInfo(js.job_id, t.task_id, tuple(cid for _, cid, _ in js._resolve_inputs(t)), portable, check)
        v = TaskVerification(info, self.strategy, random.Random(js.rng.getrandbits(64)), self.vetted)
        self.tasks[t.task_id] = _VTask(v)
        js._set(t, RUNNING, now, f"verifying ({self.strategy.canonical()})")
        self._apply(t, v.start(now), now, out)

    def handle(self, e: Any, now: float, out: list) -> bool:
        """Take ``e`` if it is about a current execution of a verified task (True); else JobState's handlers
        see it (stale leases of verified tasks are answered there, as any)."""
        if isinstance(e, PeerBanned):
            why = f"its result rests on banned peer {e.peer!r}"
            for tid, t in self.js.tasks.items():
                rests = t.verified and not t.verified.get("trusted") and e.peer in t.verified.get("peers", ())
                if rests and t.state == "done":
                    self._retract(tid, why, now, out)
                elif rests and t.state == "fetching" and self.js.state == "running":    # accepted, not yet here
                    t.outputs, t.inline, t.sizes, t.accepted = {}, {}, {}, None
                    self.js._requeue(t, 0.0, now, why, out)
            for tid, vt in list(self.tasks.items()):        # its results not yet decided on no longer count
                t = self.js.tasks[tid]
                for i, r in enumerate(vt.v.results):
                    if r.peer == e.peer and not r.trusted and t.state == RUNNING and vt.v.state == "running":
                        self._apply(t, vt.v.discard(i, "its peer was banned", now), now, out)
            for tid, vt in list(self.tasks.items()):        # its executions still out are dropped, asked elsewhere
                t = self.js.tasks[tid]
                for lease, x in list(vt.execs.items()):
                    if x.peer == e.peer and t.state == RUNNING and vt.v.state == "running" and lease in vt.execs:
                        out.append(ev.Revoke(self.js.job_id, tid, x.peer, lease, "peer banned"))
                        if x.attempt is not None:
                            x.attempt.update(end=now, outcome=ev.REVOKED, message="peer banned")
                        del vt.execs[lease]
                        self._apply(t, vt.v.lost(x.trusted, now), now, out) if x.running else \
                            self._declined(t, vt, x, "peer banned", now, out)
            return True
        if isinstance(e, ev.MemberDied):
            for tid, vt in list(self.tasks.items()):
                for lease, x in list(vt.execs.items()):
                    if x.peer == e.peer:
                        self._gone(self.js.tasks[tid], vt, lease, ev.DIED, f"peer {e.peer!r} died", now, out)
            return False
        task = getattr(e, "task", None)
        vt = self.tasks.get(task) if isinstance(task, str) else None
        t = self.js.tasks.get(task) if vt is not None else None
        if t is None or t.state != RUNNING or vt.v.state != "running":
            return False
        if isinstance(e, ev.Placed):
            self._placed(t, vt, e, now, out)
            return True
        if isinstance(e, (TensorsLoaded, TensorsUnavailable)):
            if isinstance(e, TensorsLoaded):
                cmds = vt.v.loaded(e.index, e.outputs, e.inputs, now)
            else:
                cmds = vt.v.unavailable(e.index, now)
            self._apply(t, cmds, now, out)
            return True
        lease = getattr(e, "lease_id", None)
        x = vt.execs.get(lease) if isinstance(lease, str) else None
        if x is None or getattr(e, "peer", x.peer) != x.peer:
            return False
        if isinstance(e, ev.OfferAccepted):
            if x.running:
                return False
            x.running, x.deadline = True, now + self.js.config.lease_s
            x.attempt = {"peer": x.peer, "lease": lease, "start": now, "end": None, "outcome": "running",
                         "message": "", "trusted": x.trusted}
            t.add_attempt(x.attempt, self.js.config.attempts_kept)
            self.js._push(x.deadline, "vlease", t.task_id, lease)
            out.append(ev.GrantLease(self.js.job_id, t.task_id, x.peer, lease, x.deadline))
            self.js._touch(t)
        elif isinstance(e, ev.Heartbeat):
            if not x.running:
                return False
            x.deadline = now + self.js.config.lease_s
        elif isinstance(e, ev.TaskFailed):
            if e.kind not in ev.FAILURE_KINDS:
                return False
            if not x.running:                                   # an offer refused: place it again
                del vt.execs[lease]
                self._declined(t, vt, x, f"offer {lease} refused by {x.peer!r}", now, out)
            else:
                t.note_log(lease, e.log, e.log_bytes)
                self._gone(t, vt, lease, e.kind, self.js._text(e.message), now, out)
        elif isinstance(e, ev.ResultReady):
            if not x.running:
                return False
            self._result(t, vt, lease, x, e, now, out)
        else:
            return False
        return True

    def _retract(self, tid: str, why: str, now: float, out: list) -> None:
        """Take back a done task's acceptance (the done tasks that read it first) and run it again."""
        js = self.js
        if js.tasks[tid].state != "done" or not js.tasks[tid].outputs or js.state != "running":
            return
        for dep in js._dependents[tid]:
            d = js.tasks[dep]
            if d.state == "done" and d.outputs:
                self._retract(dep, f"read {tid}, retracted", now, out)
            elif d.state in (RUNNING, "fetching"):       # it read the result in doubt: it waits and runs again
                self.cancel(d, f"input {tid} retracted", now, out)
                if d.state == RUNNING and d.lease:
                    out.append(ev.Revoke(js.job_id, dep, d.peer, d.lease, f"input {tid} retracted"))
                d.outputs, d.inline, d.sizes, d.accepted, d.lease, d.peer = {}, {}, {}, None, None, None
                d.pending = 0
                js._set(d, "waiting", now, f"input {tid} retracted: waits for it again")
        js.stats["results_retracted"] += 1
        js.stats["results_accepted"] -= 1
        js._on_ResultLost(ev.ResultLost(tid, why), now, out)

    def timer(self, kind: str, t: TaskRun, token: Any, now: float, out: list) -> None:
        vt = self.tasks.get(t.task_id)
        if vt is None or t.state != RUNNING or vt.v.state != "running":
            return
        if kind == "vplace" and token == vt.gen:
            self._place(t, vt, now, out)
        elif kind == "vtrust" and vt.v.pending_trusted > sum(x.trusted for x in vt.execs.values()):
            self._trusted(t, vt, now, out)
        elif kind == "vvet":
            self._vetted_exec(t, vt, now, out)
        elif kind == "voffer" and token in vt.execs and not vt.execs[token].running:
            x = vt.execs.pop(token)
            out.append(ev.Revoke(self.js.job_id, t.task_id, x.peer, token, "offer lapsed"))
            self._declined(t, vt, x, f"offer {token} lapsed", now, out)
        elif kind == "vlease" and token in vt.execs and vt.execs[token].running:
            x = vt.execs[token]
            if x.deadline <= now:
                out.append(ev.Revoke(self.js.job_id, t.task_id, x.peer, token, "lease expired"))
                self.env.ledger.timed_out(x.peer, now)
                self._gone(t, vt, token, ev.EXPIRED, f"no heartbeat for {self.js.config.lease_s:g} s", now, out)
            else:
                self.js._push(x.deadline, "vlease", t.task_id, token)

    def cancel(self, t: TaskRun, reason: str, now: float, out: list) -> None:
        """The job ended: revoke the task's executions."""
        vt = self.tasks.get(t.task_id)
        if vt is None:
            return
        for lease, x in vt.execs.items():
            out.append(ev.Revoke(self.js.job_id, t.task_id, x.peer, lease, reason))
            if x.attempt is not None and x.attempt["outcome"] == "running":
                x.attempt.update(end=now, outcome=ev.REVOKED, message=reason)
        vt.execs.clear()

    def describe(self, tid: str) -> dict[str, Any]:
        """For ``describe JOB``: the task's verification now, or what was accepted and why."""
        t = self.js.tasks[tid]
        vt = self.tasks.get(tid)
        live = None
        if vt is not None and t.state == RUNNING:
            live = {"results": len(vt.v.results), "pending": vt.v.pending + vt.v.pending_trusted,
                    "executions": [{"peer": x.peer, "lease": lease, "trusted": x.trusted, "running": x.running}
                                   for lease, x in vt.execs.items()]}
        accepted = None
        if t.verified is not None:
            accepted = {k: v for k, v in t.verified.items() if k != "evidence"}
            accepted["evidence"] = bytes(t.verified.get("evidence") or b"").hex()      # signed (421), or ""
        return {"verification": {"strategy": self.strategy.canonical(), "now": live, "accepted": accepted}}

    # --- inside ---------------------------------------------------------------------------------

    def _placed(self, t: TaskRun, vt: _VTask, e: ev.Placed, now: float, out: list) -> None:
        js, v = self.js, vt.v
        if vt.want <= 0:
            js.stats["stale_placements"] += 1
            return
        ledger = self.env.ledger
        busy = {x.peer for x in vt.execs.values() if not x.trusted}
        taken = busy | {r.peer for r in v.results if not r.trusted}
        try:
            peers = [p for p in dict.fromkeys(e.peers) if p not in taken and not ledger.banned(p)]
        except TypeError:
            peers = []
        fine = [p for p in peers if not self.env.suspected(p)]
        if len(fine) >= vt.want:
            peers = fine
        first: list = []
        if self.strategy.anchored and not any(self.vetted(p) for p in taken):   # one replica on a vetted peer
            pool = [p for p in peers if self.vetted(p)] or self._crew(t, vt) or self._warmest(peers)
            first = self._pick(pool, 1, taken)
            peers = [p for p in peers if p not in first]
        picked = first + self._pick(peers, vt.want - len(first), taken | set(first))
        for p in picked:
            self._offer(t, vt, p, False, now, out)
        vt.want -= len(picked)
        if vt.want <= 0:
            vt.unplaced_since = None
            return
        if picked:
            vt.unplaced_since = None
        elif vt.unplaced_since is None:
            vt.unplaced_since = now
        if vt.unplaced_since is not None and now - vt.unplaced_since >= js.config.placement_timeout_s:
            n, vt.want, vt.unplaced_since = vt.want, 0, None
            for _ in range(n):                               # no peer for so long: those executions are lost
                self._apply(t, v.lost(False, now), now, out)
                if v.state != "running":
                    return
            return
        vt.gen += 1
        js._push(now + js.config.placement_retry_s, "vplace", t.task_id, vt.gen)

    def _warmest(self, peers: list) -> list:
        """Those of ``peers`` with the most consecutive valid results (at least one), so that a coordinator's
        results concentrate on a few peers and vet them sooner; none such: all of them."""
        ledger = self.env.ledger
        best = max((r.consecutive for p in peers if (r := ledger.record(p)) is not None), default=0)
        return [p for p in peers if best and (r := ledger.record(p)) is not None and r.consecutive == best] or peers

    def _pick(self, peers: list, k: int, taken: set) -> list:
        """Up to ``k`` of ``peers`` at random (the coordinator's rng), under the Sybil rules when facts are given."""
        if k <= 0 or not peers:
            return []
        if self.env.facts is not None:
            facts = self.env.facts
            return [f.peer for f in sybil.pick_replicas([facts(p) for p in peers], k, [facts(p) for p in taken],
                                                        self.js.rng, self.env.rules)]
        peers = list(peers)
        self.js.rng.shuffle(peers)
        return peers[:k]

    def _offer(self, t: TaskRun, vt: _VTask, peer: Any, trusted: bool, now: float, out: list) -> None:
        js = self.js
        lease = js._new_lease()
        t.issue(lease, peer)
        vt.execs[lease] = _Exec(peer, trusted)
        js._push(now + js.config.offer_timeout_s, "voffer", t.task_id, lease)
        out.append(ev.SendOffer(js.job_id, t.task_id, peer, lease, now + js.config.offer_timeout_s))
        js._touch(t)

    def _place(self, t: TaskRun, vt: _VTask, now: float, out: list) -> None:
        """Ask placement for peers for the executions still wanted."""
        if vt.want <= 0:
            return
        js = self.js
        vt.gen += 1
        js._push(now + js.config.offer_timeout_s, "vplace", t.task_id, vt.gen)    # in case no answer comes
        avoid = frozenset(t.failed_peers | {x.peer for x in vt.execs.values()} | {r.peer for r in vt.v.results}
                          | set(self.env.ledger.bans))           # bounded (Ledger.max_bans)
        out.append(ev.Dispatch(js.job_id, t.task_id, 3 * vt.want + 2, t.spec.requirements, js._resolve_inputs(t),
                               avoid))

    def _declined(self, t: TaskRun, vt: _VTask, x: _Exec, why: str, now: float, out: list) -> None:
        t.declines += 1
        self.js._touch(t)
        if t.declines > self.js.config.max_declines:
            self.js._fail_task(t, f"{t.declines} offers refused or lapsed; last: {why}", now, out)
        elif x.trusted:                                         # the trusted peer is busy: ask it again soon
            self.js._push(now + self.js.config.placement_retry_s, "vtrust", t.task_id, None)
        elif x.vetted:                                          # a vetted peer is busy: ask one again soon
            self.js._push(now + self.js.config.placement_retry_s, "vvet", t.task_id, None)
        else:
            vt.want += 1
            vt.gen += 1
            self.js._push(now + self.js.config.placement_retry_s, "vplace", t.task_id, vt.gen)

    def _gone(self, t: TaskRun, vt: _VTask, lease: str, kind: str, message: str, now: float, out: list) -> None:
        """A granted (or offered) execution ended without a result."""
        x = vt.execs.pop(lease)
        if not x.running:
            self._declined(t, vt, x, message, now, out)
            return
        if x.attempt is not None:
            x.attempt.update(end=now, outcome=kind, message=message)
        if kind == ev.DIED:
            t.lost += 1            # lost with its executor: not the task's fault (job_state.py)
        else:
            t.failures += 1
        t.failed_peers.add(x.peer)
        self._apply(t, vt.v.lost(x.trusted, now, none_left=False), now, out)

    def _result(self, t: TaskRun, vt: _VTask, lease: str, x: _Exec, e: ev.ResultReady, now: float,
                out: list) -> None:
        js = self.js
        problem = check_result(e, js._needs[t.task_id], js._needs_inline[t.task_id], js.config)
        claim = getattr(e, "claim", b"") or b""
        if problem is None and (claim or self.env.require_claims):
            problem = signed.claim_problem(claim, js.job_id, t.task_id, vt.v.task.inputs, None, e.outputs,
                                           e.inline)
            signer = None if problem else signed.open_result(claim).peer
            if signer is not None and signer != x.peer and str(signer) != str(x.peer):
                problem = "the claim is signed by another peer"
        if problem:
            js._refuse(x.peer, f"result of {t.task_id}: {problem}", out)
            self._gone(t, vt, lease, ev.FAILED, f"bad result: {problem}", now, out)
            return
        del vt.execs[lease]
        x.attempt.update(end=now, outcome="ok", message="")
        t.note_log(lease, e.log, e.log_bytes)
        vt.lease_of[len(vt.v.results)] = lease
        vt.sizes_of[len(vt.v.results)] = dict(e.sizes)
        self._apply(t, vt.v.result(Outcome.of(x.peer, e.outputs, e.inline, claim, x.trusted), now), now, out)

    def _apply(self, t: TaskRun, cmds: list, now: float, out: list) -> None:
        """Carry out a verification's commands."""
        js, v = self.js, self.tasks[t.task_id].v
        vt = self.tasks[t.task_id]
        banned = self.env.ledger.learn(v.results, cmds, now)
        for cmd in cmds:
            if isinstance(cmd, Execute):
                if cmd.trusted:
                    self._trusted(t, vt, now, out)
                elif cmd.vetted:
                    for _ in range(cmd.n):
                        self._vetted_exec(t, vt, now, out)
                else:
                    vt.want += cmd.n
                    vt.unplaced_since = None
                    self._place(t, vt, now, out)
            elif isinstance(cmd, Reject):
                js.stats["verify_rejected_proven" if cmd.proven else "verify_rejected"] += 1
                if cmd.peer in banned:
                    acc = b""
                    if self.env.identity is not None:
                        from .accusation import accusation_for
                        acc = accusation_for(self.env.identity, v, cmd) or b""
                    out.append(BanPeer(js.job_id, t.task_id, cmd.peer, cmd.reason, acc, v.results[cmd.index].outputs))
            elif isinstance(cmd, Load):
                r = v.results[cmd.index]
                out.append(LoadTensors(js.job_id, t.task_id, cmd.index, r.peer, r.outputs,
                                       v.task.inputs if cmd.inputs else ()))
            elif isinstance(cmd, Accept):
                self._accept(t, vt, cmd, now, out)
            elif isinstance(cmd, GiveUp):
                self.cancel(t, "verification gave up", now, out)
                js._fail_task(t, f"verification: {cmd.reason}", now, out)
        js._touch(t)

    def _trusted(self, t: TaskRun, vt: _VTask, now: float, out: list) -> None:
        ledger = self.env.ledger
        try:
            peers = [p for p in self.env.trusted(self.js.job_id) if not ledger.banned(p)
                     and not any(x.peer == p and x.trusted for x in vt.execs.values())]
        except TypeError:
            peers = []
        if not peers:
            self._apply(t, vt.v.lost(True, now), now, out)
            return
        self._offer(t, vt, peers[self.js.rng.randrange(len(peers))], True, now, out)

    def _crew(self, t: TaskRun, vt: _VTask) -> list:
        """The coordinator's crew (Ledger.crew: its vetted peers, and while they are few those nearest to
        vetting) that could take this task now: alive, a free slot, not suspected, not on it yet. Asked when
        placement named no vetted peer, so that results concentrate there and vet them soon."""
        if self.crew_size <= 0:
            return []
        taken = {x.peer for x in vt.execs.values()} | {r.peer for r in vt.v.results} | set(t.failed_peers)
        try:
            return [p for p in self.env.ledger.crew(self.crew_size, self.threshold)
                    if p not in taken and self.env.live(p) and not self.env.suspected(p) and self.env.free(p)]
        except TypeError:
            return []

    def _vetted_exec(self, t: TaskRun, vt: _VTask, now: float, out: list) -> None:
        """One execution asked only of a vetted peer (an escalation with no trusted peer): offered directly to
        one of the ledger's vetted peers, alive and not on this task yet; none: the execution is lost."""
        v = vt.v
        if v.state != "running" or v.pending <= sum(not x.trusted for x in vt.execs.values()) + vt.want:
            return                                              # nothing (left) to place
        taken = {x.peer for x in vt.execs.values()} | {r.peer for r in v.results} | set(t.failed_peers)
        try:
            peers = sorted((p for p in self.env.ledger.vetted(self.threshold)
                            if p not in taken and self.env.live(p) and not self.env.suspected(p)), key=str)
        except TypeError:
            peers = []
        if not peers:
            self._apply(t, v.lost(False, now), now, out)
            return
        peer = peers[self.js.rng.randrange(len(peers))]
        self._offer(t, vt, peer, False, now, out)
        vt.execs[next(reversed(vt.execs))].vetted = True

    def _accept(self, t: TaskRun, vt: _VTask, cmd: Accept, now: float, out: list) -> None:
        js, v = self.js, vt.v
        if cmd.anchored and cmd.verified and self.env.endorse is not None:
            anchor = v.results[cmd.agreeing[0]]
            peers = [v.results[i].peer for i in cmd.agreeing if not v.results[i].trusted]
            if peers:                               # anchor None: a check this coordinator ran itself
                self.env.endorse(js.job_id, t.task_id, anchor.peer if anchor.trusted or self.vetted(anchor.peer)
                                 else None, peers)
        self.cancel(t, "another result was accepted", now, out)
        r = v.results[cmd.index]
        lease = vt.lease_of[cmd.index]
        evidence = b""
        if self.env.identity is not None:
            try:
                evidence = signed.make_evidence(self.env.identity, v, cmd)
            except (ValueError, TypeError):
                evidence = b""
        t.verified = {"strategy": self.strategy.canonical(), "how": cmd.how, "verified": cmd.verified,
                      "peers": [v.results[i].peer for i in cmd.agreeing],
                      "trusted": [v.results[i].peer for i in cmd.agreeing if v.results[i].trusted],
                      "rejected": [[c.peer, c.proven, c.reason] for _, c in sorted(v.rejected.items())],
                      "executions": len(v.results), "evidence": evidence}
        js.stats["executions"] += len(v.results)
        t.outputs, t.inline, t.sizes = dict(r.outputs), dict(r.inline), vt.sizes_of.get(cmd.index, {})
        t.accepted, t.lease, t.peer = lease, lease, r.peer
        if t.outputs:
            out.append(ev.FetchResult(js.job_id, t.task_id, r.peer, lease, tuple(sorted(t.outputs.items()))))
            js._set(t, "fetching", now, f"accepted {lease}: {cmd.how}")
        else:
            js._done(t, now, f"accepted {lease} (inline): {cmd.how}", out)
