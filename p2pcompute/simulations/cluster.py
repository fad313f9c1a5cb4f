"""Simulated peers running the real membership and Kademlia code on one discrete-event engine.

Theory of operation
-------------------
Each ``SimPeer`` holds the pure state machines a real peer runs: a
``gossip.Membership`` and the DHT's ``RoutingTable``, ``ProviderStore``,
``RecordStore``, ``KadServer``, ``Republisher`` and ``Lookup`` /
``ProviderLookup`` instances. The ``Cluster`` is their driver: it feeds them
events at virtual time ``engine.now`` and carries out their commands. Only
the transport and the clock are simulated; every decision is the real code's.

Messages travel as Python objects (a ``Ping``, a ``pb.KadMessage``), never
encoded, over the link model of ``memnet``: a ``MemNetwork`` is kept only for
its ``LinkParams`` (latency sampler, loss, per-link overrides, partitions and
quantum). As there, latency is drawn per message, loss decided at send time,
and a directed link delivers in FIFO order (``max(now + latency,
last_delivery)``). A message to a crashed peer, or one that crashes while the
message is in flight, is dropped. Byte counts are honest without encoding
every message: the first 64 and then every ``byte_sample_every``-th message
of each type are sized as the real codec would encode them (``pb.frame``;
membership messages by ``wiresize.WireSizer``, exactly ``len(wire.encode)``
without re-encoding the shared facts of a push-pull every time) and bytes are
estimated as count × mean sampled size per type.

Timers cost one heap entry each and are cancelled lazily: a peer keeps the
current deadline of each of its membership timer kinds (at most five) and
one DHT deadline (the earliest of its table's ``next_deadline``, its
lookups' and its republisher's). An entry fires the timer if its deadline is
due by then (a deadline set in the past runs at once; the engine never goes
back in time); it is skipped if the deadline moved later or already fired.
Nothing is per suspect or per query.

Kademlia requests are one-way messages carrying a request id; the answer
comes back with the same id (a libp2p stream per request, flattened). A
request proves its sender alive to the receiver's routing table, and an
answer proves the responder to the asker's, exactly as ``RoutingTable``
documents; peers named in answers enter only lookups. A new peer bootstraps
with a lookup of its own ID through its seeds and then (``refresh_on_join``)
refreshes each bucket once, as go-libp2p-kad-dht does when it starts; later
refreshes come from the table's own schedule. Query timeouts are the
lookups' own deadlines; failed queries are reported with ``on_failure``
(which pings, then evicts). With ``evict_dead_from_dht`` a peer also drops
from its routing table whoever its own membership declared dead or left:
local knowledge, as a daemon combining both would have.

Observers (``churn.py``) hook in through ``on_member_changed``,
``on_capability_changed``, ``on_lookup_done`` and ``on_crash``.
"""

from __future__ import annotations

import bisect
import functools
import heapq
import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..dht import pb
from ..dht.keys import key_of, peer_key, random_preimage_with_cpl
from ..dht.lookup import Lookup, ProviderLookup
from ..dht.providers import ProviderStore, Republisher
from ..dht.records import RecordStore
from ..dht.routing import LookupSelf, PingPeer, RefreshBucket, RoutingTable
from ..dht.server import KadServer
from ..errors import WireError
from ..gossip import events as ev
from ..gossip.capability import make_record, open_record
from ..gossip.membership import Membership
from ..gossip.messages import ALIVE, DEAD, Update
from ..node.identity import Identity, PeerId
from .des import Engine, paused_gc
from .memnet import MemNetwork
from .wiresize import WireSizer

_INF = math.inf
_heappush = heapq.heappush
_SEND, _SET_TIMER = ev.Send, ev.SetTimer
_TIMER_EVENTS = tuple(ev.TimerFired(kind) for kind in ev.TimerKind)
FIND_NODE = pb.MessageType.FIND_NODE
GET_PROVIDERS = pb.MessageType.GET_PROVIDERS
_PING = pb.request(pb.MessageType.PING)
_KAD = pb.KadMessage
_FIRST_SAMPLES = 64
_PEER_ID_TYPE = frozenset({PeerId})
_ED25519_PREFIX = bytes([0x00, 0x24, 0x08, 0x01, 0x12, 0x20])  # refresh keys shaped like peer IDs


