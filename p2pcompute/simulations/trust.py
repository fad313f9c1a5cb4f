"""Malicious executors and what verification made of them, for ``simulate jobs --malicious F --attack A``.

Theory of operation
-------------------
*Who lies.* A share ``malicious`` of the first peers (exactly, drawn from the
seed) and each fresh peer with that probability is malicious. Malicious peers
run the scheduler honestly (coordinating, replicating, placing: this
simulation is about executors) but lie about results, per ``attack``:

* ``wrong``: every result is a wrong CID of its own (no two liars agree);
* ``collude``: every liar returns the same wrong CID for a task;
* ``copy``: a liar returns, without computing, the output of the same task of
  the previous job (a real CID on the network; every copier copies the same);
* ``lazy``: a liar claims an output it never computed (every lazy peer the
  same made-up CID, so they agree with each other); nobody can fetch it;
* ``sometimes`` (also ``rare``): liars collude on a share ``rare_share`` (5%)
  of tasks, the same tasks for all of them (drawn from the task's name), and
  are honest otherwise: they build up trust between lies.

*Float noise* (``float_noise``): honest results differ in their last bits
(each honest peer's CID is its own; loaded tensors differ by 1e-9), as float
work does across machines; tasks are then not portable, so an exact
disagreement is no proof and only a tolerance tells liars (who differ by
far more) from honest peers. ``LoadTensors`` is answered after the transfer
time with such stand-in tensors.

*Who is trusted.* A job is submitted to an honest peer (the user's own
peer); that peer is the job's trusted peer for re-executions while it lives
(``VerifyEnv.trusted``); when it dies the user comes back through another
honest peer (a job submitted again, or a verification asking for its trusted
peer, gets the new one). Sybil rules are off here: the simulated peers share
a /24 and joined together.

*Vetting spreads.* A coordinator's anchored acceptance (``VerifyEnv.endorse``)
reaches every live peer after ``accuse_delay_s`` (batched), whose ledger
credits it only when the anchor is itself or a peer it vetted
(``Ledger.endorse``).

*Bans.* A coordinator's ``BanPeer`` (a proven wrong result) reaches every
live peer after ``accuse_delay_s`` (gossip); a receiver judges it by
recomputing the task (here: comparing the accused's CID with the honest
one) and bans the accused in its own ledger only if it is guilty.

*Metrics* (report.json): ``wrong_results_accepted`` (tasks of finished jobs
whose accepted output is not the honest CID), ``jobs_with_wrong_result``,
``executions_per_task`` (runs finished per task done; ``..._second_half``: of
the jobs submitted in the second half, once trust has built up), ``malicious_banned``
and ``honest_banned`` (distinct peers banned by any coordinator: true and
false positives), ``ban_time_s`` (from a malicious peer's start to its first
ban: median, max), and ``trust_targets`` (the issue's targets, met or not).
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

from ..scheduler.verification.replicated import VerifyEnv
from ..scheduler.verification.reputation import Ledger
from .churn import quantile

ATTACKS = ("wrong", "collude", "copy", "lazy", "sometimes", "rare")


def _share(*parts: Any) -> float:
    """A number in [0, 1) from the parts (the same for every peer: liars agree on which tasks to lie on)."""
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "big") / 2.0 ** 64


class TrustWorld:
    """The malicious peers of one jobs run, the ledgers' bans, and the trust metrics."""

    def __init__(self, run: Any) -> None:
        self.run = run
        s = run.s
        self.fraction, self.attack = s.malicious, s.attack
        self.rng = random.Random(f"{s.seed}/malicious")
        self.user_rng = random.Random(f"{s.seed}/users")
        first = self.rng.sample(range(s.peers), round(s.malicious * s.peers)) if s.malicious else []
        self.first_bad = set(first)
        self.bad: set = set()
        self.started: dict[Any, float] = {}
        self.submitter: dict[str, Any] = {}
        self.wrong = 0
        self.wrong_jobs = 0
        self.tasks_done = 0
        self.banned_by: dict[Any, float] = {}          # peer -> first time any coordinator banned it
        self.judged = self.false_accusations = 0
        self.runs_of: dict[str, int] = {}              # job -> runs finished for it
        self.tasks_of: dict[str, int] = {}             # job -> tasks done when it ended
        self.endorsements: list[tuple] = []            # (origin, anchor, peers) not yet spread
        self.endorsed = 0

    # --- peers --------------------------------------------------------------------------------

    def added(self, peer: Any) -> None:
        self.started[peer.id] = self.run.now
        if peer.index < self.run.s.peers:
            if peer.index in self.first_bad:
                self.bad.add(peer.id)
        elif self.fraction and self.rng.random() < self.fraction:
            self.bad.add(peer.id)

    def env(self, sp: Any) -> VerifyEnv:
        portable = not self.run.s.float_noise
        return VerifyEnv(ledger=Ledger(), trusted=self._trusted, traits=lambda spec: (portable, None),
                         live=self.run.cluster.live.__contains__, free=sp.has_room,
                         endorse=lambda job, task, anchor, peers: self.endorse(sp, anchor, peers))

    def lazy(self, sp: Any) -> bool:
        """Does ``sp`` claim outputs it cannot serve?"""
        return self.attack == "lazy" and sp.id in self.bad

    def endorse(self, sp: Any, anchor: Any, peers: list) -> None:
        """``sp`` accepted ``peers``' result anchored by ``anchor`` (None: by a check it ran): spread it."""
        if not self.endorsements:
            self.run.engine.after(self.run.s.accuse_delay_s, self._spread_endorsements, None, None)
        self.endorsements.append((sp.id, sp.id if anchor is None else anchor, tuple(peers)))

    def _spread_endorsements(self, _: Any, __: Any) -> None:
        batch, self.endorsements = self.endorsements, []
        now = self.run.now
        for pid in self.run.cluster.live:
            sp = self.run.sched.get(pid)
            if sp is None:
                continue
            ledger = sp.verify_env.ledger
            for origin, anchor, peers in batch:
                if origin != pid:
                    self.endorsed += ledger.endorse(anchor, peers, now, pid)

    def load(self, sp: Any, c: Any, cmd: Any) -> None:
        """Stand-in tensors of a result's outputs, after the transfer time (see the module doc)."""
        s = self.run.s
        self.run.engine.after(0.05 + s.output_bytes / s.bandwidth, self._loaded, sp, (c, cmd))

    def _loaded(self, sp: Any, job: tuple) -> None:
        import numpy as np
        c, cmd = job

        from ..scheduler.verification.replicated import TensorsLoaded
        if not sp.peer.alive or sp.jobs.get(c.js.job_id) is not c:
            return
        from ..scheduler.verification.replicated import TensorsUnavailable
        if self.attack == "lazy" and cmd.peer in self.bad:
            sp._feed(c, TensorsUnavailable(cmd.task, cmd.index))
            return

        def value(cid: str) -> Any:
            honest = f"out-{cmd.job_id}-{cmd.task}"
            base = cid.split("~")[0]
            v = 1.0 if base == honest else 2.0 + _share(cid)
            if "~" in cid:
                v += 1e-9 * int(cid.split("~")[1])
            return np.array([v, 2 * v])
        sp._feed(c, TensorsLoaded(cmd.task, cmd.index, {name: value(cid) for name, cid in cmd.outputs}))

    def submitted(self, job_id: str, pid: Any) -> None:
        """The user submits ``job_id`` through ``pid``: its own peer from now on if the one before is gone."""
        if self.submitter.get(job_id) not in self.run.cluster.live:
            self.submitter[job_id] = pid

    def _trusted(self, job_id: str) -> list:
        p = self.submitter.get(job_id)
        if p is not None and p not in self.run.cluster.live:        # the user comes back through another of
            live = [q for q in self.run._live_sorted() if q not in self.bad]   # its (honest) peers
            p = self.submitter[job_id] = live[self.user_rng.randrange(len(live))] if live else None
        return [p] if p is not None else []

    def honest_live(self, live: list) -> list:
        return [p for p in live if p not in self.bad] or live

    # --- results ------------------------------------------------------------------------------

    def output(self, sp: Any, job: str, task: str, cid: str) -> str:
        """The CID ``sp`` returns for a run whose honest output is ``cid``."""
        self.runs_of[job] = self.runs_of.get(job, 0) + 1
        if sp.id not in self.bad:
            return f"{cid}~{self.run.index_of(sp.id)}" if self.run.s.float_noise else cid
        if self.attack == "wrong":
            return f"bad-{job}-{task}-{self.run.index_of(sp.id)}"
        if self.attack == "copy":
            n = int(job[3:])
            return f"out-job{n - 1:06d}-{task}" if n > 0 else f"bad-{job}-{task}"
        if self.attack == "lazy":
            return f"lazy-{job}-{task}"
        if self.attack in ("rare", "sometimes") and _share(self.run.s.seed, job, task) >= self.run.s.rare_share:
            return f"{cid}~{self.run.index_of(sp.id)}" if self.run.s.float_noise else cid
        return f"bad-{job}-{task}"

    def job_ended(self, js: Any) -> None:
        wrong = 0
        for tid, t in js.tasks.items():
            if t.state == "done":
                self.tasks_done += 1
                wrong += any(name == "out" and cid.split("~")[0] != f"out-{js.job_id}-{tid}"
                             for name, cid in t.outputs.items())
        self.wrong += wrong
        self.wrong_jobs += wrong > 0
        self.tasks_of[js.job_id] = sum(t.state == "done" for t in js.tasks.values())

    # --- bans -----------------------------------------------------------------------------------

    def ban(self, sp: Any, cmd: Any) -> None:
        """``sp``'s coordinator proved ``cmd.peer`` wrong: note it, and let the accusation reach the others."""
        now = self.run.now
        self.banned_by.setdefault(cmd.peer, now)
        self.run.engine.after(0.0, self._banned_at, sp, cmd.peer)
        claimed = cmd.outputs
        for pid in list(self.run.cluster.live):
            other = self.run.sched.get(pid)
            if other is not None and other is not sp:
                self.run.engine.after(self.run.s.accuse_delay_s, self._judge, other, (cmd.job_id, cmd.task,
                                                                                     cmd.peer, claimed))

    def _judge(self, sp: Any, acc: tuple) -> None:
        job, task, peer, claimed = acc
        if not sp.peer.alive:
            return
        self.judged += 1
        if str(dict(claimed).get("out", "")).split("~")[0] != f"out-{job}-{task}":   # my recomputation differs
            if sp.verify_env.ledger.ban(peer, f"accused over {job}/{task}", self.run.now):
                self._banned_at(sp, peer)
        else:
            self.false_accusations += 1

    def _banned_at(self, sp: Any, peer: Any) -> None:
        """``sp``'s ledger banned ``peer``: its running verified jobs re-verify what rests on it."""
        from ..scheduler.verification.replicated import PeerBanned
        if not sp.peer.alive:
            return
        for c in list(sp.jobs.values()):
            if c.js.verify is not None and c.js.state == "running":
                sp._feed(c, PeerBanned(peer))

    # --- the report ------------------------------------------------------------------------------

    def report(self, runs_finished: int, ok: int, n: int) -> dict:
        times = [t - self.started.get(p, 0.0) for p, t in self.banned_by.items() if p in self.bad]
        honest_banned = sum(1 for p in self.banned_by if p not in self.bad)
        epr = runs_finished / self.tasks_done if self.tasks_done else None
        half = [j.plan.job_id for j in self.run.jobs[len(self.run.jobs) // 2:]]
        late_tasks = sum(self.tasks_of.get(j, 0) for j in half)
        late = sum(self.runs_of.get(j, 0) for j in half) / late_tasks if late_tasks else None
        success = ok / n if n else 0.0
        want = 0.99 if self.fraction >= 0.4 else 0.999
        return {
            "malicious": self.fraction, "attack": self.attack if self.fraction else None,
            "verification": self.run.s.verification,
            "malicious_peers": len(self.bad),
            "wrong_results_accepted": self.wrong,
            "wrong_accepted": self.wrong,                   # the name for it
            "jobs_with_wrong_result": self.wrong_jobs,
            "executions_per_task": None if epr is None else round(epr, 3),
            "executions_per_task_second_half": None if late is None else round(late, 3),
            "endorsements_credited": self.endorsed,
            "malicious_banned": sum(1 for p in self.banned_by if p in self.bad),
            "honest_banned": honest_banned,
            "ban_time_s": {"median": None if not times else round(quantile(times, 0.5), 1),
                           "max": None if not times else round(max(times), 1)},
            "accusations_judged": self.judged,
            "false_accusations": self.false_accusations,
            "trust_targets": {"zero_wrong_accepted": self.wrong == 0,
                              f"success_at_least_{want:g}": success >= want,
                              "executions_per_task_at_most_1.5": epr is not None and epr <= 1.5,
                              "second_half_executions_per_task_at_most_1.5": late is not None and late <= 1.5,
                              "no_honest_peer_banned": honest_banned == 0},
        }
