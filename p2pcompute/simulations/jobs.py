"""The jobs scenario: the real scheduler state machines on a churning cluster, in virtual time.

Theory of operation
-------------------
*Cluster.* As ``simulate churn`` does: N peers start converged and run the
real membership and Kademlia state machines (cluster.py); a peer's
``MemberDied`` comes from its own failure detection. Each peer also gets a
``SchedPeer`` (sched_peer.py): coordinator, replica and executor of the real
``JobState``, ``Placement`` and ``ExecutorLeases``. Peers republish their
capability record (free slots, load) every ``capability_every`` seconds when
it changed.

*Workload* (its own seeded generator, so every placement mode gets the same
jobs). Jobs arrive as a Poisson process whose rate makes the offered load
``load`` of all slots: rate = load · peers · slots / (mean task seconds per
job). A job maps over ``files_per_job`` input files (one task each, its
duration drawn from an exponential of mean ``task_s``, clipped) and, with
more than one file, ends with a combine task over their outputs. Each file
is put on ``file_copies`` random live peers when the job is submitted (the
provider hints placement gets); a task that runs away from its input first
pulls it at ``bandwidth``. A file whose holder crashes moves to another live
peer (the pinning layer's repair). A job is submitted to a random live peer,
which coordinates it; the client follows
its job until it ends: when no live peer holds the job's record (its
coordinator died before any replica acked the job, or its coordinator and
every replica holding it died), it submits the job again, the same plan and
ID, to a live peer (``resubmits``). A resubmission's line starts
``RESUBMIT_EPOCHS`` above the previous submission's: a peer that dropped a
record of an earlier line keeps its fence a while, and must not fence off
the new submission with a line whose holders are all dead. A coordinator
whose replica does not acknowledge a record within ``replica_silence_s``
passes it over (``replicas.pick``) and sends the record to the next closest
live member, without waiting for membership to declare the silent one dead.

*Churn.* ``churn_fraction`` of the peers are replaced every ``churn_period``
(silent crash, a fresh peer joins), as in churn.py. A crashed peer loses its
runs, its reservations and the jobs it coordinates; replicas take over.
``kill_coordinators``: the coordinator of every job is crashed once while
the job runs (and replaced by a fresh peer). Every ``kill_every_s`` the
live peer coordinating the oldest running job not yet hit (submitted at
least ``kill_after_s`` ago; ties: the most such jobs) is crashed, with
every job it coordinates (each counts as killed). A peer is spared while it
coordinates a job hit ``kill_max_per_job`` (20) times already (a successor
coordinator takes jobs that were hit over, and new jobs are submitted to
it; ``kill_repeats`` counts the second and later hits), or while a running
job whose record it holds (as coordinator or replica) would be left with
fewer than ``kill_keep_holders`` (2) live holders: the job survives its
coordinator's death and one more death at any moment, as a replica set of
3 promises. ``jobs_killed`` says how many jobs it reached,
``killed_jobs_succeeded`` how many of those completed. A job is not reached
when it ends within ``kill_after_s``, or while every peer coordinating it
is spared. A takeover re-runs the job's running tasks (their leases are
revoked), so each hit costs a job its running work: latency grows with
``kill_max_per_job``.

*Metrics.* A job ends when its coordinator carries out the final ``Report``
(after a replica acked it). ``tasks_lost``: tasks of jobs with no outcome
at the end. ``duplicate_results_accepted``: over the final ``JobState`` of
each job, results accepted (its ``results_accepted`` stat, carried through
takeovers in the record) beyond the tasks done. ``locality_share``: of the
map tasks done, the share whose accepted run was on a peer holding its file.
``msgs_per_job``: scheduler messages (offers, accepts, grants, revokes,
heartbeats, results, fetches, records, acks) per job; gossip and DHT traffic
is reported apart. ``repeated_final_reports``: a job run to its end by a
second line of coordinators (two replicas that both took over, not fenced
in time); ``ended_jobs_reannounced``: a replica that kept an ended job's
record (its "forget" lost) took it over and told the same outcome again;
``takeovers_averted``: a replica about to take over learnt of a newer line
from another holder (sched_peer.py) and dropped its copy instead.
"""