def _name(key: Any) -> str:
    return "Kad" + key.name if isinstance(key, pb.MessageType) else key.__name__


@dataclass(frozen=True)
class ClusterConfig:
    """How the simulated peers are set up (protocol tunables and driver bounds)."""

    membership: ev.MembershipConfig = field(default_factory=ev.MembershipConfig)
    k: int = 20
    alpha: int = 3
    query_timeout: float = 2.0  # a kad request unanswered this long has failed
    lookup_timeout: float = 30.0
    refresh_interval: float = 600.0  # bucket refresh and self lookup (libp2p: 10 min)
    max_refresh_cpl: int = 15  # deepest bucket refreshed by its own lookup (libp2p: 15)
    refresh_on_join: bool = True  # after the bootstrap lookup, refresh every bucket once (as libp2p does)
    ping_timeout: float = 2.0  # routing table's ping-to-evict
    eviction_check_after: float = 120.0  # as DhtConfig: ping a full bucket's oldest entry if silent this long
    provider_republish: float = 1800.0
    evict_dead_from_dht: bool = True
    max_lookups: int = 32  # concurrent lookups per peer; more are refused
    byte_sample_every: int = 500  # after the first 64, encode every n-th message of a type to measure sizes
    stream_rto: float = 0.2  # a Kademlia message hit by loss arrives this much later (TCP retransmit)
    max_link_states: int = 64  # FIFO link states kept per peer before pruning idle ones


class SimPeer:
    """One simulated peer: its identity, state machines and driver bookkeeping."""

    __slots__ = (
        "id", "identity", "index", "membership", "table", "server", "providers", "republisher",
        "alive", "started", "bootstrapped", "timers", "kad_at", "lookups", "pending", "links",
        "links_limit", "version", "addrs",
    )

    def __init__(self, identity: Identity, index: int) -> None:
        self.identity = identity
        self.id = identity.peer_id
        self.index = index
        self.alive = True
        self.started = 0.0
        self.bootstrapped = _INF  # when its DHT self lookup finished
        self.timers = [_INF] * len(ev.TimerKind)
        self.kad_at = _INF
        self.lookups: dict[int, LookupRun] = {}
        self.pending: dict[int, LookupRun | None] = {}  # kad request id -> its lookup (None: a ping)
        self.links: dict[PeerId, float] = {}  # dst -> last delivery time (FIFO)
        self.links_limit = 64
        self.version = 0  # of its capability record
        self.addrs: tuple[bytes, ...] = ()


class LookupRun:
    """A running lookup of one peer and why it runs."""

    __slots__ = ("lookup", "purpose", "key", "request", "started", "reqs", "info", "rid")

    def __init__(self, lookup: Lookup, purpose: str, key: bytes, request: pb.KadMessage, now: float, info: Any) -> None:
        self.lookup = lookup
        self.purpose = purpose
        self.key = key
        self.request = request
        self.started = now
        self.reqs: list[int] = []
        self.info = info
        self.rid = 0


def ev_update(peer: SimPeer) -> Update:
    """``peer`` alive at incarnation 0: what everyone holds about it in a converged network."""
    return Update(peer.id, ALIVE, 0, (), peer.membership.address)


def _noop(*args: Any) -> None:
    return None


class _KadBook(dict):
    """PeerId -> its ``pb.KadPeer`` (ID and addresses), built once per peer; unknown peers get no addresses."""

    def __missing__(self, pid: PeerId) -> pb.KadPeer:
        return pb.kad_peer(pid, ())


