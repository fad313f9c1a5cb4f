"""``DhtService``: Kademlia on a node's Transport (the node service of ``dht/``).

Theory of operation
-------------------
The state lives in the pure pieces: a ``RoutingTable``, a ``ProviderStore``,
a ``RecordStore``, a ``Republisher`` and, per operation, a ``Lookup``. This
service only carries out what they ask and feeds them what happens, with
``trio.current_time()`` as ``now`` (so it runs in virtual time on memnet):

* ``attach`` registers the kad stream handler for each of
  ``config.protocols`` (by default ours, ``/p2pcompute/kad/1.0.0``, and
  kubo's LAN DHT, ``/ipfs/lan/kad/1.0.0``: one routing table and one store
  serve both, so a user's own kubo is a peer like any other, asked in the
  protocol it speaks) and a connection listener. Inbound requests are answered through
  ``KadServer`` (``driver.KadResponder``, bounded); a peer that sends a
  request has shown it speaks the DHT and goes to ``table.on_seen``.
* A newly connected peer is only a candidate: it is asked FIND_NODE for our
  own key, and only an answer puts it in the table (a peer that does not
  speak the protocol refuses the stream). At most ``max_background`` such
  checks and pings run at once; beyond that, candidates are dropped.
* When the table goes from empty to non-empty, and again while it holds fewer
  than ``k`` peers (at most every ``bootstrap_interval``), a lookup for our
  own key fills it (the bootstrap). After that ``table.tick`` asks for bucket
  refreshes and periodic self-lookups, and the one timer loop also collects
  the republisher's ``Announce`` commands and expires stored records.
* Lookups (``driver.run_lookup``) feed ``on_seen`` only for peers that
  answered, report failures to both the lookup and the table (the table's
  ``PingPeer`` commands are FIND_NODE probes), and learn the addresses of
  named peers (``AddressBook`` and ``transport.add_addresses``) so they can
  be dialled. At most ``max_lookups`` lookups run at once.

Public operations: ``find_peer``, ``find_providers``, ``provide``,
``put_value``/``get_value``; the control API and ``status`` expose them.
"""

from __future__ import annotations

import functools
import logging
import math
import random
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from ..errors import TransportError, WireError
from ..node.api import HttpError, json_response, parse_json_body
from ..node.identity import PeerId
from . import pb
from .driver import (
    DEFAULT_PROTOCOL, LAN_PROTOCOL, AddressBook, KadClient, KadResponder, Limits, addrs_to_binary, addrs_to_text, closer_of, content_key,
    dialable,
    providers_of, run_lookup,
)
from .keys import key_of
from .lookup import Lookup, ProviderLookup, ValueLookup
from .providers import PROVIDER_TTL, REPUBLISH_INTERVAL, Announce, ProviderStore, Republisher
from .records import RecordStore, SignedValue, make_record, newer, record_key, validate
from .routing import LookupSelf, PingPeer, RefreshBucket, RoutingTable
from .server import KadServer

log = logging.getLogger(__name__)

MIN_TICK = 0.05
HOUSEKEEPING = 60.0


@dataclass(frozen=True)
class DhtConfig:
    # served and asked, in this order; a peer that speaks only one (a kubo: the LAN one) is asked in it
    protocols: tuple[str, ...] = (DEFAULT_PROTOCOL, LAN_PROTOCOL)
    k: int = 20
    alpha: int = 3
    paths: int = 1  # > 1: S/Kademlia disjoint paths
    query_timeout: float = 5.0
    lookup_timeout: float = 30.0
    refresh_interval: float = 600.0
    eviction_check_after: float = 120.0  # a full bucket pings its least recently seen peer if silent this long
    republish_interval: float = REPUBLISH_INTERVAL
    provider_ttl: float = PROVIDER_TTL
    provider_max_bytes: int = 64 << 20  # memory budget of the provider records we hold for others
    bootstrap_interval: float = 10.0
    max_lookups: int = 16
    max_background: int = 32
    quorum: int = 3  # GET_VALUE answers with a record before stopping
    limits: Limits = field(default_factory=Limits)

    @property
    def protocol(self) -> str:
        """The first (preferred) protocol id."""
        return self.protocols[0]