from __future__ import annotations

import copy
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..gossip.messages import DEAD
from ..scheduler.events import JobConfig
from ..scheduler.model import MAX_INPUTS_PER_TASK, InputRef, JobPlan, Requirements, TaskSpec
from ..scheduler.placement import MODES, Candidate
from .churn import quantile
from .cluster import Cluster, ClusterConfig, SimPeer
from .des import quiet_gc, settle_gc
from .sched_peer import SchedPeer

MB = 1 << 20
RESUBMIT_EPOCHS = 1_000_000       # a resubmission's line starts this many epochs above the previous one's


@dataclass(frozen=True)
class JobsScenario:
    peers: int = 100
    jobs: int = 10_000
    churn_fraction: float = 0.10
    churn_period: float = 600.0
    seed: int = 7
    files_per_job: int = 4
    kill_coordinators: bool = False
    load: float = 0.8
    placement: str = "sparrow"
    locality_weight: float = 1.0        # PlacementConfig's, for the sparrow mode
    holders_only_share: float = 0.5     # PlacementConfig's: above 1 turns holders-only offers off
    busy_holders_move: bool = True      # PlacementConfig's: False offers a task to its busy holders only
    slots: int = 4                      # task slots per peer
    task_s: float = 10.0                # mean map task duration
    combine_s: float = 1.0
    file_mb: tuple[int, int] = (10, 100)
    file_copies: int = 1
    output_bytes: int = MB
    bandwidth: float = 50e6             # bytes/s a peer pulls an input at
    replicas: int = 3
    replicate_delay: float = 1.0        # changes of a job go to its replicas at most this late
    replicate_retry_s: float = 5.0
    replica_silence_s: float = 2.0      # a replica that did not ack a record this long is passed over (replicas.pick)
    replica_passed_s: float = 30.0      # ... for this long, unless membership says otherwise first
    fetch_timeout_s: float = 15.0
    max_queued: int = 16                # reservations an executor keeps beyond its slots
    attempt_fail: float = 0.0           # probability that a run fails by itself (a crash of the task)
    drop: float = 0.001                 # scheduler messages lost outright (a stream reset)
    loss: float = 0.01
    latency: tuple[float, float] = (0.02, 0.12)
    settle: float = 10.0
    drain_s: float = 1800.0             # after the last submission, how long to wait for the jobs
    submit_timeout_s: float = 10.0
    fence_keep_s: float = 600.0         # a peer remembers the line of a job record it dropped this long
    keep_ended_s: float = 60.0          # a replica keeps an ended job's record this long (if not told to forget)
    takeover_wait_s: float = 10.0       # the r-th live replica takes over after r times this, if nobody did
    takeover_query_s: float = 1.0       # before a takeover, the other holders are asked for a newer line this long
    kill_every_s: float = 0.25          # kill_coordinators: a coordinator is crashed at most this often
    kill_after_s: float = 0.5           # kill_coordinators: a job's coordinator is killed once it ran this long
    kill_max_per_job: int = 20          # kill_coordinators: a peer coordinating a job killed this often is spared
    kill_keep_holders: int = 2          # kill_coordinators: live holders of a running job's record a kill leaves
    capability_every: float = 5.0       # a peer republishes its capability record (free slots, load) if changed
    seeds_per_join: int = 3
    job_config: JobConfig = field(default_factory=lambda: JobConfig(offer_timeout_s=120.0))
    malicious: float = 0.0              # trust.py: share of peers that lie about results, how, and the jobs'
    attack: str = "wrong"               # verification strategy (job.yaml's text)
    verification: str = "none"
    rare_share: float = 0.05            # attack "sometimes" (or "rare"): the share of tasks liars lie on
    accuse_delay_s: float = 2.0         # a ban's accusation reaches the other peers this late
    float_noise: bool = False           # honest results differ in the last bits (trust.py)
    config: ClusterConfig = field(default_factory=ClusterConfig)

    def __post_init__(self) -> None:
        if self.peers < 2 or self.jobs < 1 or self.files_per_job < 1:
            raise ValueError("a jobs simulation needs at least 2 peers, 1 job and 1 file per job")
        if not 0.0 < self.load <= 10.0:
            raise ValueError("load must be within (0, 10]")
        if self.placement not in MODES:
            raise ValueError(f"placement {self.placement!r}: use one of {', '.join(MODES)}")
        from .trust import ATTACKS
        if not 0.0 <= self.malicious < 1.0 or self.attack not in ATTACKS:
            raise ValueError(f"malicious is a share of peers below 1; attack one of {', '.join(ATTACKS)}")
        if not 0.0 <= self.churn_fraction <= 1.0 or self.churn_period <= 0:
            raise ValueError("churn fraction must be within 0..1 and the period positive")
        if self.kill_max_per_job < 1 or self.kill_keep_holders < 1:
            raise ValueError("--kill-max-per-job and the holders a kill leaves must be at least 1")

    @property
    def job_seconds(self) -> float:
        """Mean task seconds of one job (what the load is computed from)."""
        return self.files_per_job * self.task_s + (self.combine_s if self.files_per_job > 1 else 0.0)

    @property
    def rate(self) -> float:
        return self.load * self.peers * self.slots / self.job_seconds


