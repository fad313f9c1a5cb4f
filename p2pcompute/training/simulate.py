"""``simulate train``: the training coordinator on a churning simulated cluster, with the real numeric work.

Theory of operation
-------------------
*Cluster.* As ``simulate jobs`` does: N peers start converged and run the
real membership and Kademlia state machines (simulations/cluster.py) in
virtual time. Peer 0 runs the training ``Coordinator`` (coordinator.py, the
same pure machine the daemon's driver feeds); the others are its workers.
What the coordinator hears of them is its own peer's membership: a worker's
``PeerLost`` is peer 0's failure detector declaring it dead (or left), a
``PeerJoined`` a new member turning alive. Peer 0 is never churned (a
coordinator's takeover is the job layer's, not simulated here).

*Work.* An ``Assign`` is computed at once with the real opset-2 graphs
(``inprocess.work``: the shard's minibatch, the parameters of the assigned
version) and its update delivered after a virtual duration: parameters down
and the update up at ``bandwidth`` plus a link latency each way, and the
compute time ``task_s`` x the peer's speed (seeded, 0.5-1.5) x steps. A peer
that crashes before delivering loses the work: the shard goes to another
peer when peer 0 declares the worker dead, or when ``task_timeout`` passes.
A ``Tick`` every second drives the timeouts.

*Byzantine peers.* ``byzantine`` x (N - 1) of the first workers lie, and
a fresh peer lies with probability ``byzantine``; a liar's updates are attacked (``inprocess.attack``:
sign_flip, scaled or biased). The aggregation rule (``aggregate.rule``)
is what keeps them out.

*Churn.* ``churn_fraction`` of the peers are replaced every
``churn_period`` (a silent crash, and a fresh peer joins through a few live
seeds), as in ``simulate churn``. ``kill_per_round`` also crashes (and
replaces) that many peers holding unfinished shards of each round, in the
middle of the round.

*Report.* Final test accuracy, rounds, updates, bytes moved (as the
coordinator counts them) in all and per round, virtual and wall time,
crashes, shards reassigned, updates refused, and the curve
([round, loss, accuracy, bytes, virtual seconds]) for the PNG.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from ..gossip.messages import ALIVE, DEAD
from ..simulations.cluster import Cluster, SimPeer
from . import data as datasets
from .coordinator import Aggregate, Apply, Assign, Banned, Coordinator, PeerJoined, PeerLost, SpotCheck, \
    SpotChecked, Tick, TrainConfig, UpdateArrived
from .inprocess import RunConfig, Updater, attack, far_from, work
from .sharding import aggregate_memory
from .model import Model, accuracy, init_params
from .optim import nbytes


@dataclass
class TrainScenario:
    peers: int = 100
    mode: str = "sync"
    shards: int = 20
    rounds: int = 120
    local_steps: int = 10
    staleness_bound: int = 8
    batch: int = 32
    lr: float = 0.1
    momentum: float = 0.9
    hidden: tuple[int, ...] = (32,)
    byzantine: float = 0.0
    attack: str = "sign_flip"
    rule: str = "mean"
    tolerate: int = 0                 # liars a trimmed mean trims from each end (0: twice as many as expected)
    churn_fraction: float = 0.0
    churn_period: float = 600.0
    kill_per_round: int = 0
    task_s: float = 1.0               # compute seconds of one step on a peer of speed 1
    bandwidth: float = 1.25e6         # bytes/s each way (10 Mbit/s)
    task_timeout: float = 30.0
    latency: tuple[float, float] = (0.02, 0.12)
    seeds_per_join: int = 3
    seed: int = 0
    max_virtual_s: float = 24 * 3600.0
    spot_check: float = 0.0           # share of updates the coordinator recomputes (a mismatch bans the peer)
    param_shards: int = 1             # parts of the parameter vector, each aggregated by its own peer
    peer_memory: int = 0              # a peer's memory limit for aggregation, bytes (0: none)
    linear: bool = False              # a linear model (no hidden layer) instead of the MLP

    def __post_init__(self) -> None:
        if self.peers < 2:
            raise ValueError("simulate train needs at least 2 peers (a coordinator and a worker)")
        if not 0.0 <= self.byzantine < 0.5:
            raise ValueError("byzantine must be in [0, 0.5)")

    def run_config(self) -> RunConfig:
        # liars per round vary (each shard goes to a random peer): trim twice as many as expected
        tolerate = self.tolerate or max(1, math.ceil(2 * self.byzantine * self.shards))
        train = TrainConfig(self.mode, shards=self.shards, rounds=self.rounds, local_steps=self.local_steps,
                            staleness_bound=self.staleness_bound, task_timeout=self.task_timeout,
                            min_peers=1, param_shards=self.param_shards, peer_memory=self.peer_memory,
                            spot_check=self.spot_check)
        return RunConfig(train, model=Model(64, () if self.linear else self.hidden, 10), peers=self.peers - 1, batch=self.batch, lr=self.lr,
                         momentum=self.momentum, rule=self.rule, byzantine=min(tolerate, (self.shards - 1) // 2),
                         attack=self.attack, seed=self.seed)


@dataclass
class _Out:
    crashes: int = 0
    kills: int = 0
    joins: int = 0
    lost_updates: int = 0
    lied: int = 0
    banned: dict = field(default_factory=dict)      # peer -> round it was banned in
    owners: dict = field(default_factory=dict)      # peer -> parameter parts it aggregated
    curve: list = field(default_factory=list)


class TrainSim:
    @staticmethod
    def check(s: TrainScenario) -> None:
        """``ValueError`` (``ShardingNeeded``) when the scenario's parameters do not fit a peer's memory."""
        cfg = s.run_config()
        TrainConfig(**{**cfg.train.__dict__, "param_bytes": nbytes(init_params(cfg.model, np.random.default_rng(0)))})

    def __init__(self, s: TrainScenario) -> None:
        self.s = s
        self.cfg = s.run_config()
        self.split = datasets.digits(s.seed)
        self.cluster = Cluster(s.seed, latency=s.latency)
        self.engine = self.cluster.engine
        self.rng = random.Random(f"{s.seed}/train")
        self.lie_rng = random.Random(f"{s.seed}/byzantine")
        params = init_params(self.cfg.model, np.random.default_rng(s.seed))
        self.param_bytes = nbytes(params)
        train = TrainConfig(**{**self.cfg.train.__dict__, "param_bytes": self.param_bytes})
        self.coord = Coordinator(train, random.Random(f"{s.seed}/coordinator"))
        self.updater = Updater(self.cfg, params)
        self.by_name: dict[str, SimPeer] = {}
        self.speed: dict[str, float] = {}
        self.liars: set[str] = set()
        self.out = _Out()
        self.killed_round = -1
        self.losses: list[float] = []
        peers = [self.cluster.new_peer() for _ in range(s.peers)]
        self.home = peers[0]
        for p in peers[1:]:
            self._meet(p, lies=False)
        workers = [p.id.text for p in peers[1:]]    # exactly the share of liars to begin with
        self.liars = set(self.lie_rng.sample(workers, int(round(s.byzantine * len(workers)))))
        self.cluster.on_member_changed = self._member_changed
        self.cluster.start_converged(peers)
        for p in peers[1:]:
            self._execute(self.coord.handle(PeerJoined(p.id.text), 0.0))
        self.engine.after(1.0, self._tick)
        if s.churn_fraction > 0:
            interval = s.churn_period / (s.churn_fraction * s.peers)
            self.engine.after(self.rng.uniform(0, interval), self._churn, interval)

    def _meet(self, p: SimPeer, lies: bool = True) -> None:
        """A new peer; a fresh one that joins later lies with probability ``byzantine``."""
        name = p.id.text
        self.by_name[name] = p
        self.speed[name] = self.rng.uniform(0.5, 1.5)
        if lies and self.lie_rng.random() < self.s.byzantine:
            self.liars.add(name)

    # --- membership -> coordinator ----------------------------------------------------------------

    def _member_changed(self, now: float, observer: SimPeer, cmd: Any) -> None:
        if observer is not self.home or cmd.peer == self.home.id:
            return
        name = cmd.peer.text
        if cmd.new >= DEAD:
            self._execute(self.coord.handle(PeerLost(name), now))
        elif cmd.new == ALIVE and name in self.by_name and self.by_name[name].alive:
            self._execute(self.coord.handle(PeerJoined(name), now))

    # --- commands ---------------------------------------------------------------------------------

    def _execute(self, commands: list) -> None:
        now = self.engine.now
        for cmd in commands:
            if isinstance(cmd, Assign):
                payload = work(self.cfg, self.cfg.model, self.updater.params, self.split, cmd)
                if cmd.peer in self.liars:
                    payload = attack(self.s.attack, payload, self.rng)
                    self.out.lied += 1
                size = nbytes(payload)
                lo, hi = self.s.latency
                transfer = (self.param_bytes + size) / self.s.bandwidth + self.rng.uniform(lo, hi) * 2
                compute = self.s.task_s * self.speed.get(cmd.peer, 1.0) * self.rng.uniform(0.8, 1.2) * cmd.steps
                self.engine.after(transfer + compute, self._deliver, (cmd, payload, size))
                self._maybe_kill(cmd)
            elif isinstance(cmd, SpotCheck):
                self._spot_check(cmd)
            elif isinstance(cmd, Banned):
                self.out.banned[cmd.peer] = self.coord.round
            elif isinstance(cmd, Aggregate):
                for owner in cmd.owners:
                    self.out.owners[owner] = self.out.owners.get(owner, 0) + 1
                self.updater.aggregate([c.payload for c in cmd.contributions])
                self._point(cmd.round + 1)
            elif isinstance(cmd, Apply):
                self.updater.apply(cmd.contribution.payload, cmd.contribution.weight)
                if self.coord.round > cmd.round:
                    self._point(cmd.round + 1)

    def _spot_check(self, cmd: SpotCheck) -> None:
        """The coordinator recomputes the counted update itself (the parameters are still those of
        ``cmd.version``: a round waits for its checks) and answers after the compute time."""
        done = self.coord.slots[cmd.shard].done
        redo = work(self.cfg, self.cfg.model, self.updater.params, self.split,
                    Assign(cmd.peer, cmd.round, cmd.shard, cmd.version, cmd.kind, cmd.steps))
        ok = done is not None and not far_from(done.payload, redo)
        self.engine.after(self.s.task_s * cmd.steps, self._verdict, SpotChecked(cmd.peer, cmd.round, cmd.shard, ok))

    def _verdict(self, ev: SpotChecked, _: Any = None) -> None:
        self._execute(self.coord.handle(ev, self.engine.now))

    def _point(self, rnd: int) -> None:
        acc = accuracy(self.cfg.model, self.updater.params, self.split.x_test, self.split.y_test)
        st = self.coord.stats
        self.out.curve.append([rnd, None, acc, st["bytes_down"] + st["bytes_up"], round(self.engine.now, 3)])

    def _deliver(self, item: tuple, _: Any = None) -> None:
        cmd, payload, size = item
        peer = self.by_name.get(cmd.peer)
        if peer is None or not peer.alive:
            self.out.lost_updates += 1
            return
        self._execute(self.coord.handle(UpdateArrived(cmd.peer, cmd.round, cmd.shard, payload, size), self.engine.now))

    def _tick(self, _: Any = None, __: Any = None) -> None:
        if self.coord.finished:
            return
        self._execute(self.coord.handle(Tick(), self.engine.now))
        self.engine.after(1.0, self._tick)

    # --- faults -----------------------------------------------------------------------------------

    def _replace(self, victim: SimPeer) -> None:
        self.cluster.crash(victim)
        self.out.crashes += 1
        live = [p for p in self.cluster.live.values()]
        seeds = tuple(self.rng.sample(live, min(self.s.seeds_per_join, len(live))))
        fresh = self.cluster.new_peer()
        self._meet(fresh)
        self.cluster.start_peer(fresh, seeds)
        self.out.joins += 1

    def _churn(self, interval: float, _: Any = None) -> None:
        if self.coord.finished:
            return
        workers = [p for p in self.cluster.live.values() if p is not self.home]
        if len(workers) > 1:
            self._replace(workers[self.rng.randrange(len(workers))])
        self.engine.after(interval, self._churn, interval)

    def _maybe_kill(self, cmd: Assign) -> None:
        """``kill_per_round``: once per round, half a task into it, crash that many shard holders."""
        if not self.s.kill_per_round or self.killed_round == cmd.round:
            return
        self.killed_round = cmd.round
        self.engine.after(self.s.task_s * 0.5, self._kill, cmd.round)

    def _kill(self, rnd: int, _: Any = None) -> None:
        if self.coord.round != rnd or self.coord.finished:
            return
        holders = sorted({p for slot in self.coord.slots if slot.done is None for p in slot.holders})
        for name in self.rng.sample(holders, min(self.s.kill_per_round, len(holders))):
            peer = self.by_name.get(name)
            if peer is not None and peer.alive and peer is not self.home:
                self._replace(peer)
                self.out.kills += 1

    # --- running ----------------------------------------------------------------------------------

    def run(self, progress: Callable[[int, int, float], None] | None = None, step: float = 10.0) -> dict:
        started, cpu = time.perf_counter(), time.process_time()
        t = 0.0
        while not self.coord.finished and t < self.s.max_virtual_s:
            t += step
            self.engine.run_until(t)
            if progress is not None:
                progress(self.coord.round, self.s.rounds, t)
        return self.report(time.perf_counter() - started, time.process_time() - cpu)

    def report(self, wall: float, cpu: float) -> dict:
        st = dict(self.coord.stats)
        moved = st["bytes_down"] + st["bytes_up"]
        final = accuracy(self.cfg.model, self.updater.params, self.split.x_test, self.split.y_test)
        rounds = self.coord.round
        to95 = next((p for p in self.out.curve if p[2] >= 0.95), None)
        scenario = asdict(self.s)
        return {"scenario": scenario, "finished": self.coord.finished, "final_accuracy": final, "rounds": rounds,
                "updates": self.coord.version, "bytes_moved": moved, "bytes_per_round": moved / max(1, rounds),
                "bytes_to_95": to95[3] if to95 else None, "round_to_95": to95[0] if to95 else None,
                "virtual_s": round(self.engine.now, 3), "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
                "liars": len(self.liars), "lying_updates": self.out.lied, "crashes": self.out.crashes,
                "kills_mid_round": self.out.kills, "joins": self.out.joins, "lost_updates": self.out.lost_updates,
                "coordinator": st, "aggregation": self.cfg.rule, "tolerate": self.cfg.byzantine,
                "banned": len(self.out.banned), "liars_banned": sum(p in self.liars for p in self.out.banned),
                "honest_banned": sum(p not in self.liars for p in self.out.banned),
                "ban_rounds": sorted(r for p, r in self.out.banned.items() if p in self.liars),
                "param_bytes": self.param_bytes, "param_shards": self.s.param_shards,
                "aggregate_bytes_per_peer": aggregate_memory(self.param_bytes, self.s.shards, self.s.param_shards),
                "part_owners": len(self.out.owners),
                "curve": self.out.curve}


def simulate(s: TrainScenario, progress: Callable[[int, int, float], None] | None = None) -> dict:
    return TrainSim(s).run(progress)
