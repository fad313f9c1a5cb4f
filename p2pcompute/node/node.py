"""The Node: one peer's protocols on one Transport, driven by trio.

Theory of operation
-------------------
A Node owns a Transport and runs, in its nursery, the drivers of its
protocols. For now those are the node's own: ping, the signed Hello
exchange (each side learns the other's ``PeerRecord``: addresses and declared
resources), peer exchange (``GetPeers``), Goodbye on shutdown, and the
``Peering`` state machine (``peering.py``) that decides what to dial. Later
protocols (gossip, dht, storage, scheduler) attach the same way: handlers on
the transport, a driver task in the nursery.

The node keeps the newest verified record of every peer it heard of (bounded)
and persists the table to ``peers.json`` so that a restarted daemon rejoins
even when its bootstrap peers are gone.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from .. import __version__
from ..errors import PeerUnreachable, RequestFailed, TransportError, WireError
from . import wire
from .addrs import announced, interface_ips, usable_for
from .identity import PeerId
from .messages import GetPeers, Goodbye, Hello, HelloReply, PeerRecord, Peers, Ping, Pong, Resources
from .peering import Dial, Exchange, Notice, Peering, PeeringConfig
from .service import Service
from .transport import Transport

log = logging.getLogger(__name__)

PEERS_FILE = "peers.json"
PERSIST_EVERY = 30.0
MAX_RECORDS = 4096
MIN_TICK = 0.05
PING_LOOKUP_TIMEOUT = 15.0  # `ping` of a peer we cannot reach: how long its DHT lookup may take


def advertised(addrs: list[str]) -> list[str]:
    """Listen addresses as others can dial them (0.0.0.0 becomes every interface address).

    Prefer ``transport.announce_addresses()``, which also applies the
    ``announce`` / ``no_announce`` settings and observed addresses.
    """
    return announced(addrs, interface_ips())


class Node:
    """A peer: transport + protocols. ``run()`` until cancelled."""

    def __init__(
        self,
        transport: Transport,
        *,
        resources: Resources,
        data_dir: Path | None = None,
        bootstrap: list[tuple[PeerId, list[str]]] = (),
        target_peers: int = 32,
        rng: random.Random | None = None,
        wall_clock: Callable[[], float] = time.time,
        on_notice: Callable[[str, str], None] | None = None,
        services: list[Service] = (),
    ) -> None:
        self.transport = transport
        self.identity = transport.identity
        self.peer_id = transport.local_id
        self.resources = resources
        self.data_dir = data_dir
        self._wall = wall_clock
        self._on_notice = on_notice or (lambda level, text: log.log(logging.getLevelName(level.upper()), text))
        self.rng = rng or random.Random()
        self.peering = Peering(self.peer_id, self.rng, PeeringConfig(target=target_peers))
        self.records: dict[PeerId, tuple[PeerRecord, bytes]] = {}
        self._usable: dict[PeerId, list[str]] = {}  # each record's addresses we can use (addrs.py)
        self._bootstrap = list(bootstrap)
        self._wake = trio.Event()
        self._dirty = False
        self.started_at: float | None = None
        self.public_url: str | None = None  # where others reach our public routes (signed links), if served
        self._nursery: trio.Nursery | None = None
        self._claim_cache: dict[tuple[str, ...], tuple[PeerRecord, bytes]] = {}
        transport.on_request(Ping, self._on_ping)
        transport.on_request(Hello, self._on_hello)
        transport.on_request(GetPeers, self._on_get_peers)
        transport.on_message(Goodbye, self._on_goodbye)
        transport.on_peer_event(self._on_peer_event)
        self.services: dict[str, Service] = {}
        for service in services:
            self.add_service(service)

    def add_service(self, service: Service) -> None:
        """Plug a protocol in (before ``run``): it registers its handlers now."""
        if service.name in self.services:
            raise ValueError(f"a service named {service.name!r} is already attached")
        self.services[service.name] = service
        service.attach(self)

    # --- lifecycle --------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        # The transport outlives the services: once it is up, a cancellation
        # from outside reaches the services first (their shutdown says
        # goodbye, the membership leave goes out), and only then is the
        # transport closed. While it starts it is cancellable like anything.
        transport_scope = trio.CancelScope()

        async def run_transport(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            with transport_scope:
                await self.transport.run(task_status=task_status)

        async with trio.open_nursery() as outer:
            try:
                await outer.start(run_transport)
                transport_scope.shield = True  # from now on only we stop it
                try:
                    async with trio.open_nursery() as nursery:
                        self._nursery = nursery
                        await self._start(nursery)
                        task_status.started()
                        await trio.sleep_forever()
                finally:
                    self._nursery = None  # handlers during shutdown spawn nothing
                    with trio.CancelScope(shield=True), trio.move_on_after(2.0):
                        await self._say_goodbye()
                    self._save_peers()
            finally:
                transport_scope.cancel()

    async def _start(self, nursery: trio.Nursery) -> None:
        self.started_at = self._wall()
        now = trio.current_time()
        for peer, addrs in self._bootstrap:
            self.peering.add(peer, addrs, now, bootstrap=True)
        for peer, addrs in self._load_peers():
            self.peering.add(peer, addrs, now)
        nursery.start_soon(self._peering_loop)
        for service in self.services.values():
            await nursery.start(service.run)
        if self.data_dir is not None:
            nursery.start_soon(self._persist_loop)

    # --- what other layers ask ----------------------------------------------------

    def own_record(self, peer: PeerId | None = None) -> tuple[PeerRecord, bytes]:
        """Our signed record; for ``peer``, only with addresses it can use (no loopback off-host)."""
        addrs = self.transport.announce_addresses()
        if peer is not None:
            addrs = usable_for(addrs, self.transport.remote_ip(peer))
        key = tuple(addrs)
        if key not in self._claim_cache:
            if len(self._claim_cache) >= 8:  # addresses changed: old variants are stale
                self._claim_cache.clear()
            record = PeerRecord(self.peer_id, int(self._wall() * 1000), key, self.resources, f"p2pcompute/{__version__}")
            self._claim_cache[key] = (record, wire.sign_claim(self.identity, record))
        return self._claim_cache[key]

    async def ping(self, peer: PeerId, timeout: float | None = None) -> float:
        """Round-trip time to ``peer`` in seconds; a peer we cannot reach is looked up in the DHT first."""
        try:
            return await self._ping(peer, timeout)
        except PeerUnreachable:
            dht = self.services.get("dht")
            if dht is None:
                raise
            with trio.move_on_after(PING_LOOKUP_TIMEOUT):
                await dht.find_peer(peer)  # teaches the transport where it listens
            if not self.transport.addresses_of(peer) and peer not in self.transport.connected_peers():
                raise PeerUnreachable(f"{peer} is not connected and the DHT knows no address for it") from None
            return await self._ping(peer, timeout)

    async def _ping(self, peer: PeerId, timeout: float | None) -> float:
        nonce = self.rng.getrandbits(63)
        start = trio.current_time()
        reply = await self.transport.request(peer, Ping(nonce), timeout)
        if not isinstance(reply, Pong) or reply.nonce != nonce:
            raise RequestFailed(f"{peer.short} answered ping with a wrong reply")
        return trio.current_time() - start

    def status(self) -> dict[str, Any]:
        connected = self.transport.connected_peers()
        return {
            "peer_id": str(self.peer_id),
            "agent": f"p2pcompute/{__version__}",
            "addresses": [f"{a}/p2p/{self.peer_id}" if "/p2p/" not in a else a
                          for a in self.transport.announce_addresses()],
            "uptime_s": round(self._wall() - self.started_at, 1) if self.started_at else 0.0,
            "connected_peers": len(connected),
            "known_peers": len(self.peering.known),
            "resources": {"cpus": self.resources.cpus, "memory": self.resources.memory,
                          "labels": self.resources.labels},
            "messages_sent": sum(self.transport.stats.sent.values()),
            "messages_received": sum(self.transport.stats.received.values()),
        } | {name: self._service_status(service) for name, service in self.services.items()}

    @staticmethod
    def _service_status(service: Service) -> dict[str, Any]:
        try:
            return service.status()
        except Exception as exc:  # a status bug must not break `status`
            log.exception("status of service %s failed", service.name)
            return {"error": f"{type(exc).__name__}: {exc}"}

    def peers(self) -> list[dict[str, Any]]:
        """The peer table: connection state from peering, liveness and capabilities from membership."""
        now = trio.current_time()
        rows: dict[str, dict[str, Any]] = {}
        for k in self.peering.table():
            record = self.records.get(k.peer, (None, b""))[0]
            rows[str(k.peer)] = {
                "peer_id": str(k.peer),
                "state": "connected" if k.connected else "known",
                "connected": k.connected,
                "addresses": list(self._usable.get(k.peer, ())) if record else k.addrs,
                "cpus": record.resources.cpus if record else None,
                "memory": record.resources.memory if record else None,
                "labels": record.resources.labels if record else {},
                "agent": record.agent if record else "",
                "bootstrap": k.bootstrap,
                "last_seen_s_ago": 0.0 if k.connected else (None if k.last_seen is None else round(now - k.last_seen, 1)),
                "failures": k.failures,
                "last_error": k.last_error,
            }
        membership = self.services.get("membership")
        for m in membership.member_rows() if membership is not None else []:
            row = rows.setdefault(m["peer_id"], {
                "peer_id": m["peer_id"], "connected": False, "addresses": usable_for([m["address"]] if m["address"] else [], None),
                "cpus": None, "memory": None, "labels": {}, "agent": "", "bootstrap": False,
                "failures": 0, "last_error": ""})
            row["state"] = m["state"]
            row["last_seen_s_ago"] = m["last_seen_s_ago"]
            for key in ("cpus", "memory", "labels", "arch", "free_slots", "load", "opsets", "wasm"):
                if m.get(key) not in (None, "", [], {}):
                    row[key] = m[key]
        return sorted(rows.values(), key=lambda r: (r["state"] not in ("alive", "connected"), r["peer_id"]))

    # --- handlers -----------------------------------------------------------------

    async def _on_ping(self, peer: PeerId, msg: Ping) -> Pong:
        return Pong(msg.nonce, msg.payload)

    async def _on_hello(self, peer: PeerId, msg: Hello) -> HelloReply:
        self._accept_claim(msg.record, expect=peer)
        return HelloReply(self.own_record(peer)[1])

    async def _on_get_peers(self, peer: PeerId, msg: GetPeers) -> Peers:
        limit = max(0, min(msg.limit, 64))
        claims = [claim for pid, (_, claim) in self.records.items() if pid != peer]
        self.rng.shuffle(claims)
        return Peers(tuple([self.own_record(peer)[1]] + claims[: max(0, limit - 1)]))

    async def _on_goodbye(self, peer: PeerId, msg: Goodbye) -> None:
        log.debug("peer %s said goodbye (%s)", peer.short, msg.reason)
        self._apply(self.peering.disconnected(peer, trio.current_time()))

    # --- peering driver -----------------------------------------------------------

    def _on_peer_event(self, peer: PeerId, connected: bool) -> None:
        now = trio.current_time()
        if connected:
            log.debug("connected to %s", peer.short)
            self._apply(self.peering.connected(peer, now))
        else:
            log.debug("lost connection to %s", peer.short)
            self._apply(self.peering.disconnected(peer, now))
        self._dirty = True

    def _apply(self, commands: list) -> None:
        if self._nursery is None:
            return
        for cmd in commands:
            if isinstance(cmd, Dial):
                self._nursery.start_soon(self._dial, cmd)
            elif isinstance(cmd, Exchange):
                self._nursery.start_soon(self._exchange, cmd.peer)
            elif isinstance(cmd, Notice):
                self._on_notice(cmd.level, cmd.text)
        self._wake.set()

    async def _peering_loop(self) -> None:
        while True:
            self._apply(self.peering.tick(trio.current_time()))
            self._wake = trio.Event()
            due = self.peering.next_wakeup()
            # never spin: at least MIN_TICK between ticks, even when something is due now
            due = max(due if due is not None else trio.current_time() + 60.0, trio.current_time() + MIN_TICK)
            with trio.move_on_at(due):
                await self._wake.wait()

    async def _dial(self, cmd: Dial) -> None:
        errors = []
        for addr in cmd.addrs:
            full = addr if "/p2p/" in addr else f"{addr}/p2p/{cmd.peer}"
            try:
                await self.transport.connect(full)
                # the transport's peer event reports the connection
                self._apply(self.peering.connected(cmd.peer, trio.current_time()))
                return
            except Exception as exc:  # user errors included: a bad address must not stop the node
                errors.append(str(exc))
        self._apply(self.peering.dial_failed(cmd.peer, "; ".join(errors) or "no address", trio.current_time()))

    async def _exchange(self, peer: PeerId) -> None:
        try:
            reply = await self.transport.request(peer, Hello(self.own_record(peer)[1]))
            if isinstance(reply, HelloReply):
                self._accept_claim(reply.record, expect=peer)
            peers = await self.transport.request(peer, GetPeers(limit=64))
        except (TransportError, WireError) as exc:
            log.debug("exchange with %s failed: %s", peer.short, exc)
            return
        if isinstance(peers, Peers):
            for claim in peers.records[:64]:
                try:
                    self._accept_claim(claim, via=peer)
                except WireError as exc:
                    log.warning("%s sent a bad peer record: %s", peer.short, exc)

    def _accept_claim(self, claim: bytes, expect: PeerId | None = None, via: PeerId | None = None) -> None:
        """Keep a verified record; its addresses only as far as usable from where ``via`` reached us."""
        signer, record = wire.open_claim(claim, PeerRecord, max_size=64 * 1024)
        if record.peer_id != signer:
            raise WireError(f"record for {record.peer_id.short} signed by {signer.short}")
        if expect is not None and signer != expect:
            raise WireError(f"{expect.short} sent a record of {signer.short} as its own")
        if signer == self.peer_id:
            return
        old = self.records.get(signer)
        if old is not None and old[0].seq >= record.seq:
            return
        if old is None and len(self.records) >= MAX_RECORDS:
            return
        self.records[signer] = (record, claim)
        usable = usable_for(record.addrs, self.transport.remote_ip(via or expect or signer))
        self._usable[signer] = usable
        self.transport.add_addresses(signer, usable)
        self._apply(self.peering.learned(signer, usable, trio.current_time()))
        self._dirty = True

    async def _say_goodbye(self) -> None:
        async with trio.open_nursery() as nursery:
            for peer in self.transport.connected_peers():
                nursery.start_soon(self._send_quietly, peer, Goodbye())

    async def _send_quietly(self, peer: PeerId, msg: Any) -> None:
        try:
            await self.transport.send(peer, msg)
        except TransportError:
            pass

    # --- persistence ----------------------------------------------------------------

    async def _persist_loop(self) -> None:
        while True:
            await trio.sleep(PERSIST_EVERY)
            if self._dirty:
                self._save_peers()

    def _save_peers(self) -> None:
        if self.data_dir is None:
            return
        rows = [{"peer_id": str(k.peer), "addrs": k.addrs, "bootstrap": k.bootstrap}
                for k in self.peering.table() if k.addrs][:1024]
        path = self.data_dir / PEERS_FILE
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps({"peers": rows}, indent=1))
            os.replace(tmp, path)
            self._dirty = False
        except OSError as exc:
            log.warning("could not save %s: %s", path, exc)

    def _load_peers(self) -> list[tuple[PeerId, list[str]]]:
        if self.data_dir is None:
            return []
        path = self.data_dir / PEERS_FILE
        try:
            rows = json.loads(path.read_text())["peers"]
            return [(PeerId.from_string(r["peer_id"]), [str(a) for a in r["addrs"]]) for r in rows]
        except FileNotFoundError:
            return []
        except (ValueError, KeyError, TypeError, RecursionError, OSError) as exc:
            log.warning("ignoring unreadable %s (starting without the peers it listed): %s",
                        path, str(exc)[:200])
            return []