@dataclass
class JobRun:
    """What the scenario knows of one job."""

    plan: JobPlan
    submit_at: float
    durations: dict[str, float]
    sizes: dict[str, int]                      # file cid -> bytes
    coordinator: Any = None
    submissions: int = 0
    acked: bool = False
    killed: int = 0                            # times its coordinator was crashed by kill_coordinators
    outcome: str | None = None
    reason: str = ""
    ended: float | None = None


def make_plan(job_id: str, files: list[tuple[str, int]], verification: str = "none") -> JobPlan:
    maps = [TaskSpec(f"m{i}", "map", "graph", b"", inputs=(InputRef("in", cid=cid, size=size),),
                     requirements=Requirements()) for i, (cid, size) in enumerate(files)]
    tasks = list(maps)
    outputs = (("m0", "out"),)
    if len(maps) > 1:
        sources = [f"m{i}" for i in range(len(maps))]
        if len(sources) > MAX_INPUTS_PER_TASK:  # a tree: partial combines of at most that many outputs each
            groups = [sources[k:k + MAX_INPUTS_PER_TASK] for k in range(0, len(sources), MAX_INPUTS_PER_TASK)]
            for g, group in enumerate(groups):
                tasks.append(TaskSpec(f"c{g}", "combine", "combine", b"", requirements=Requirements(),
                                      inputs=tuple(InputRef(f"in{i}", task=t, output="out") for i, t in enumerate(group))))
            sources = [f"c{g}" for g in range(len(groups))]
        tasks.append(TaskSpec("c", "combine", "combine", b"", requirements=Requirements(),
                              inputs=tuple(InputRef(f"in{i}", task=t, output="out") for i, t in enumerate(sources))))
        outputs = (("c", "out"),)
    return JobPlan(job_id, "simulated", tuple(tasks), outputs=outputs, verification=verification)


def workload(s: JobsScenario) -> list[JobRun]:
    """Every job of the scenario, from its own generator: the same for every placement mode."""
    wl = random.Random(f"{s.seed}/workload")
    out, t = [], s.settle
    for j in range(s.jobs):
        t += wl.expovariate(s.rate)
        job_id = f"job{j:06d}"
        files = [(f"file-{j}-{i}", wl.randint(*s.file_mb) * MB) for i in range(s.files_per_job)]
        durations = {f"m{i}": min(8 * s.task_s, max(0.05 * s.task_s, wl.expovariate(1 / s.task_s)))
                     for i in range(s.files_per_job)}
        plan = make_plan(job_id, files, s.verification)
        durations |= {task.task_id: s.combine_s for task in plan.tasks if task.kind == "combine"}
        out.append(JobRun(plan, t, durations, dict(files)))
    return out