class DhtService:
    """Kademlia as a node service. See the module doc."""

    name = "dht"

    def __init__(self, config: DhtConfig | None = None, *, rng: random.Random | None = None,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.config = config or DhtConfig()
        self._rng = rng
        self._wall = wall_clock
        self.node: Any = None
        self.table: RoutingTable | None = None
        self.providers = ProviderStore(ttl=self.config.provider_ttl, max_bytes=self.config.provider_max_bytes)
        self.records = RecordStore()
        self.book = AddressBook()
        self.republisher: Republisher | None = None
        self.server: KadServer | None = None
        self.responder: KadResponder | None = None
        self.client: KadClient | None = None
        self._limiter = trio.CapacityLimiter(self.config.max_lookups)
        self._nursery: trio.Nursery | None = None
        self._wake = trio.Event()
        self._background = 0
        self._checking: set[PeerId] = set()
        self._last_bootstrap = -math.inf
        self._seq = 0
        self.counts: Counter = Counter()
        self.hops: deque[int] = deque(maxlen=1024)

    # --- Service protocol ----------------------------------------------------------------

    def attach(self, node: Any) -> None:
        self.node = node
        self.peer_id: PeerId = node.peer_id
        if self._rng is None:
            self._rng = node.rng
        self.client = KadClient(node.transport, self.config.protocols, self.config.limits)
        for protocol in self.config.protocols:
            node.transport.on_stream(protocol, functools.partial(self._on_stream, protocol))
        node.transport.on_peer_event(self._on_peer_event)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        cfg = self.config
        now = trio.current_time()
        self.table = RoutingTable(self.peer_id, now=now, rng=self._rng, k=cfg.k,
                                  ping_timeout=cfg.query_timeout, refresh_interval=cfg.refresh_interval,
                                  fresh_for=cfg.eviction_check_after)
        self.republisher = Republisher(rng=self._rng, interval=cfg.republish_interval)
        self.server = KadServer(self.table, self.providers, self.records, k=cfg.k, addrs_of=self._addrs_of)
        self.responder = KadResponder(self.server, cfg.limits, self._on_request,
                                      remote_ip=self.node.transport.remote_ip, transport=self.node.transport)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for peer in self.node.transport.connected_peers():
                self._on_peer_event(peer, True)
            task_status.started()
            try:
                await self._timer_loop()
            finally:
                self._nursery = None

    def status(self) -> dict[str, Any]:
        table = self.table
        hops = sorted(self.hops)
        return {
            "protocols": list(self.config.protocols),
            "routing_table": len(table) if table else 0,
            "buckets": {str(i): len(table.bucket(i)) for i in table.bucket_indices()} if table else {},
            "providers_stored": len(self.providers),
            "provider_keys": len(self.providers.keys()),
            "provider_bytes": self.providers.bytes,
            "providers_refused": self.providers.refused,
            "records_stored": len(self.records),
            "providing": len(self.republisher) if self.republisher else 0,
            "lookups": self.counts["lookups"],
            "lookup_hops_median": hops[len(hops) // 2] if hops else None,
            "served": dict(self.responder.served) if self.responder else {},
            "rejected": dict(self.responder.rejected) if self.responder else {},
            "query_failures": dict(self.client.failures) if self.client else {},
            "dropped": self.counts["dropped"],
        }

    def api_routes(self) -> dict:
        return {
            ("GET", "/v1/dht/find-peer"): self._api_find_peer,
            ("GET", "/v1/dht/providers"): self._api_providers,
            ("POST", "/v1/dht/provide"): self._api_provide,
        }

    # --- public operations --------------------------------------------------------------------

    async def add_peer(self, peer: Any, addrs: list[str]) -> bool:
        """Learn where ``peer`` listens and ask it FIND_NODE; True if it answered (it is then in the table).

        For peers the node does not announce itself, e.g. a kubo with an RSA
        key: the transport sends no connection events for those.
        """
        binary = addrs_to_binary(addrs)
        self.book.add(peer, binary)
        self.node.transport.add_addresses(peer, dialable(addrs))
        return await self._probe(peer, trio.current_time() + self.config.query_timeout)

    async def find_peer(self, peer: PeerId) -> dict[str, Any]:
        """Look ``peer`` up: a lookup for its key that stops when it answers; its addresses."""
        if peer == self.peer_id:
            return self._peer_answer(peer, True, 0, 0)
        lookup = await self._find_node(peer.raw, stop_at=peer)
        # found: it answered us (so it is alive where we dialled it), or it is connected
        found = peer in lookup.responded() or peer in self.node.transport.connected_peers()
        return self._peer_answer(peer, found, lookup.hops, lookup.queries)

    async def find_providers(self, key: bytes, want: int = 20) -> list[dict[str, Any]]:
        """Peers that announced they provide ``key`` (ours first, then the network's)."""
        now = trio.current_time()
        found: dict[PeerId, tuple[bytes, ...]] = {r.provider: r.addrs for r in self.providers.get(key, now, want)}
        if len(found) < want:
            lookup = self._new_lookup(ProviderLookup, key, want=want - len(found))

            def feed(peer: PeerId, reply: pb.KadMessage, named: list[PeerId], now: float) -> None:
                listed = self._learn(providers_of(reply))
                lookup.on_response(peer, named, now, providers=listed)

            await self._drive(lookup, pb.request(pb.MessageType.GET_PROVIDERS, key), feed)
            for provider in lookup.providers:
                found.setdefault(provider, self._addrs_of(provider))
        return [{"peer_id": str(p), "addresses": addrs_to_text(addrs)} for p, addrs in list(found.items())[:want]]

    async def provide(self, key: bytes) -> dict[str, Any]:
        """Announce that this peer provides ``key`` now, and again every ``republish_interval``."""
        assert self.republisher is not None, "the DHT service is not running"
        self.republisher.provide(key, trio.current_time())
        self._wake.set()
        return await self._announce(key)

    async def put_value(self, name: bytes, value: bytes) -> dict[str, Any]:
        """Sign ``value`` under ``/p2pc/<our id>/<name>`` and store it on the k closest peers."""
        key = record_key(self.peer_id, name)
        held = self.records.get(key, trio.current_time())
        self._seq = max(self._seq + 1, int(self._wall() * 1000), held.seq + 1 if held else 0)
        record = make_record(self.node.identity, name, value, self._seq)
        self.records.put(key, record.encode(), trio.current_time())
        lookup = await self._find_node(key)
        msg = pb.request(pb.MessageType.PUT_VALUE, key, record=pb.KadRecord(key, record.encode()))
        stored = await self._send_all(lookup.result(), msg)
        return {"key": key.hex(), "seq": record.seq, "stored_on": stored, "closest": len(lookup.result())}

    async def get_value(self, key: bytes) -> SignedValue | None:
        """The newest valid record for ``key`` among ours and the closest peers'."""
        local = self.records.get(key, trio.current_time())
        lookup = self._new_lookup(ValueLookup, key, newer=newer, quorum=self.config.quorum)

        def feed(peer: PeerId, reply: pb.KadMessage, named: list[PeerId], now: float) -> None:
            record = None
            if reply.record is not None and reply.record.key == key:
                try:
                    record = validate(key, reply.record.value)
                except WireError as exc:
                    log.info("%s sent an invalid record: %s", peer.short, exc)
            lookup.on_response(peer, named, now, record=record)

        await self._drive(lookup, pb.request(pb.MessageType.GET_VALUE, key), feed)
        best = lookup.best
        if local is not None and (best is None or newer(local, best)):
            best = local
        outdated = lookup.outdated()
        if best is not None and outdated:
            msg = pb.request(pb.MessageType.PUT_VALUE, key, record=pb.KadRecord(key, best.encode()))
            self._spawn(self._send_all, outdated, msg)
        return best

    # --- lookups ---------------------------------------------------------------------------

    def _new_lookup(self, kind: type, key: bytes, **extra: Any) -> Any:
        assert self.table is not None, "the DHT service is not running"
        cfg = self.config
        target = key_of(key)
        seeds = self.table.closest(target, cfg.k)
        return kind(target, seeds, now=trio.current_time(), k=cfg.k, alpha=cfg.alpha, paths=cfg.paths,
                    query_timeout=cfg.query_timeout, timeout=cfg.lookup_timeout, local=self.peer_id, **extra)

    async def _find_node(self, key: bytes, stop_at: PeerId | None = None) -> Lookup:
        lookup = self._new_lookup(Lookup, key)

        def feed(peer: PeerId, reply: pb.KadMessage, named: list[PeerId], now: float) -> None:
            lookup.on_response(peer, named, now)

        stop = (lambda: stop_at in lookup.responded()) if stop_at is not None else (lambda: False)
        await self._drive(lookup, pb.request(pb.MessageType.FIND_NODE, key), feed, stop)
        return lookup

    async def _drive(self, lookup: Lookup, msg: pb.KadMessage, feed: Callable, stop: Callable = lambda: False) -> None:
        table, client = self.table, self.client
        reported: set[PeerId] = set()

        async def query(peer: PeerId, deadline: float) -> pb.KadMessage | None:
            return await client.request(peer, msg, deadline)

        def on_reply(peer: PeerId, reply: pb.KadMessage, now: float) -> None:
            named = self._learn(closer_of(reply))
            feed(peer, reply, named, now)
            self._seen(peer, now)

        def on_failure(peer: PeerId, now: float) -> None:
            reported.add(peer)
            self._execute(table.on_failure(peer, now))

        async with self._limiter:
            await run_lookup(lookup, query, on_reply, on_failure, stop)
        now = trio.current_time()
        for peer in lookup.failed():
            if peer not in reported:
                self._execute(table.on_failure(peer, now))
        table.touched(lookup.target, now)
        self.counts["lookups"] += 1
        if lookup.hops is not None:
            self.hops.append(lookup.hops)

    async def _announce(self, key: bytes) -> dict[str, Any]:
        own = self._own_addrs()
        self.providers.add(key, self.peer_id, trio.current_time(), own)
        lookup = await self._find_node(key)
        msg = pb.request(pb.MessageType.ADD_PROVIDER, key, provider_peers=(pb.kad_peer(self.peer_id, own),))
        sent = await self._send_all(lookup.result(), msg)
        return {"key": key.hex(), "announced_to": sent, "closest": len(lookup.result())}

    async def _send_all(self, peers: list[PeerId], msg: pb.KadMessage) -> int:
        """Send ``msg`` to every peer in parallel; how many took it (answered, for requests with replies)."""
        ok = 0
        deadline = trio.current_time() + self.config.query_timeout

        async def one(peer: PeerId) -> None:
            nonlocal ok
            try:
                await self.client.request(peer, msg, deadline)
                ok += 1
            except (TransportError, WireError) as exc:
                log.debug("%s to %s failed: %s", msg.type.name, peer.short, exc)

        async with trio.open_nursery() as nursery:
            for peer in peers:
                nursery.start_soon(one, peer)
        return ok

    # --- routing table feed ---------------------------------------------------------------

    def _seen(self, peer: PeerId, now: float, evict_check: bool = True) -> None:
        table = self.table
        was = len(table)
        self._execute(table.on_seen(peer, now, evict_check))
        if len(table) > was and len(table) < table.k + 1:
            if was == 0 or now - self._last_bootstrap >= self.config.bootstrap_interval:
                self._last_bootstrap = now
                self._execute([LookupSelf()])

    def _on_request(self, peer: PeerId, msg: pb.KadMessage, protocol: str) -> None:
        self.client.spoken(peer, protocol)
        self._seen(peer, trio.current_time(), msg.type is not pb.MessageType.PING)

    def _on_peer_event(self, peer: PeerId, connected: bool) -> None:
        if not connected:
            self.client.forget(peer)
            return
        if self._nursery is None or self.table is None:
            return
        if peer in self.table or peer in self._checking:
            return
        if self._spawn(self._check, peer):
            self._checking.add(peer)

    async def _check(self, peer: PeerId) -> None:
        """Does a newly connected peer speak our DHT? Only an answer admits it."""
        try:
            for attempt in range(3):
                if await self._probe(peer, trio.current_time() + self.config.query_timeout):
                    return
                await trio.sleep(0.5 * (attempt + 1))  # a connection that just opened may not serve yet
        finally:
            self._checking.discard(peer)

    async def _probe(self, peer: PeerId, deadline: float) -> bool:
        msg = pb.request(pb.MessageType.FIND_NODE, self.peer_id.raw)
        try:
            reply = await self.client.request(peer, msg, deadline)
        except (TransportError, WireError) as exc:
            log.debug("kad probe of %s failed: %s", peer.short, exc)
            return False
        self._learn(closer_of(reply))
        self._seen(peer, trio.current_time())
        return True

    async def _ping(self, cmd: PingPeer) -> None:
        """The routing table's eviction check: a kad PING (kubo answers it too), which the
        receiver knows not to answer with an eviction check of its own (see ``routing.py``)."""
        try:
            await self.client.request(cmd.peer, pb.request(pb.MessageType.PING), cmd.deadline)
            ok = True
        except (TransportError, WireError) as exc:
            log.debug("kad ping of %s failed: %s", cmd.peer.short, exc)
            ok = False
        self._execute(self.table.on_ping_result(cmd.peer, ok, trio.current_time()))

    def _learn(self, entries: list[tuple[PeerId, tuple[bytes, ...]]]) -> list[PeerId]:
        """Remember where named peers listen; returns the peers (ourselves excluded)."""
        out = []
        for peer, addrs in entries:
            if peer == self.peer_id:
                continue
            out.append(peer)
            if addrs and self.book.add(peer, addrs):
                text = dialable(pb.peer_addrs(pb.KadPeer(peer.raw, self.book.get(peer))))  # kept: bounded
                if text:
                    self.node.transport.add_addresses(peer, text)
        return out

    # --- commands and timers --------------------------------------------------------------

    def _execute(self, commands: list) -> None:
        for cmd in commands:
            if isinstance(cmd, PingPeer):
                self._spawn(self._ping, cmd)
            elif isinstance(cmd, RefreshBucket):
                self._spawn(self._find_node, cmd.key)
            elif isinstance(cmd, LookupSelf):
                self._spawn(self._find_node, self.peer_id.raw)
            elif isinstance(cmd, Announce):
                self._spawn(self._announce, cmd.key)
        if commands:
            self._wake.set()

    def _spawn(self, fn: Callable, *args: Any) -> bool:
        """Run ``fn`` in the background if under ``max_background``; False if dropped."""
        if self._nursery is None or self._background >= self.config.max_background:
            self.counts["dropped"] += 1
            return False
        self._background += 1
        self._nursery.start_soon(self._background_task, fn, args)
        return True

    async def _background_task(self, fn: Callable, args: tuple) -> None:
        try:
            await fn(*args)
        except (TransportError, WireError) as exc:
            log.info("dht background %s failed: %s", fn.__name__, exc)
        finally:
            self._background -= 1

    async def _timer_loop(self) -> None:
        next_housekeeping = trio.current_time() + HOUSEKEEPING
        while True:
            now = trio.current_time()
            self._execute(self.table.tick(now))
            self._execute(self.republisher.due(now))
            if now >= next_housekeeping:
                self.providers.expire(now)
                self.records.expire(now)
                await self.client.close_idle(now)
                next_housekeeping = now + HOUSEKEEPING
            self._wake = trio.Event()
            due = min(self.table.next_deadline(), self.republisher.next_deadline() or math.inf, next_housekeeping)
            with trio.move_on_at(max(due, trio.current_time() + MIN_TICK)):
                await self._wake.wait()

    # --- addresses ---------------------------------------------------------------------------

    def _addrs_of(self, peer: PeerId) -> tuple[bytes, ...]:
        known = self.book.get(peer)
        if known:
            return known
        held = getattr(self.node, "records", {}).get(peer)
        if held:
            return addrs_to_binary(held[0].addrs)
        return addrs_to_binary(self.node.transport.addresses_of(peer))  # e.g. a kubo that dialled us

    def _own_addrs(self) -> tuple[bytes, ...]:
        return addrs_to_binary(self.node.transport.announce_addresses())

    def _peer_answer(self, peer: PeerId, found: bool, hops: int | None, queries: int) -> dict[str, Any]:
        addrs = self._own_addrs() if peer == self.peer_id else self._addrs_of(peer)
        return {"peer_id": str(peer), "found": found, "addresses": addrs_to_text(addrs), "hops": hops,
                "queries": queries, "connected": peer in self.node.transport.connected_peers()}

    async def _on_stream(self, protocol: str, peer: PeerId, stream: Any) -> None:
        if self.responder is None:
            await stream.reset()
            return
        await self.responder.serve(peer, stream, protocol)

    # --- control API ------------------------------------------------------------------------

    async def _api_find_peer(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        try:
            peer = PeerId.from_string(query.get("peer", ""))
        except ValueError as exc:
            raise HttpError(400, f"give ?peer=<peer ID>: {exc}") from None
        return json_response(await self.find_peer(peer))

    async def _api_providers(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        key = _key_arg(query.get("key"))
        try:
            want = int(query.get("limit", "20"))
        except ValueError:
            raise HttpError(400, "limit must be an integer") from None
        providers = await self.find_providers(key, max(1, min(want, 100)))
        return json_response({"key": key.hex(), "providers": providers})

    async def _api_provide(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        return json_response(await self.provide(_key_arg(parse_json_body(body).get("key"))))


def _key_arg(text: Any) -> bytes:
    if not isinstance(text, str) or not text or len(text) > 1024:
        raise HttpError(400, "give a key: a CID or any text of 1 to 1024 characters")
    return content_key(text)
