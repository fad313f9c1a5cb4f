"""The churn scenario: peers replaced at a steady rate while the DHT and membership are measured.

Theory of operation
-------------------
Warm-up. By default the network starts converged (``Cluster.start_converged``:
every peer knows every other alive, routing tables full), as it would be long
after its join wave; with ``join_wave`` peer 0 starts a network instead and
the others join one by one over ``join_spread`` seconds, each through
``seeds_per_join`` random peers already up (membership push-pull, DHT self
lookup), which costs O(N²) merges and dominates short runs. After ``settle``
more seconds the measured period of ``duration`` seconds begins; counters of
messages are taken over that period only. Joins during the measured period
(churn) are always real joins.

Churn. ``churn_fraction`` of the peers are replaced every ``churn_period``,
one at a time at evenly spaced instants: a random live peer crashes silently
and a new peer with a fresh identity joins through random live seeds.

Load. Random live peers publish new capability records; random FIND_NODE
lookups run from random bootstrapped peers, half for random keys and half for
live peers; some peers provide keys (ADD_PROVIDER to the k closest, and
republish) and others look for providers of keys with at least one live
provider.

Metrics (``ChurnMetrics``, fed by the cluster's observer hooks):

* detection time: from a crash until every live peer that held the victim as
  alive or suspect (or learned of it as alive afterwards) has it dead or left;
* false positives: a live peer turning dead in anyone's table; counted once
  per declaration (victim, incarnation, declaring peer) and per observer;
* dissemination: for each join (a membership update) and each capability
  change, the time until 99% of the peers live at that moment know it;
  ``dissemination_99_s`` is the p99 over membership updates, which ride
  dedicated gossip rounds; capability records (load, free slots) ride probe
  traffic and push-pull and are reported apart
  (``capability_dissemination_99_s``);
* lookup success: the lookup got answers from all of the k closest peers
  that were live and bootstrapped when it started and are still live, or
  that answered it (a newcomer that answered, or a peer that answered and
  then crashed, is a right answer and may push another peer out of the k
  closest); for a peer target: from the target itself; provider lookups: a
  live provider was among those found.
"""

from __future__ import annotations

import heapq
import math
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..dht.keys import key_of, peer_key
from ..gossip import events as ev
from ..gossip.messages import ALIVE, DEAD, SUSPECT
from ..node.identity import PeerId
from .cluster import Cluster, ClusterConfig, LookupRun, SimPeer
from .des import quiet_gc, settle_gc

_SPREAD_FRACTION = 0.99
_SPREAD_GIVE_UP = 60.0  # an update not at 99% after this long counts as never arriving
_DETECT_GIVE_UP = 120.0  # a crash not detected by everyone this long before the end: undetected


@dataclass(frozen=True)
class Scenario:
    peers: int = 1000
    duration: float = 3600.0
    churn_fraction: float = 0.10
    churn_period: float = 600.0
    loss: float = 0.01
    latency: tuple[float, float] = (0.02, 0.12)
    seed: int = 7
    join_wave: bool = False  # replay every join at the start; default: start converged
    join_spread: float | None = None  # join wave: default peers / 50 seconds, at least 5
    settle: float = 30.0
    seeds_per_join: int = 3
    lookups_per_s: float = 1.0
    provider_lookups_per_s: float = 0.5
    capability_updates_per_s: float = 1.0
    provider_keys: int = 64  # provided at the end of the join wave
    providers_per_key: int = 3
    new_keys_per_s: float = 0.05
    sample_every: float = 10.0  # members-seen samples
    sample_observers: int = 50
    quantum: float = 0.0
    config: ClusterConfig = field(default_factory=ClusterConfig)

    def __post_init__(self) -> None:
        if self.peers < 2:
            raise ValueError("a churn simulation needs at least 2 peers")
        if self.duration <= 0 or self.churn_period <= 0:
            raise ValueError("duration and churn period must be positive")
        if not 0.0 <= self.churn_fraction <= 1.0:
            raise ValueError("churn fraction must be within 0..1")

    @property
    def spread(self) -> float:
        if not self.join_wave:
            return 0.0
        return self.join_spread if self.join_spread is not None else max(5.0, self.peers / 50.0)

    @property
    def warmup(self) -> float:
        return self.spread + self.settle