def _normal_reason(reason: str) -> str:
    text = reason.split("; attempts")[0]
    text = re.sub(r"PeerId\([^)]*\)", "PEER", text)
    return re.sub(r"\d+(\.\d+)?", "N", text)[:120]


class JobsRun:
    """Sets up the cluster and the schedulers, runs the workload and the churn, and reports."""

    def __init__(self, scenario: JobsScenario) -> None:
        s = self.s = scenario
        self.cluster = Cluster(s.seed, latency=s.latency, loss=s.loss, config=s.config)
        self.engine = self.cluster.engine
        self.rng = self.cluster.rng
        self.sched_rng = random.Random(f"{s.seed}/sched")
        self.msg_rng = random.Random(f"{s.seed}/messages")
        self.submit_rng = random.Random(f"{s.seed}/submit")
        self.place_rng = random.Random(f"{s.seed}/files")
        self.fail_rng = random.Random(f"{s.seed}/failures")
        self.kill_rng = random.Random(f"{s.seed}/kills")
        self.sched: dict[Any, SchedPeer] = {}
        self.index: dict[Any, int] = {}
        self.jobs = workload(s)
        self.by_id = {j.plan.job_id: j for j in self.jobs}
        self.holders: dict[str, list] = {}          # cid -> peers holding it (files and outputs)
        self.files_at: dict[Any, list[str]] = {}     # peer -> file cids it holds
        self.links: dict[tuple, float] = {}
        self.msgs: Counter = Counter()
        self.dropped: Counter = Counter()
        self.refusals: Counter = Counter()
        self.stale_msgs: Counter = Counter()
        self.run_local: dict[tuple[str, str], bool] = {}
        self.runs_done: Counter = Counter()          # peer index -> runs finished
        self.runs_lost = 0
        self.crashes = self.joins = self.takeovers = self.coordinator_losses = 0
        self.resubmits = self.repeated_reports = self.fenced_coordinators = self.reannounced = 0
        self.takeovers_averted = 0
        self.failures_made = 0
        self.kills = self.kill_waits = 0
        self.kill_from = 0                            # jobs before this index have ended or were killed
        self.finished = 0
        self.duplicates = 0
        self.local_maps = self.maps_done = 0
        self.published: dict[Any, tuple] = {}
        self.sent_at_start: Counter = Counter()
        self.wall_seconds = self.cpu_seconds = 0.0
        from .trust import TrustWorld
        self.trust = TrustWorld(self)
        self.cluster.on_member_changed = self._member_changed
        self.cluster.on_capability_changed = self._capability_changed
        self.cluster.on_crash = self._crashed
        self._schedule()

    # --- hooks for SchedPeer ---------------------------------------------------------------------

    @property
    def now(self) -> float:
        return self.engine.now

    def index_of(self, pid: Any) -> int:
        return self.index.get(pid, 1 << 30)

    def send(self, src: SchedPeer, dst: Any, kind: str, body: tuple, delay: float = 0.0) -> None:
        """A scheduler message on the link src -> dst (latency, loss as a retransmission, rare drops, FIFO)."""
        if dst == src.id:
            self.engine.after(delay, self._deliver, self.sched[dst], (src.id, kind, body))
            return
        self.msgs[kind] += 1
        target = self.cluster.live.get(dst)
        if target is None:
            self.dropped["dead peer"] += 1
            return
        rng, net = self.msg_rng, self.cluster.net
        if self.s.drop and rng.random() < self.s.drop:
            self.dropped["drop"] += 1
            return
        params = net._params(src.id, dst)
        at = self.now + delay + params.sample(rng)
        if params.loss and rng.random() < params.loss:
            at += self.s.config.stream_rto
        last = self.links.get((src.id, dst), 0.0)
        at = max(at, last)
        self.links[src.id, dst] = at
        self.engine.at(at, self._deliver, self.sched[dst], (src.id, kind, body))

    def _deliver(self, dst: SchedPeer, msg: tuple) -> None:
        if not dst.peer.alive:
            self.dropped["crashed in flight"] += 1
            return
        dst.receive(*msg)

    def providers_for(self, dispatches: list) -> dict[str, list]:
        return {cid: self.holders.get(cid, []) for d in dispatches for _, cid, _ in d.inputs if cid}

    def oracle_candidates(self) -> list[Candidate]:
        out = []
        for pid, peer in self.cluster.live.items():
            ex = self.sched[pid].ex
            out.append(Candidate(pid, ex.free_slots(), 4.0, 8 << 30, "x86_64", queue=ex.queued()))
        out.sort(key=lambda c: self.index[c.peer])
        return out

    def own_candidate(self, sp: SchedPeer) -> Candidate:
        free, load = sp.own_load()
        return Candidate(sp.id, free, 4.0, 8 << 30, "x86_64", load=load)

    def run_time(self, sp: SchedPeer, job: str, task: str) -> tuple[float, bool]:
        jr = self.by_id[job]
        seconds, local = jr.durations[task], True
        for ref in jr.plan.tasks[self._task_index(jr, task)].inputs:
            cid = ref.cid or f"out-{job}-{ref.task}"
            if sp.id not in self.holders.get(cid, ()):
                local = False
                seconds += (jr.sizes.get(cid, self.s.output_bytes)) / self.s.bandwidth
        return seconds, local

    @staticmethod
    def _task_index(jr: JobRun, task: str) -> int:
        return int(task[1:]) if task[0] == "m" else len(jr.plan.tasks) - 1

    def attempt_fails(self, job: str, task: str) -> str:
        if self.s.attempt_fail and self.fail_rng.random() < self.s.attempt_fail:
            self.failures_made += 1
            return f"simulated crash #{self.failures_made}"
        return ""

    def output_made(self, sp: SchedPeer, job: str, task: str, lease: str, local: bool) -> str:
        cid = f"out-{job}-{task}"
        holders = self.holders.setdefault(cid, [])
        if sp.id not in holders:
            holders.append(sp.id)
        self.run_local[job, lease] = local
        self.runs_done[self.index[sp.id]] += 1
        return self.trust.output(sp, job, task, cid)

    def refused(self, reason: str) -> None:
        self.refusals[_normal_reason(reason)] += 1

    def fenced(self) -> None:
        self.fenced_coordinators += 1

    def averted(self) -> None:
        self.takeovers_averted += 1

    def stale(self, kind: str) -> None:
        self.stale_msgs[kind] += 1

    def copy_record(self, record: dict) -> dict:
        return copy.deepcopy(record)

    def took_over(self, sp: SchedPeer, js: Any) -> None:
        self.takeovers += 1
        jr = self.by_id[js.job_id]
        if jr.coordinator != sp.id:
            jr.coordinator = sp.id
            self.engine.after(self.s.submit_timeout_s, self._check_submitted, jr, sp.id)

    def job_reported(self, sp: SchedPeer, js: Any, report: Any, again: bool = False) -> None:
        """The final report of a job; ``again``: from a takeover of a record that had already ended."""
        jr = self.by_id[js.job_id]
        if jr.outcome is not None:
            if again:
                self.reannounced += 1          # the same outcome told again: its "forget" was lost
            else:
                self.repeated_reports += 1     # a second line of coordinators ran the job to its end
            return
        jr.outcome, jr.reason, jr.ended = report.kind, report.reason, self.now
        self.finished += 1
        self.trust.job_ended(js)
        done = sum(1 for t in js.tasks.values() if t.state == "done")
        self.duplicates += max(0, js.stats["results_accepted"] - done)
        for tid, t in js.tasks.items():
            if tid[0] == "m" and t.state == "done":
                self.maps_done += 1
                self.local_maps += bool(self.run_local.get((js.job_id, t.accepted)))
        for t in js.tasks.values():         # outputs are pinned by the coordinator: a provider too
            if t.state == "done":
                holders = self.holders.setdefault(f"out-{js.job_id}-{t.task_id}", [])
                if sp.id not in holders:
                    holders.append(sp.id)

    # --- cluster hooks ---------------------------------------------------------------------------

    def _member_changed(self, now: float, observer: SimPeer, cmd: Any) -> None:
        sp = self.sched.get(observer.id)
        if sp is None:
            return
        if cmd.new >= DEAD:
            sp.member_died(cmd.peer)
        else:
            sp.view_changed()

    def _capability_changed(self, now: float, observer: SimPeer, cmd: Any) -> None:
        sp = self.sched.get(observer.id)
        if sp is not None:
            sp.view_changed()

    def _crashed(self, now: float, peer: SimPeer) -> None:
        sp = self.sched[peer.id]
        self.runs_lost += len(sp.runs)
        self.coordinator_losses += len(sp.jobs)
        for cid in self.files_at.pop(peer.id, []):
            holders = self.holders[cid]
            holders.remove(peer.id)
            live = [p for p in self.cluster.live if p not in holders]
            if live:
                new = live[self.place_rng.randrange(len(live))]
                holders.append(new)
                self.files_at.setdefault(new, []).append(cid)

    # --- scheduling ------------------------------------------------------------------------------

    def _schedule(self) -> None:
        s, at = self.s, self.engine.at
        at(0.0, self._start, [self.cluster.new_peer() for _ in range(s.peers)], None)
        for jr in self.jobs:
            at(jr.submit_at, self._submit, jr, None)
        if s.kill_coordinators:
            at(self.jobs[0].submit_at + self.kill_rng.uniform(0.5, 1.0) * s.kill_every_s, self._kill, None, None)
        if s.churn_fraction > 0:
            interval = s.churn_period / (s.churn_fraction * s.peers)
            at(s.settle + self.rng.uniform(0, interval), self._churn, interval, None)
        at(s.settle, self._measure_start, None, None)

    def _start(self, peers: list[SimPeer], _: Any) -> None:
        for p in peers:
            self._add(p)
        self.cluster.start_converged(peers)

    def _add(self, peer: SimPeer) -> None:
        self.index[peer.id] = peer.index
        self.trust.added(peer)
        self.sched[peer.id] = SchedPeer(self, peer, random.Random(self.sched_rng.getrandbits(64)))
        self.engine.after(self.sched_rng.uniform(0, self.s.capability_every), self._publish, peer, None)

    def _publish(self, peer: SimPeer, _: Any) -> None:
        if not peer.alive or self.done:
            return
        free, load = self.sched[peer.id].own_load()
        values = (free, round(load, 2))
        if self.published.get(peer.id) != values:
            self.published[peer.id] = values
            self.cluster.publish_capability(peer, free_slots=free, load=round(load, 2))
        self.engine.after(self.s.capability_every, self._publish, peer, None)

    def _measure_start(self, _: Any, __: Any) -> None:
        self.sent_at_start = Counter(self.cluster.sent)

    @property
    def done(self) -> bool:
        return self.finished == len(self.jobs)

    def _live_sorted(self) -> list[Any]:
        return sorted(self.cluster.live, key=self.index.__getitem__)

    def _submit(self, jr: JobRun, _: Any) -> None:
        if jr.outcome is not None:
            return
        live = self._live_sorted()
        if jr.coordinator is None:               # first submission: put the files on the network
            for cid in jr.sizes:
                for pid in self.place_rng.sample(live, min(self.s.file_copies, len(live))):
                    self.holders.setdefault(cid, []).append(pid)
                    self.files_at.setdefault(pid, []).append(cid)
        else:
            self.resubmits += 1
        if jr.coordinator is None and self.s.malicious:
            live = self.trust.honest_live(live)          # the user's own peer is honest (trust.py)
        pid = live[self.submit_rng.randrange(len(live))]
        self.trust.submitted(jr.plan.job_id, pid)
        jr.coordinator = pid
        jr.submissions += 1
        self.sched[pid].submit(jr.plan, RESUBMIT_EPOCHS * (jr.submissions - 1))
        self.engine.after(self.s.submit_timeout_s, self._check_submitted, jr, pid)

    def _check_submitted(self, jr: JobRun, pid: Any) -> None:
        """The client's side: it follows its job until the job ends, and submits it again (the same plan and ID)
        to a live peer when no live peer holds it: its coordinator died before any replica acked it, or the
        coordinator and every replica holding its record are dead."""
        if jr.outcome is not None or jr.coordinator != pid:
            return
        job = jr.plan.job_id
        if any(job in self.sched[p].jobs or job in self.sched[p].held for p in self.cluster.live):
            self.engine.after(self.s.submit_timeout_s, self._check_submitted, jr, pid)
            return
        self._submit(jr, None)

    def _replace(self, victim: SimPeer) -> None:
        self.cluster.crash(victim)
        self.crashes += 1
        live = list(self.cluster.live.values())
        seeds = tuple(self.rng.sample(live, min(self.s.seeds_per_join, len(live))))
        peer = self.cluster.new_peer()
        self._add(peer)
        self.cluster.start_peer(peer, seeds)
        self.joins += 1

    def _churn(self, interval: float, _: Any) -> None:
        if self.done:
            return
        live = list(self.cluster.live.values())
        if len(live) > 2:
            self._replace(live[self.rng.randrange(len(live))])
        self.engine.after(interval, self._churn, interval, None)

    def _holders(self) -> Counter:
        """Running job -> how many live peers hold its record (its coordinator and its replicas)."""
        count: Counter = Counter()
        for pid in self.cluster.live:
            sp = self.sched[pid]
            count.update(list(sp.jobs))
            count.update(j for j, h in sp.held.items() if j not in sp.jobs and h.record["state"] == "running")
        return count

    @staticmethod
    def _done_share(sp: SchedPeer, jr: JobRun) -> float:
        """How near its end a job is: the share of its tasks done (a job about to end is hit first)."""
        p = sp.jobs[jr.plan.job_id].js.progress()
        return p.done / p.total if p.total else 0.0

    def _kill(self, _: Any, __: Any) -> None:
        """Crash the live coordinator of the oldest running job whose coordinator was not killed yet (module doc)."""
        if self.done:
            return
        s, now = self.s, self.now
        holders: Counter | None = None
        best, best_key = None, None
        for pid in self.cluster.live:
            sp = self.sched[pid]
            running = [jr for jr in (self.by_id[j] for j in sp.jobs) if jr.outcome is None]
            if not running or any(jr.killed >= s.kill_max_per_job for jr in running):
                continue                                     # spare a job killed often enough already
            fresh = [jr for jr in running if not jr.killed and jr.submit_at <= now - s.kill_after_s]
            if not fresh:
                continue
            near = max(self._done_share(sp, jr) for jr in fresh)
            key = (near, -min(jr.submit_at for jr in fresh), len(fresh), -self.index[pid])
            if best_key is not None and key <= best_key:
                continue
            if holders is None:
                holders = self._holders()
            touched = set(sp.jobs) | {j for j, h in sp.held.items() if h.record["state"] == "running"}
            if any(holders[j] - 1 < s.kill_keep_holders for j in touched):
                self.kill_waits += 1
                continue
            best, best_key = sp, key
        if best is not None:
            for job in best.jobs:
                self.by_id[job].killed += 1
            self.kills += 1
            self._replace(best.peer)
        self.engine.after(s.kill_every_s, self._kill, None, None)

    # --- running ---------------------------------------------------------------------------------

    @property
    def end(self) -> float:
        return self.jobs[-1].submit_at + self.s.drain_s

    def run(self, progress: Callable[[float, float], None] | None = None, step: float = 5.0) -> dict:
        started, cpu = time.perf_counter(), time.process_time()
        t, end = 0.0, self.end
        with quiet_gc():              # the cluster's long-lived tables out of the collector's way (des.py)
            while t < end and not (self.done and t > self.jobs[-1].submit_at):
                t = min(end, t + step)
                self.engine.run_until(t)
                settle_gc()
                if progress is not None:
                    progress(t, end)
        self.virtual_seconds = t
        self.wall_seconds = time.perf_counter() - started
        self.cpu_seconds = time.process_time() - cpu
        return self.report()

    def report(self) -> dict:
        s = self.s
        ok = [j for j in self.jobs if j.outcome == "done"]
        failed = [j for j in self.jobs if j.outcome in ("failed", "cancelled")]
        unfinished = [j for j in self.jobs if j.outcome is None]
        lat = [j.ended - j.submit_at for j in ok]
        n = len(self.jobs)
        gossip = Counter(self.cluster.sent)
        gossip.subtract(self.sent_at_start)

        def r(x: float | None, nd: int = 3) -> float | None:
            return None if x is None else round(x, nd)

        return {
            "peers": s.peers,
            "jobs": n,
            "succeeded": len(ok),
            "failed": len(failed),
            "failure_reasons": dict(sorted(Counter(_normal_reason(j.reason) for j in failed).items())),
            "job_latency_s": {"median": r(quantile(lat, 0.5)), "p99": r(quantile(lat, 0.99)),
                              "p90": r(quantile(lat, 0.9)), "mean": r(sum(lat) / len(lat) if lat else None),
                              "max": r(max(lat) if lat else None)},
            "locality_share": r(self.local_maps / self.maps_done, 4) if self.maps_done else None,
            "msgs_per_job": r(sum(self.msgs.values()) / n, 2),
            "tasks_lost": sum(len(j.plan.tasks) for j in unfinished),
            "duplicate_results_accepted": self.duplicates,
            "wall_seconds": round(self.wall_seconds, 2),
            "seed": s.seed,
            "placement": s.placement,
            # --- more detail ---
            "cpu_seconds": round(self.cpu_seconds, 2),
            "unfinished_jobs": len(unfinished),
            "virtual_seconds": r(self.virtual_seconds),
            "load": s.load,
            "files_per_job": s.files_per_job,
            "tasks": sum(len(j.plan.tasks) for j in self.jobs),
            "kill_coordinators": s.kill_coordinators,
            "jobs_killed": sum(1 for j in self.jobs if j.killed),
            "killed_jobs_succeeded": sum(1 for j in self.jobs if j.killed and j.outcome == "done"),
            "kill_repeats": sum(j.killed - 1 for j in self.jobs if j.killed > 1),
            "coordinators_killed": self.kills,
            "kill_waits": self.kill_waits,
            "kill_every_s": s.kill_every_s if s.kill_coordinators else None,
            "churn": {"fraction": s.churn_fraction, "period_s": s.churn_period, "crashes": self.crashes,
                      "joins": self.joins},
            "takeovers": self.takeovers,
            "coordinator_losses": self.coordinator_losses,
            "resubmits": self.resubmits,
            "runs_lost_in_crashes": self.runs_lost,
            "runs_finished": sum(self.runs_done.values()),
            "repeated_final_reports": self.repeated_reports,
            "ended_jobs_reannounced": self.reannounced,
            "fenced_coordinators": self.fenced_coordinators,
            "takeovers_averted": self.takeovers_averted,
            "msgs_by_kind": dict(sorted(self.msgs.items())),
            "msgs_dropped": dict(sorted(self.dropped.items())),
            "gossip_dht_msgs_per_job": r(sum(gossip.values()) / n, 2),
            "refused": dict(sorted(self.refusals.items())),
            "stale_msgs": dict(sorted(self.stale_msgs.items())),
            "events": self.engine.events,
            **self.trust.report(sum(self.runs_done.values()), len(ok), n),
        }

    def series(self) -> dict[str, Any]:
        return {"latencies": [j.ended - j.submit_at for j in self.jobs if j.outcome == "done"],
                "tasks_per_peer": [self.runs_done[p.index] for p in self.cluster.peers]}


def run_jobs(scenario: JobsScenario, progress: Callable[[float, float], None] | None = None) -> tuple[dict, JobsRun]:
    run = JobsRun(scenario)
    return run.run(progress), run