class Cluster:
    """The driver of every simulated peer. See the module doc."""

    def __init__(
        self,
        seed: int,
        *,
        latency: tuple[float, float] = (0.02, 0.12),
        loss: float = 0.0,
        config: ClusterConfig | None = None,
        quantum: float = 0.0,
    ) -> None:
        self.seed = seed
        self.config = config or ClusterConfig()
        self.engine = Engine(seed, quantum=quantum)
        self.rng = self.engine.rng
        self.net = MemNetwork(self.rng.getrandbits(64), latency=latency, loss=loss, quantum=quantum)
        self.kad_rng = random.Random(f"{seed}/kademlia")  # refresh keys: apart, so they shift nothing else
        self.link_rng = self.net.rng
        self.live: dict[PeerId, SimPeer] = {}
        self.peers: list[SimPeer] = []  # every peer ever started, in order
        self.verify = functools.lru_cache(maxsize=8192)(open_record)  # one check per record, not per peer
        self._pids: dict[bytes, PeerId] = {}
        self._addr_book: dict[PeerId, tuple[bytes, ...]] = {}
        self._kad_book = _KadBook()
        self._next_rid = 0
        self._lookup_ids = 0
        # counters
        self._counts: dict[Any, int] = {}  # by message class (Kademlia: by MessageType)
        self._sample_every = self.config.byte_sample_every
        self.retransmits = 0  # Kademlia messages delayed by a simulated TCP retransmission
        self.dropped: Counter = Counter()  # by reason
        self._size_sum: dict[str, int] = {}
        self._size_n: dict[str, int] = {}
        self._sizer = WireSizer()
        self._deliver_gossip_cb = self._deliver_gossip  # bound once: the hot path's callbacks
        self._fire_cb = self._fire
        # observers
        self.on_member_changed: Callable[[float, SimPeer, ev.MemberChanged], None] = _noop
        self.on_capability_changed: Callable[[float, SimPeer, ev.CapabilityChanged], None] = _noop
        self.on_lookup_done: Callable[[float, SimPeer, LookupRun], None] = _noop
        self.on_crash: Callable[[float, SimPeer], None] = _noop

    @property
    def now(self) -> float:
        return self.engine.now

    # --- peers -----------------------------------------------------------------

    def new_peer(self) -> SimPeer:
        """A fresh identity and state machines, not started yet."""
        rng, cfg = self.rng, self.config
        identity = Identity.from_seed(rng.randbytes(32))
        peer = SimPeer(identity, len(self.peers))
        now = self.engine.now
        peer.links_limit = cfg.max_link_states
        a, b = divmod(peer.index, 250)
        address = f"/ip4/10.{a // 250 % 250}.{a % 250}.{b + 1}/tcp/4001"
        peer.addrs = (pb.addr_to_bytes(address),)
        peer.membership = Membership(
            peer.id, cfg.membership, random.Random(rng.getrandbits(64)), now,
            address=f"{address}/p2p/{peer.id.text}", verifier=self.verify,
        )
        peer.table = RoutingTable(
            peer.id, now=now, rng=random.Random(rng.getrandbits(64)), k=cfg.k,
            refresh_interval=cfg.refresh_interval, ping_timeout=cfg.ping_timeout,
            max_refresh_cpl=cfg.max_refresh_cpl, fresh_for=cfg.eviction_check_after,
        )
        peer.providers = ProviderStore()
        peer.server = KadServer(peer.table, peer.providers, RecordStore(), k=cfg.k, addrs_of=self._addrs_of,
                                kad_peer_of=self._kad_book.__getitem__)
        peer.republisher = Republisher(rng=random.Random(rng.getrandbits(64)), interval=cfg.provider_republish)
        self._pids[peer.id.raw] = peer.id
        self._addr_book[peer.id] = peer.addrs
        self._kad_book[peer.id] = pb.kad_peer(peer.id, peer.addrs)
        self.peers.append(peer)
        return peer

    def start_peer(self, peer: SimPeer, seeds: tuple[SimPeer, ...]) -> None:
        """Start ``peer`` now: membership joins through ``seeds``, the DHT bootstraps through them."""
        now = self.engine.now
        peer.started = now
        self.live[peer.id] = peer
        self._membership(peer, ev.Join(tuple(s.id for s in seeds)))
        self.publish_capability(peer)
        for seed in seeds:
            for cmd in peer.table.on_seen(seed.id, now):
                self._ping(peer, cmd)
        if seeds:
            self.start_lookup(peer, peer_key(peer.id), peer.id.raw, "bootstrap")
        else:
            peer.bootstrapped = now
        self._arm_kad(peer, peer.table.next_deadline())

    def start_converged(self, peers: list[SimPeer]) -> None:
        """Start ``peers`` now as a network that has long converged: no join wave.

        Every membership table holds every other peer alive (incarnation 0)
        with its first capability record, and only the peer's own join news
        and record queued for gossip, as on any start; every
        routing table holds, for each bucket, up to k peers drawn at random
        from those that belong there (the sorted key space gives each
        bucket's candidates as one contiguous range). What a network reaches
        after its join wave has settled, built in O(N·(N + k·log N)) instead
        of simulated; the protocols then run as usual from here.
        """
        with paused_gc():  # a million long-lived objects at 1000 peers: nothing for the collector to find
            self._start_converged(peers)

    def _start_converged(self, peers: list[SimPeer]) -> None:
        now = self.engine.now
        claims = []
        for peer in peers:
            peer.version = 1
            claim = make_record(peer.identity, 1, **self._capability_values())
            claims.append((peer, claim, self.verify(claim)))
        known = [(ev_update(peer), record, claim) for peer, claim, record in claims]
        for peer, claim, _record in claims:
            peer.started = peer.bootstrapped = now
            self.live[peer.id] = peer
            peer.membership.preload(known, now)
            self._membership(peer, ev.Join(()))
            self._membership(peer, ev.SetCapability(claim))
        self._fill_routing_tables(peers, now)
        for peer in peers:
            self._arm_kad(peer, peer.table.next_deadline())

    def _fill_routing_tables(self, peers: list[SimPeer], now: float) -> None:
        ring = sorted((peer_key(p.id), p.id) for p in peers)
        keys = [key for key, _ in ring]
        k, rng, left = self.config.k, self.rng, bisect.bisect_left
        for peer in peers:
            own = peer_key(peer.id)
            for cpl in range(256):
                shift = 255 - cpl  # bucket cpl: the first cpl bits as ours, then bit ``shift`` differs
                width = 1 << shift
                same = (own >> shift) << shift
                other = same ^ width
                i, j = left(keys, other), left(keys, other + width)
                if j > i:
                    chosen = ring[i:j] if j - i <= k else rng.sample(ring[i:j], k)
                    for _key, pid in chosen:
                        peer.table.on_seen(pid, now)
                if left(keys, same + width) - left(keys, same) <= 1:
                    break  # nobody else shares our first cpl + 1 bits: deeper buckets are empty

    def peers_by_id(self, ids: set) -> list[SimPeer]:
        """The peers (live or not) with these IDs, in start order."""
        return [p for p in self.peers if p.id in ids]

    def crash(self, peer: SimPeer) -> None:
        """Silent crash: the peer stops at once; others find out only by its silence."""
        if not peer.alive:
            return
        peer.alive = False
        del self.live[peer.id]
        peer.lookups.clear()
        peer.pending.clear()
        self.on_crash(self.engine.now, peer)

    def publish_capability(self, peer: SimPeer, **fields: Any) -> int:
        """Sign and publish the next version of ``peer``'s capability record; returns it."""
        peer.version += 1
        claim = make_record(peer.identity, peer.version, **{**self._capability_values(), **fields})
        self._membership(peer, ev.SetCapability(claim))
        return peer.version

    def _capability_values(self) -> dict[str, Any]:
        return {"cpus": 4.0, "memory": 8 << 30, "arch": "x86_64", "free_slots": 4,
                "load": round(self.rng.random(), 2)}

    def provide(self, peer: SimPeer, key: bytes) -> None:
        """``peer`` starts providing ``key`` (announced now and every ``provider_republish``)."""
        for announce in peer.republisher.provide(key, self.engine.now):
            self.start_lookup(peer, key_of(announce.key), announce.key, "provide")
        deadline = peer.republisher.next_deadline()
        if deadline is not None:
            self._arm_kad(peer, deadline)

    def pid(self, raw: bytes) -> PeerId | None:
        known = self._pids.get(raw)
        if known is not None:
            return known
        try:
            pid = PeerId(raw)
        except ValueError:
            return None
        self._pids[raw] = pid
        return pid

    def _pids_of(self, kad_peers: tuple[pb.KadPeer, ...]) -> list[PeerId]:
        """The peer IDs of a reply's peer list (invalid ones left out)."""
        ids = [c.id for c in kad_peers]
        if set(map(type, ids)) <= _PEER_ID_TYPE:  # built by our KadServers: the IDs themselves
            return ids
        known = self._pids.get
        out = []
        for c in kad_peers:
            p = known(c.id) or self.pid(c.id)
            if p is not None:
                out.append(p)
        return out

    def _addrs_of(self, pid: PeerId) -> tuple[bytes, ...]:
        """The address book a real peer fills from identify; here every started peer's address."""
        return self._addr_book.get(pid, ())

    # --- membership ---------------------------------------------------------------

    def _membership(self, peer: SimPeer, event: Any) -> None:
        self._commands(peer, peer.membership.handle(event, self.engine.now))

    def _commands(self, peer: SimPeer, commands: list) -> None:
        for cmd in commands:
            kind = cmd.__class__
            if kind is _SEND:
                self._send(peer, cmd.peer, cmd.msg, self._deliver_gossip_cb, None)
            elif kind is _SET_TIMER:
                k, at = cmd.kind, cmd.at
                timers = peer.timers
                if timers[k] != at:
                    timers[k] = at
                    engine = self.engine  # engine.at inlined: a time already past runs now
                    if at < engine.now:
                        at = engine.now
                    engine._seq += 1
                    _heappush(engine._heap, (at, engine._seq, self._fire_cb, peer, k))
            elif kind is ev.MemberChanged:
                if cmd.new >= DEAD and self.config.evict_dead_from_dht:
                    peer.table.remove(cmd.peer, self.engine.now)
                self.on_member_changed(self.engine.now, peer, cmd)
            elif kind is ev.CapabilityChanged:
                self.on_capability_changed(self.engine.now, peer, cmd)

    def _fire(self, peer: SimPeer, kind: int) -> None:
        now = self.engine.now
        timers = peer.timers
        if timers[kind] > now or not peer.alive:
            return  # superseded by a later deadline, or already fired (inf)
        timers[kind] = _INF
        self._commands(peer, peer.membership.handle(_TIMER_EVENTS[kind], now))

    def _deliver_gossip(self, dst: SimPeer, payload: tuple) -> None:
        if not dst.alive:
            self.dropped["crash"] += 1
            return
        self._commands(dst, dst.membership.receive(payload[0], payload[1], self.engine.now))

    # --- the network ----------------------------------------------------------------

    def _send(self, src: SimPeer, dst_id: PeerId, msg: Any, deliver: Callable, rid: Any) -> None:
        """Put ``msg`` on the link src→dst (see the module doc for the link model).

        ``rid`` is None for a membership frame (lost with the link's loss
        probability) and a request id for a Kademlia message, which travels on
        a stream: instead of vanishing it arrives one retransmission timeout
        (``stream_rto``) later, as TCP would deliver it.
        """
        counts = self._counts
        key = msg.__class__
        if key is _KAD:
            key = msg.type
        n = counts.get(key, 0) + 1
        counts[key] = n
        if n <= _FIRST_SAMPLES or n % self._sample_every == 0:
            self._sample_size(key, msg)
        dst = self.live.get(dst_id)
        if dst is None:
            self.dropped["crash"] += 1
            return
        net = self.net
        src_id = src.id
        group = net._group
        if group is not None and group.get(src_id) != group.get(dst_id):
            self.dropped["partition"] += 1
            return
        params = net._overrides.get((src_id, dst_id), net.default_link) if net._overrides else net.default_link
        link_rng = self.link_rng
        engine = self.engine
        now = engine.now
        at = now + params.sample(link_rng)
        quantum = net.quantum
        if quantum:
            at = math.ceil(at / quantum) * quantum
        links = src.links
        last = links.get(dst_id)
        if last is not None and at < last:
            at = last
        elif last is None and len(links) >= src.links_limit:
            # A known quirk, kept so that seeds replay as before: ``links`` is still the dict that
            # _prune_links replaced, so this message's FIFO time is not remembered.
            self._prune_links(src, now)
        if params.loss and link_rng.random() < params.loss:
            if rid is None:
                links[dst_id] = at
                self.dropped["loss"] += 1
                return
            at += self.config.stream_rto
            self.retransmits += 1
        links[dst_id] = at
        if at < now:
            at = now
        engine._seq += 1  # engine.at, inlined: the busiest call of a simulation
        _heappush(engine._heap, (at, engine._seq, deliver, dst, (src_id, msg, rid)))

    def _prune_links(self, peer: SimPeer, now: float) -> None:
        peer.links = {p: t for p, t in peer.links.items() if t > now}
        peer.links_limit = max(self.config.max_link_states, 2 * len(peer.links))

    def _sample_size(self, key: Any, msg: Any) -> None:
        if key.__class__ is pb.MessageType:
            size = len(pb.frame(msg))
        else:
            size = self._sizer.size(msg)  # == len(wire.encode(msg)), see wiresize.py
        name = _name(key)
        self._size_sum[name] = self._size_sum.get(name, 0) + size
        self._size_n[name] = self._size_n.get(name, 0) + 1

    @property
    def sent(self) -> Counter:
        """Messages sent so far, by type name (Kademlia ones as ``Kad<TYPE>``)."""
        return Counter({_name(k): v for k, v in self._counts.items()})

    def mean_size(self, name: str) -> float:
        n = self._size_n.get(name, 0)
        return self._size_sum[name] / n if n else 0.0

    def estimated_bytes(self, counts: Counter) -> float:
        """Bytes on the wire for ``counts`` messages by type (mean sampled size per type)."""
        return sum(count * self.mean_size(name) for name, count in counts.items())

    # --- Kademlia ------------------------------------------------------------------

    def _deliver_kad_request(self, dst: SimPeer, payload: tuple) -> None:
        if not dst.alive:
            self.dropped["crash"] += 1
            return
        src, msg, rid = payload
        now = self.engine.now
        for cmd in dst.table.on_seen(src, now, msg.type is not pb.MessageType.PING):
            self._ping(dst, cmd)
        try:
            reply = dst.server.handle(src, msg, now)
        except WireError:
            self.dropped["refused"] += 1
            return
        if reply is not None:
            self._send(dst, src, reply, self._deliver_kad_reply, rid)

    def _deliver_kad_reply(self, dst: SimPeer, payload: tuple) -> None:
        if not dst.alive:
            self.dropped["crash"] += 1
            return
        src, msg, rid = payload
        now = self.engine.now
        for cmd in dst.table.on_seen(src, now):
            self._ping(dst, cmd)
        run = dst.pending.pop(rid, None)
        if run is None or run.lookup.finished:
            return
        closer = self._pids_of(msg.closer_peers)
        if run.request.type is GET_PROVIDERS:
            run.lookup.on_response(src, closer, now, self._pids_of(msg.provider_peers))
        else:
            run.lookup.on_response(src, closer, now)
        self._step(dst, run)

    def start_lookup(self, peer: SimPeer, target: int, key: bytes, purpose: str, info: Any = None,
                     *, providers: bool = False) -> LookupRun | None:
        """Run a FIND_NODE (or GET_PROVIDERS) lookup from ``peer``; None if it has too many running."""
        if len(peer.lookups) >= self.config.max_lookups or not peer.alive:
            return None
        cfg, now = self.config, self.engine.now
        seeds = peer.table.closest(target, cfg.k)
        cls = ProviderLookup if providers else Lookup
        lookup = cls(target, seeds, now=now, k=cfg.k, alpha=cfg.alpha, query_timeout=cfg.query_timeout,
                     timeout=cfg.lookup_timeout, local=peer.id)
        request = pb.request(GET_PROVIDERS if providers else FIND_NODE, key)
        run = LookupRun(lookup, purpose, key, request, now, info)
        self._lookup_ids += 1
        run.rid = self._lookup_ids
        peer.lookups[run.rid] = run
        peer.table.touched(target, now)
        self._step(peer, run)
        return run

    def _step(self, peer: SimPeer, run: LookupRun) -> None:
        now = self.engine.now
        for query in run.lookup.next(now):
            self._next_rid += 1
            rid = self._next_rid
            peer.pending[rid] = run
            run.reqs.append(rid)
            self._send(peer, query.peer, run.request, self._deliver_kad_request, rid)
        if run.lookup.finished:
            self._finish(peer, run)
        else:
            self._arm_kad(peer, run.lookup.next_deadline())

    def _finish(self, peer: SimPeer, run: LookupRun) -> None:
        now = self.engine.now
        peer.lookups.pop(run.rid, None)
        pending = peer.pending
        for rid in run.reqs:
            pending.pop(rid, None)
        for failed in run.lookup.failed():
            for cmd in peer.table.on_failure(failed, now):
                self._ping(peer, cmd)
        if run.purpose == "provide":
            msg = pb.KadMessage(pb.MessageType.ADD_PROVIDER, run.key, provider_peers=(pb.kad_peer(peer.id, peer.addrs),))
            for target in run.lookup.result():
                self._send(peer, target, msg, self._deliver_kad_request, 0)
        elif run.purpose == "bootstrap":
            peer.bootstrapped = now
            if self.config.refresh_on_join:
                self._refresh_all(peer)
        self.on_lookup_done(now, peer, run)

    def _refresh_all(self, peer: SimPeer) -> None:
        """One lookup per bucket up to the deepest filled one, for a random key in it (libp2p's refresh on start)."""
        table = peer.table
        deepest = min(max((i for i in table.bucket_indices() if table.bucket(i)), default=-1), table.max_refresh_cpl)
        base = peer_key(peer.id)
        for cpl in range(deepest + 1):
            key = random_preimage_with_cpl(base, cpl, self.kad_rng, max_tries=1 << 18, prefix=_ED25519_PREFIX)
            if key is not None:
                self.start_lookup(peer, key_of(key), key, "refresh")

    def _ping(self, peer: SimPeer, cmd: PingPeer) -> None:
        self._next_rid += 1
        self._send(peer, cmd.peer, _PING, self._deliver_kad_request, self._next_rid)
        self._arm_kad(peer, cmd.deadline)

    def _arm_kad(self, peer: SimPeer, when: float) -> None:
        if when < peer.kad_at:
            peer.kad_at = when
            self.engine.at(when, self._kad_fire, peer, None)

    def _kad_fire(self, peer: SimPeer, _: Any) -> None:
        now = self.engine.now
        if not peer.alive or peer.kad_at > now:
            return
        peer.kad_at = _INF
        for cmd in peer.table.tick(now):
            if type(cmd) is PingPeer:
                self._ping(peer, cmd)
            elif type(cmd) is RefreshBucket:
                self.start_lookup(peer, key_of(cmd.key), cmd.key, "refresh")
            elif type(cmd) is LookupSelf:
                self.start_lookup(peer, peer_key(peer.id), peer.id.raw, "self")
        for run in list(peer.lookups.values()):
            if run.lookup.next_deadline() <= now:
                self._step(peer, run)
        for announce in peer.republisher.due(now):
            self.start_lookup(peer, key_of(announce.key), announce.key, "provide")
        if peer.alive:
            nxt = peer.table.next_deadline()
            rep = peer.republisher.next_deadline()
            if rep is not None and rep < nxt:
                nxt = rep
            for run in peer.lookups.values():
                d = run.lookup.next_deadline()
                if d < nxt:
                    nxt = d
            self._arm_kad(peer, max(nxt, now + 0.001))