def quantile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) with linear interpolation; None for no values."""
    if not values:
        return None
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclass
class _Spread:
    t0: float
    need: int
    count: int = 0


@dataclass
class _Crash:
    at: float
    waiting: set[PeerId]


class ChurnMetrics:
    """Everything measured during a churn run (see the module doc)."""

    def __init__(self, cluster: Cluster, start: float) -> None:
        self.cluster = cluster
        self.start = start  # beginning of the measured period
        self.detections: list[float] = []
        self.crash_times: dict[PeerId, float] = {}
        self.undetected: list[PeerId] = []
        self.unobserved_crashes = 0  # nobody knew the victim when it crashed
        self._crashes: dict[PeerId, _Crash] = {}
        self.false_declarations: set[tuple[PeerId, int, PeerId]] = set()
        self.false_observations: list[tuple[float, PeerId, PeerId]] = []
        self.false_suspicions = 0  # observations: a live peer turning suspect in someone's table
        self.false_suspicion_events: set[tuple[PeerId, int]] = set()  # distinct (peer, incarnation)
        self.spread_times: list[float] = []
        self.spread_unreached = 0
        self.spread_kinds: Counter = Counter()
        self.spread_by_kind: dict[str, list[float]] = {}
        self._joins: dict[PeerId, _Spread] = {}
        self._caps: dict[tuple[PeerId, int], _Spread] = {}
        self.lookups: list[tuple[bool, int | None, float, int]] = []  # (ok, hops, seconds, queries)
        self.provider_lookups: list[tuple[bool, float]] = []
        self.lookup_failures: list[dict] = []
        self.members_seen: list[tuple[float, int, float, int, int]] = []  # (t, live, mean, min, max)
        cluster.on_member_changed = self._member_changed
        cluster.on_capability_changed = self._capability_changed
        cluster.on_crash = self._crashed

    # --- hooks ---------------------------------------------------------------------

    def _crashed(self, now: float, victim: SimPeer) -> None:
        vid = victim.id
        for crash_victim, crash in list(self._crashes.items()):
            if vid in crash.waiting:
                crash.waiting.discard(vid)
                if not crash.waiting:
                    self._detected(crash_victim, now)
        if now < self.start:
            return
        waiting = set()
        for peer in self.cluster.live.values():
            state = peer.membership.state_of(vid)
            if state is not None and state <= SUSPECT:
                waiting.add(peer.id)
        self.crash_times[vid] = now
        if waiting:
            self._crashes[vid] = _Crash(now, waiting)
        else:
            self.unobserved_crashes += 1

    def _detected(self, victim: PeerId, now: float) -> None:
        crash = self._crashes.pop(victim)
        self.detections.append(now - crash.at)

    def _member_changed(self, now: float, observer: SimPeer, cmd: ev.MemberChanged) -> None:
        subject, new, old = cmd.peer, cmd.new, cmd.old
        crash = self._crashes.get(subject)
        if crash is not None:
            if new >= DEAD:
                crash.waiting.discard(observer.id)
                if not crash.waiting:
                    self._detected(subject, now)
            elif old is None or old >= DEAD:
                crash.waiting.add(observer.id)
            return
        live = self.cluster.live
        if subject in live:
            if new == DEAD:
                member = observer.membership.member(subject)
                origins = member.update.origins if member is not None else ()
                incarnation = member.incarnation if member is not None else -1
                for origin in origins or (observer.id,):
                    self.false_declarations.add((subject, incarnation, origin))
                self.false_observations.append((now, observer.id, subject))
            elif new == SUSPECT:
                self.false_suspicions += 1
                member = observer.membership.member(subject)
                self.false_suspicion_events.add((subject, member.incarnation if member is not None else -1))
        if new == ALIVE and (old is None or old >= DEAD):
            spread = self._joins.get(subject)
            if spread is not None and observer.started <= spread.t0:
                self._reached(spread, now, "join")
                if spread.count >= spread.need:
                    del self._joins[subject]

    def _capability_changed(self, now: float, observer: SimPeer, cmd: ev.CapabilityChanged) -> None:
        if observer.id == cmd.peer:
            return
        key = (cmd.peer, cmd.record.version)
        spread = self._caps.get(key)
        if spread is not None and observer.started <= spread.t0:
            self._reached(spread, now, "capability")
            if spread.count >= spread.need:
                del self._caps[key]

    def _reached(self, spread: _Spread, now: float, kind: str) -> None:
        spread.count += 1
        if spread.count == spread.need:
            self.spread_times.append(now - spread.t0)
            self.spread_kinds[kind] += 1
            self.spread_by_kind.setdefault(kind, []).append(now - spread.t0)

    # --- what the scenario tells us ----------------------------------------------------

    def track_join(self, peer: SimPeer, now: float) -> None:
        others = len(self.cluster.live) - 1
        if others > 0:
            self._joins[peer.id] = _Spread(now, math.ceil(_SPREAD_FRACTION * others))

    def track_capability(self, peer: SimPeer, version: int, now: float) -> None:
        others = len(self.cluster.live) - 1
        if others > 0:
            self._caps[(peer.id, version)] = _Spread(now, math.ceil(_SPREAD_FRACTION * others))

    def expire(self, now: float) -> None:
        """Give up on updates that did not reach 99% in time (counted as unreached)."""
        for table in (self._joins, self._caps):
            for key in [k for k, s in table.items() if now - s.t0 > _SPREAD_GIVE_UP]:
                del table[key]
                self.spread_unreached += 1

    def sample_members(self, now: float, observers: list[SimPeer]) -> None:
        seen = [len(p.membership.alive_members()) + 1 for p in observers]
        if seen:
            self.members_seen.append((now, len(self.cluster.live), statistics.fmean(seen), min(seen), max(seen)))

    def finish(self, now: float) -> None:
        for victim, crash in list(self._crashes.items()):
            if now - crash.at >= _DETECT_GIVE_UP:
                self.undetected.append(victim)
        self.expire(now)


class ChurnRun:
    """Sets up the cluster, schedules the scenario's processes and runs them."""

    def __init__(self, scenario: Scenario) -> None:
        self.s = scenario
        self.cluster = Cluster(scenario.seed, latency=scenario.latency, loss=scenario.loss,
                               config=scenario.config, quantum=scenario.quantum)
        self.engine = self.cluster.engine
        self.rng = self.cluster.rng
        self.metrics = ChurnMetrics(self.cluster, scenario.warmup)
        self.cluster.on_lookup_done = self._lookup_done
        self.providers: dict[bytes, dict[PeerId, float]] = {}  # key -> provider -> announced at
        self.crashes = 0
        self.joins = 0
        self.sent_at_start: Counter = Counter()
        self.wall_seconds = 0.0
        self.cpu_seconds = 0.0
        self._schedule()

    # --- scheduling ----------------------------------------------------------------------

    def _schedule(self) -> None:
        s, at = self.s, self.engine.at
        n = s.peers
        if s.join_wave:
            first = self.cluster.new_peer()
            at(0.0, self._start, first, None)
            for i in range(1, n):
                at(s.spread * i / n, self._start, self.cluster.new_peer(), None)
        else:
            at(0.0, self._start_converged, [self.cluster.new_peer() for _ in range(n)], None)
        at(s.spread + 5.0, self._initial_keys, None, None)
        end = s.warmup + s.duration
        at(s.warmup, self._measure_start, None, None)
        if s.churn_fraction > 0:
            interval = s.churn_period / (s.churn_fraction * n)
            at(s.warmup + self.rng.uniform(0, interval), self._every, (interval, end), self._replace)
        if s.capability_updates_per_s > 0:
            at(s.warmup + 1.0, self._every, (1.0 / s.capability_updates_per_s, end), self._capability)
        if s.lookups_per_s > 0:
            at(s.warmup + 0.5, self._every, (1.0 / s.lookups_per_s, end), self._lookup)
        if s.provider_lookups_per_s > 0:
            at(s.warmup + 0.7, self._every, (1.0 / s.provider_lookups_per_s, end), self._provider_lookup)
        if s.new_keys_per_s > 0:
            at(s.warmup, self._every, (1.0 / s.new_keys_per_s, end), self._new_key)
        at(0.0, self._every, (s.sample_every, end + 1e-9), self._sample)

    def _every(self, timing: tuple[float, float], fn: Callable[[], None]) -> None:
        interval, end = timing
        if self.engine.now > end:
            return
        fn()
        self.engine.after(interval, self._every, timing, fn)

    def _start(self, peer: SimPeer, _: Any) -> None:
        live = list(self.cluster.live.values())
        seeds = tuple(self.rng.sample(live, min(self.s.seeds_per_join, len(live))))
        self.cluster.start_peer(peer, seeds)

    def _start_converged(self, peers: list[SimPeer], _: Any) -> None:
        self.cluster.start_converged(peers)

    def _measure_start(self, _: Any, __: Any) -> None:
        self.sent_at_start = Counter(self.cluster.sent)

    # --- processes ----------------------------------------------------------------------

    def _live(self) -> list[SimPeer]:
        return list(self.cluster.live.values())

    def _ready(self) -> list[SimPeer]:
        now = self.engine.now
        return [p for p in self.cluster.live.values() if p.bootstrapped <= now]

    def _replace(self) -> None:
        live = self._live()
        if len(live) < 2:
            return
        victim = self.rng.choice(live)
        self.cluster.crash(victim)
        self.crashes += 1
        live = self._live()
        seeds = tuple(self.rng.sample(live, min(self.s.seeds_per_join, len(live))))
        peer = self.cluster.new_peer()
        self.metrics.track_join(peer, self.engine.now)
        self.cluster.start_peer(peer, seeds)
        self.joins += 1

    def _capability(self) -> None:
        peer = self.rng.choice(self._live())
        version = self.cluster.publish_capability(peer)
        self.metrics.track_capability(peer, version, self.engine.now)

    def _initial_keys(self, _: Any, __: Any) -> None:
        for _ in range(self.s.provider_keys):
            self._new_key()

    def _new_key(self) -> None:
        key = b"\x12\x20" + self.rng.randbytes(32)  # a sha2-256 multihash, as a CID's
        ready = self._ready()
        for peer in self.rng.sample(ready, min(self.s.providers_per_key, len(ready))):
            self.providers.setdefault(key, {})[peer.id] = math.inf
            self.cluster.provide(peer, key)

    def _lookup(self) -> None:
        ready = self._ready()
        if len(ready) < 2:
            return
        origin = self.rng.choice(ready)
        if self.rng.random() < 0.5:
            key = self.rng.randbytes(32)
            self.cluster.start_lookup(origin, key_of(key), key, "measure", None)
        else:
            target = self.rng.choice(ready)
            while target is origin:
                target = self.rng.choice(ready)
            self.cluster.start_lookup(origin, peer_key(target.id), target.id.raw, "measure", target.id)

    def _provider_lookup(self) -> None:
        now, live = self.engine.now, self.cluster.live
        held = [k for k, provs in self.providers.items() if any(t <= now and p in live for p, t in provs.items())]
        if not held:
            return
        key = self.rng.choice(held)
        ready = [p for p in self._ready() if p.id not in self.providers[key]]
        if not ready:
            return
        origin = self.rng.choice(ready)
        self.cluster.start_lookup(origin, key_of(key), key, "providers", None, providers=True)

    def _sample(self) -> None:
        live = self._live()
        observers = self.rng.sample(live, min(self.s.sample_observers, len(live)))
        self.metrics.sample_members(self.engine.now, observers)
        self.metrics.expire(self.engine.now)

    # --- lookup results -----------------------------------------------------------------

    def _lookup_done(self, now: float, peer: SimPeer, run: LookupRun) -> None:
        if run.purpose == "provide":
            provs = self.providers.get(run.key)
            if provs is not None and peer.id in provs and provs[peer.id] == math.inf:
                provs[peer.id] = now
            return
        if run.started < self.s.warmup:
            return
        lookup = run.lookup
        seconds = now - run.started
        if run.purpose == "measure":
            answered = set(lookup.responded())
            if run.info is not None:  # a peer target
                if run.info not in self.cluster.live:
                    return  # it crashed meanwhile: nothing to find
                ok = run.info in answered
            else:
                truth = self._truth(peer, lookup.target, run.started, answered)
                ok = all(p.id in answered for p in truth)
            self.lookups.append((ok, lookup.hops, seconds, lookup.queries))
            if not ok and len(self.metrics.lookup_failures) < 20:
                self.metrics.lookup_failures.append(
                    {"t": round(now, 3), "peer_target": run.info is not None, "queries": lookup.queries,
                     "failures": lookup.failures, "timed_out": lookup.timed_out})
        elif run.purpose == "providers":
            live = self.cluster.live
            ok = any(p in live for p in lookup.providers)
            self.metrics.provider_lookups.append((ok, seconds))

    @property
    def lookups(self) -> list:
        return self.metrics.lookups

    def _truth(self, origin: SimPeer, target: int, started: float, answered: set = frozenset()) -> list[SimPeer]:
        """The k closest peers a lookup should have found: those live now and bootstrapped when it
        started, and any that answered it (a newcomer found by the lookup is a right answer, not a
        miss; so is a peer that answered and crashed before the lookup ended)."""
        live = self.cluster.live
        eligible = [p for p in live.values() if p.bootstrapped <= started and p is not origin]
        eligible += [p for p in self.cluster.peers_by_id(answered) if p.id not in live or p.bootstrapped > started]
        return heapq.nsmallest(self.s.config.k, eligible, key=lambda p: peer_key(p.id) ^ target)

    # --- running --------------------------------------------------------------------------

    @property
    def end(self) -> float:
        return self.s.warmup + self.s.duration

    def run(self, progress: Callable[[float, float], None] | None = None, step: float = 5.0) -> dict:
        """Run to the end; ``progress(now, end)`` after every ``step`` virtual seconds. Returns the report."""
        started, cpu = time.perf_counter(), time.process_time()
        end = self.end
        t = 0.0
        with quiet_gc():
            while t < end:
                t = min(end, t + step)
                self.engine.run_until(t)
                settle_gc()
                if progress is not None:
                    progress(t, end)
        self.metrics.finish(end)
        self.wall_seconds = time.perf_counter() - started
        self.cpu_seconds = time.process_time() - cpu
        return self.report()

    def report(self) -> dict:
        s, m, c = self.s, self.metrics, self.cluster
        sent = Counter(c.sent)
        sent.subtract(self.sent_at_start)
        per = s.peers * s.duration
        gossip = Counter({k: v for k, v in sent.items() if not k.startswith("Kad")})
        dht = Counter({k: v for k, v in sent.items() if k.startswith("Kad")})
        oks = [ok for ok, *_ in m.lookups]
        hops = [h for ok, h, *_ in m.lookups if h is not None]
        pl = [ok for ok, _ in m.provider_lookups]
        det = m.detections

        def r(x: float | None, nd: int = 3) -> float | None:
            return None if x is None else round(x, nd)

        return {
            "peers": s.peers,
            "virtual_seconds": s.duration,
            "wall_seconds": round(self.wall_seconds, 2),
            "cpu_seconds": round(self.cpu_seconds, 2),
            "detection_s": {"median": r(quantile(det, 0.5)), "p99": r(quantile(det, 0.99)),
                            "max": r(max(det) if det else None), "count": len(det),
                            "undetected": len(m.undetected), "unobserved": m.unobserved_crashes},
            "false_positive_deaths": len(m.false_declarations),
            "dissemination_99_s": r(quantile(m.spread_by_kind.get("join", []), 0.99)),
            "capability_dissemination_99_s": r(quantile(m.spread_by_kind.get("capability", []), 0.99)),
            "lookup_success": r(sum(oks) / len(oks), 5) if oks else None,
            "lookup_hops_median": quantile(hops, 0.5),
            "provider_lookup_success": r(sum(pl) / len(pl), 5) if pl else None,
            "msgs_per_peer_s": r(sum(sent.values()) / per),
            "bytes_per_peer_s": r(c.estimated_bytes(sent) / per, 1),
            "seed": s.seed,
            # --- more detail ---
            "warmup_seconds": s.warmup,
            "churn": {"fraction": s.churn_fraction, "period_s": s.churn_period, "crashes": self.crashes,
                      "joins": self.joins},
            "loss": s.loss,
            "latency_s": list(s.latency),
            "false_death_observations": len(m.false_observations),
            "false_suspicions": m.false_suspicions,
            "false_suspicion_events": len(m.false_suspicion_events),
            "dissemination": {"updates": len(m.spread_times), "unreached": m.spread_unreached,
                              "median_s": r(quantile(m.spread_times, 0.5)), "by_kind": dict(m.spread_kinds)},
            "lookups": {"count": len(oks), "hops_p99": r(quantile(hops, 0.99)),
                        "seconds_median": r(quantile([x[2] for x in m.lookups], 0.5)),
                        "queries_median": quantile([x[3] for x in m.lookups], 0.5),
                        "failures_sample": m.lookup_failures},
            "provider_lookups": {"count": len(pl), "keys": len(self.providers),
                                 "seconds_median": r(quantile([x[1] for x in m.provider_lookups], 0.5))},
            "gossip_msgs_per_peer_s": r(sum(gossip.values()) / per),
            "dht_msgs_per_peer_s": r(sum(dht.values()) / per),
            "gossip_bytes_per_peer_s": r(c.estimated_bytes(gossip) / per, 1),
            "dht_bytes_per_peer_s": r(c.estimated_bytes(dht) / per, 1),
            "msgs_by_type": dict(sorted(sent.items())),
            "mean_bytes_by_type": {k: round(c.mean_size(k), 1) for k in sorted(sent)},
            "dropped": dict(c.dropped),
            "kad_retransmits": c.retransmits,
            "events": self.engine.events,
        }

    def series(self) -> dict[str, Any]:
        """Raw data for the plots."""
        m = self.metrics
        return {
            "members_seen": m.members_seen,
            "detections": m.detections,
            "lookup_hops": [h for _, h, *_ in m.lookups if h is not None],
            "warmup": self.s.warmup,
        }


def run_churn(scenario: Scenario, progress: Callable[[float, float], None] | None = None) -> tuple[dict, ChurnRun]:
    run = ChurnRun(scenario)
    report = run.run(progress)
    return report, run
