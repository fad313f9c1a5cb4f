"""Transport over py-libp2p: TCP + Noise + yamux, our own protocol ids.

Theory of operation
-------------------
Messages travel on long-lived streams of protocol ``/p2pcompute/msg/1.0.0``
as varint-length frames (``framing.py``): each side writes on one outbound
stream per peer, opened on first use and kept (a new stream per request costs
~3 ms on loopback, an open one ~0.5 ms), and reads every inbound stream a
peer opens to it. A reply therefore travels on the replier's own outbound
stream. Writes to one stream are serialised by a per-peer lock.

Noise authenticates the remote peer ID of every connection, so
``_on_frame`` is always called with the true sender.

Liveness: libp2p tells us when a connection closes (a killed peer's kernel
resets its sockets), and we fail that peer's pending requests at once. A
hung peer (SIGSTOP) keeps its connection open; requests to it end with
``RequestTimeout`` and membership (gossip/) is what declares it dead.

Host settings follow the measurements in DESIGN.md: Noise only (no
plaintext or secio), yamux, one connection per peer (otherwise every dial
waits 250 ms), libp2p's auto-connector stopped (peering.py decides whom to
dial), and an explicit shielded
``host.close()`` with a deadline on the way out, closing connections
concurrently.

Where py-libp2p 0.8.1 falls short for a daemon open to strangers, ours
stands in: the TCP listener (``inbound.py``: an exclusive port, inbound
slots released when connections close, handshake timeout, per-IP cap,
idle connections closed for newcomers), the peerstore (``peerstore.py``:
never evicts our own key; libp2p's own handlers cannot crash the swarm),
and the addresses we announce (``addrs.py``: every interface address, what
peers observe, ``announce`` / ``no_announce``; loopback only to loopback).
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from typing import Any

import multiaddr
import trio

from . import addrs as addrs_mod
from ..errors import MessageTooLarge, PeerUnreachable, TransportError, UserError, WireError
from .framing import FrameReader, encode_varint
from .identity import Identity, PeerId
from .inbound import InboundGate, make_tcp_transport
from .transport import ProtocolNotSupported, Transport

log = logging.getLogger(__name__)

MSG_PROTOCOL = "/p2pcompute/msg/1.0.0"
CLOSE_DEADLINE = 3.0
MAX_UNSUPPORTED_PEERS = 1024  # peers whose refused protocols are remembered (LRU)
PEERSTORE_MAX = 8192  # py-libp2p's default of 1000 is below what membership and the DHT know


def quiet_libp2p_logging(level: int = logging.CRITICAL) -> None:
    """libp2p turns off propagation and logs routine events at ERROR: undo both.

    libp2p configures its loggers when it is first imported (propagation off,
    no handler: Python's last-resort handler then prints its ERRORs raw, such
    as an 8-line block for every peer that does not speak a protocol), so it
    is imported first and reconfigured after.
    """
    import libp2p.network.auto_connector  # noqa: F401  (imports run setup_logging; this one sets INFO)

    lib = logging.getLogger("libp2p")
    lib.propagate = True
    lib.setLevel(level)
    for name in ("multiaddr", "libp2p.transport", "libp2p.network", "libp2p.network.auto_connector"):
        logging.getLogger(name).setLevel(level)
    _requiet_libp2p_loggers()


def _requiet_libp2p_loggers() -> None:
    """Some libp2p modules set their own logger to INFO on import: hold them to libp2p's level."""
    floor = logging.getLogger("libp2p").level
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.startswith("libp2p.") and isinstance(logger, logging.Logger) and 0 < logger.level < floor:
            logger.setLevel(floor)


def parse_multiaddr(text: str) -> multiaddr.Multiaddr:
    try:
        return multiaddr.Multiaddr(text)
    except Exception as exc:
        raise UserError(f"{text!r} is not a valid multiaddr (e.g. /ip4/127.0.0.1/tcp/4001): {exc}") from None


def parse_tcp_listen(text: str) -> multiaddr.Multiaddr:
    """A listen address: TCP over IPv4 or IPv6 (UDP/QUIC, websockets... are not supported)."""
    addr = parse_multiaddr(text)
    names = [p.name for p in addr.protocols()]
    if "udp" in names or "quic" in names or "quic-v1" in names:
        raise UserError(f"cannot listen on {text}: UDP/QUIC is not supported; use TCP, e.g. /ip4/0.0.0.0/tcp/4001")
    if names[:2] not in (["ip4", "tcp"], ["ip6", "tcp"]) or len(names) != 2:
        raise UserError(f"cannot listen on {text}: write /ip4/<address>/tcp/<port> or /ip6/<address>/tcp/<port>")
    return addr


def split_p2p_addr(text: str) -> tuple[PeerId, str]:
    """``/ip4/.../tcp/.../p2p/ID`` -> (peer, transport part)."""
    addr = parse_multiaddr(text)
    try:
        peer_text = addr.value_for_protocol("p2p")
    except Exception:
        peer_text = None
    if not peer_text:
        raise UserError(f"{text} has no /p2p/<peer ID> part; copy the full address the peer printed")
    try:
        peer = PeerId.from_string(peer_text)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    transport_part = str(addr.decapsulate(multiaddr.Multiaddr(f"/p2p/{peer_text}")))
    return peer, transport_part


class _StreamAdapter:
    """A libp2p NetStream behind our ``Stream`` protocol; its errors become ours."""

    def __init__(self, stream: Any) -> None:
        self._s = stream

    async def read(self, max_bytes: int = 65536) -> bytes:
        try:
            return await self._s.read(max_bytes)
        except EOFError:
            return b""
        except Exception as exc:
            raise TransportError(f"stream read failed: {type(exc).__name__}: {exc}") from None

    async def write(self, data: bytes) -> None:
        try:
            await self._s.write(data)
        except Exception as exc:
            raise TransportError(f"stream write failed: {type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        try:
            await self._s.close()
        except Exception:
            pass

    async def reset(self) -> None:
        try:
            await self._s.reset()
        except Exception:
            pass


class _Notifee:
    """Forwards libp2p connection events to the transport (duck-typed INotifee)."""

    def __init__(self, transport: Libp2pTransport) -> None:
        self._t = transport

    async def opened_stream(self, network: Any, stream: Any) -> None: ...

    async def closed_stream(self, network: Any, stream: Any) -> None: ...

    async def listen(self, network: Any, maddr: Any) -> None: ...

    async def listen_close(self, network: Any, maddr: Any) -> None: ...

    async def connected(self, network: Any, conn: Any) -> None:
        peer = _peer_of(conn)
        self._t._gate.established(_remote_of(conn), peer)
        if peer is not None:
            self._t._peer_connected(peer)

    async def disconnected(self, network: Any, conn: Any) -> None:
        self._t._gate.closed(_remote_of(conn))
        peer = _peer_of(conn)
        if peer is not None and not network.get_connections(conn.muxed_conn.peer_id):
            self._t._on_disconnect(peer)


def _remote_of(conn: Any) -> tuple[str, int] | None:
    try:
        return conn.muxed_conn.get_remote_address()
    except Exception:  # a closing connection may have lost its socket
        return None


def _peer_of(conn_or_stream: Any) -> PeerId | None:
    try:
        return PeerId(conn_or_stream.muxed_conn.peer_id.to_bytes())
    except (AttributeError, ValueError):
        return None  # not a libp2p peer ID we can read


class Libp2pTransport(Transport):
    """A py-libp2p host speaking our protocols."""

    def __init__(
        self,
        identity: Identity,
        listen: list[str],
        *,
        dial_timeout: float = 5.0,
        max_connections: int = 512,
        max_connections_per_ip: int = 16,
        handshake_timeout: float = 10.0,
        announce: list[str] = (),
        no_announce: list[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(identity, **kwargs)
        self._listen = [parse_tcp_listen(a) for a in listen]
        self._last_heard: dict[PeerId, float] = {}  # for InboundGate: who to close first when full
        self._gate = InboundGate(max_connections, max_connections_per_ip, handshake_timeout=handshake_timeout,
                                 last_active=lambda peer: self._last_heard.get(peer, -math.inf))
        self._listen_errors: list[str] = []
        self._announce = [str(parse_multiaddr(a)) for a in announce]
        self._no_announce = [str(parse_multiaddr(a)) for a in no_announce]
        self._interfaces: tuple[float, list[str]] = (-1e9, [])
        self._dial_timeout = dial_timeout
        self._max_connections = max_connections
        self._host: Any = None
        self._listening: list[str] = []
        self._out: dict[PeerId, _StreamAdapter] = {}
        self._locks: dict[PeerId, trio.Lock] = {}
        self._addrs: OrderedDict[PeerId, list[str]] = OrderedDict()  # least recently given first; bounded
        # protocols a connected peer refused (a kubo refuses ours): not asked again until it reconnects
        self._unsupported: OrderedDict[PeerId, set[str]] = OrderedDict()

    # --- Transport API ------------------------------------------------------

    def connected_peers(self) -> list[PeerId]:
        if self._host is None:
            return []
        peers = []
        for pid, conns in self._host.get_network().get_connections_map().items():
            if conns:
                try:
                    peers.append(PeerId(pid.to_bytes()))
                except ValueError:
                    continue
        return sorted(peers)

    def add_addresses(self, peer: PeerId, addrs: list[str]) -> None:
        """Keep the newest usable addresses (no loopback for a peer connected from elsewhere)."""
        known = self._addrs.setdefault(peer, [])
        self._addrs.move_to_end(peer)
        for a in addrs_mod.usable_for(addrs, self.remote_ip(peer)):
            if a not in known:
                known.append(a)
        del known[:-addrs_mod.MAX_ADDRS]  # bounded: keep the newest
        while len(self._addrs) > PEERSTORE_MAX:  # bounded too: the peer given addresses longest ago goes
            self._addrs.popitem(last=False)

    def addresses_of(self, peer: PeerId) -> list[str]:
        """Addresses we were given, then those libp2p learned (identify: the peer's listen addresses)."""
        known = list(self._addrs.get(peer, []))
        if self._host is not None:
            try:
                known += [str(a) for a in self._host.get_peerstore().addrs(self._libp2p_id(peer))]
            except Exception:  # the peerstore raises for a peer it does not know
                pass
        return addrs_mod.usable_for((a for a in known if "/p2p/" not in a), self.remote_ip(peer))

    def announce_addresses(self) -> list[str]:
        return addrs_mod.announced(self._listening, self._interface_ips(), self._observed(),
                                   self._announce, self._no_announce)

    def remote_ip(self, peer: PeerId) -> str | None:
        if self._host is None:
            return None
        try:
            for conn in self._host.get_network().get_connections(self._libp2p_id(peer)):
                remote = conn.muxed_conn.get_remote_address()
                if remote:
                    return str(remote[0])
        except Exception:  # a closing connection has no address any more
            return None
        return None

    def _interface_ips(self) -> list[str]:
        """The machine's addresses, read again at most every 30 s (interfaces come and go)."""
        now = trio.current_time() if self._host is not None else 0.0
        if now - self._interfaces[0] > 30.0 or not self._interfaces[1]:
            self._interfaces = (now, addrs_mod.interface_ips())
        return self._interfaces[1]

    def _observed(self) -> list[str]:
        """Our addresses as peers see them, confirmed by several (libp2p identify)."""
        manager = getattr(self._host, "_observed_addr_manager", None)
        try:
            return [str(a) for a in manager.addrs()] if manager is not None else []
        except Exception:
            return []

    def listen_addresses(self) -> list[str]:
        # fixed once listening; read from the cache, because asking libp2p
        # while it closes its listeners raises EBADF (a shutdown race)
        return list(self._listening)

    async def connect(self, address: str) -> PeerId:
        peer, transport_part = split_p2p_addr(address)
        if peer == self.local_id:
            raise UserError(f"{address} is this peer's own address")
        self.add_addresses(peer, [transport_part])
        await self._ensure_connected(peer)
        return peer

    async def open_stream(self, peer: PeerId, protocol: str) -> _StreamAdapter:
        if protocol in self._unsupported.get(peer, ()):
            raise ProtocolNotSupported(f"{peer.short} does not speak {protocol}")
        for attempt in (1, 2):
            await self._ensure_connected(peer)
            try:
                with trio.fail_after(self._dial_timeout):
                    stream = await self._host.new_stream(self._libp2p_id(peer), [protocol])
                return _StreamAdapter(stream)
            except trio.TooSlowError:
                raise PeerUnreachable(f"{peer.short} did not open a {protocol} stream in time") from None
            except Exception as exc:
                if _refused(exc):
                    self._remember_unsupported(peer, protocol)
                    raise ProtocolNotSupported(f"{peer.short} does not speak {protocol}") from None
                if attempt == 2 or self._open_connections(peer):
                    raise PeerUnreachable(f"cannot open {protocol} to {peer.short}: {exc}") from None
                # every connection libp2p still lists is closed (two peers dialling each other at once
                # keep one connection; the loser's may linger in the list): dial again, once
                log.debug("stream to %s failed on a closed connection (%s); redialling", peer.short, exc)
        raise AssertionError("unreachable")

    def _open_connections(self, peer: PeerId) -> list[Any]:
        """libp2p's connections to ``peer`` that are not closed (it keeps closed ones listed for a while)."""
        try:
            conns = self._host.get_network().get_connections(self._libp2p_id(peer))
        except Exception:
            return []
        return [c for c in conns if not getattr(c, "is_closed", False)]

    def _remember_unsupported(self, peer: PeerId, protocol: str) -> None:
        refused = self._unsupported.setdefault(peer, set())
        self._unsupported.move_to_end(peer)
        if protocol not in refused and len(refused) < 64:
            refused.add(protocol)
            log.debug("%s does not speak %s; not asked again while connected", peer.short, protocol)
        while len(self._unsupported) > MAX_UNSUPPORTED_PEERS:
            self._unsupported.popitem(last=False)

    # --- implementation ---------------------------------------------------------

    def _make_host(self) -> Any:
        from libp2p import new_host
        from libp2p.crypto.ed25519 import create_new_key_pair
        from libp2p.crypto.x25519 import create_new_key_pair as new_x25519
        from libp2p.network.config import ConnectionConfig
        from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_ID
        from libp2p.security.noise.transport import Transport as NoiseTransport

        key_pair = create_new_key_pair(self.identity.seed)
        security = {NOISE_ID: NoiseTransport(key_pair, noise_privkey=new_x25519().private_key)}
        # our InboundGate enforces max_connections (closing idle ones to make
        # room); libp2p's own limit sits above it so a freed slot is not
        # refused while the closed connection is still being torn down
        config = ConnectionConfig(
            max_connections_per_peer=1,
            min_connections=0,
            low_watermark=0,
            high_watermark=self._max_connections + 64,
            max_connections=self._max_connections + 64,
            dial_timeout=self._dial_timeout,
            inbound_upgrade_timeout=self._gate.handshake_timeout,
        )
        from libp2p.peer.id import ID

        from .peerstore import SafePeerStore

        self._tcp = make_tcp_transport(self._gate, self._listen_errors)

        def connected(pid: Any) -> bool:
            return bool(host.get_network().get_connections(pid))

        peerstore = SafePeerStore(ID.from_pubkey(key_pair.public_key), key_pair,
                                  max(PEERSTORE_MAX, 2 * self._max_connections), connected)
        host = new_host(key_pair=key_pair, sec_opt=security, muxer_preference="YAMUX", connection_config=config,
                        transports=[self._tcp], peerstore_opt=peerstore)
        _requiet_libp2p_loggers()  # now that libp2p's modules are imported
        if str(host.get_id()) != str(self.local_id):  # pragma: no cover - guards a libp2p change
            raise RuntimeError("libp2p derived a different peer ID from our key")
        return host

    async def _serve(self, nursery: trio.Nursery, task_status: Any) -> None:
        self._host = self._make_host()
        self._host.set_stream_handler(MSG_PROTOCOL, self._inbound_messages)
        for protocol in self._stream_handlers:
            self._register_stream_protocol(protocol)
        self._host.get_network().register_notifee(_Notifee(self))
        from .peerstore import guard_handlers

        guard_handlers(self._host, {MSG_PROTOCOL, *self._stream_handlers})
        failure: UserError | None = None
        try:
            async with self._host.run(self._listen):
                # libp2p's auto-connector dials every peerstore peer up to
                # (low + high watermark) / 2 connections; peering.py decides that.
                await self._host.get_network().auto_connector.stop()
                guard_handlers(self._host, {MSG_PROTOCOL, *self._stream_handlers})  # those run() added
                self._listening = [f"{a}/p2p/{self.local_id}" for a in self._host.get_transport_addrs()]
                if self._listen_errors or len(self._listening) < len(self._listen):
                    # py-libp2p logs a failed bind and carries on: we refuse
                    why = "; ".join(dict.fromkeys(self._listen_errors)) or "no such local address or port unavailable"
                    failure = UserError(
                        f"cannot listen on {', '.join(map(str, self._listen))}: {why}; "
                        "pick another with --listen (/ip4/0.0.0.0/tcp/0 picks a free port)"
                    )
                    await _ignore_errors(self._host.close)
                else:
                    task_status.started()
                    try:
                        await trio.sleep_forever()
                    finally:
                        # close while the swarm still runs: after host.run() exits,
                        # close() no longer reaches the connections and they leak
                        with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_DEADLINE):
                            await self._close_host()
        except OSError as exc:
            raise UserError(
                f"cannot listen on {', '.join(map(str, self._listen))}: {exc.strerror or exc}; "
                "pick another port with --listen (tcp/0 picks a free one)"
            ) from None
        finally:
            self._host = None
            self._listening = []
        if failure is not None:
            raise failure

    async def _close_host(self) -> None:
        host = self._host
        async with trio.open_nursery() as nursery:
            for pid in list(host.get_network().get_connections_map()):
                nursery.start_soon(_ignore_errors, host.disconnect, pid)
        await _ignore_errors(host.close)
        await self._tcp.close_dialled()

    def _register_stream_protocol(self, protocol: str) -> None:
        if self._host is None:
            return  # registered in _serve

        async def handler(stream: Any) -> None:
            peer = _peer_of(stream)
            if peer is None:
                await _ignore_errors(stream.reset)
                return
            await self._handle_stream(peer, protocol, _StreamAdapter(stream))

        self._host.set_stream_handler(protocol, handler)

    def _libp2p_id(self, peer: PeerId) -> Any:
        from libp2p.peer.id import ID

        return ID(peer.raw)

    async def _ensure_connected(self, peer: PeerId) -> None:
        if self._host is None:
            raise TransportError("transport is not running")
        pid = self._libp2p_id(peer)
        if self._open_connections(peer):
            return
        addrs = self._addrs.get(peer) or self.addresses_of(peer)  # else what identify told libp2p
        if not addrs:
            raise PeerUnreachable(f"no known address for {peer}")
        from libp2p.peer.peerinfo import PeerInfo

        info = PeerInfo(pid, [multiaddr.Multiaddr(a) for a in addrs])
        network = self._host.get_network()
        try:
            with trio.fail_after(self._dial_timeout):
                if network.get_connections(pid):  # only closed ones: host.connect would take them as they are
                    self._host.get_peerstore().add_addrs(pid, info.addrs, 120)
                    await network.dial_peer(pid)
                else:
                    await self._host.connect(info)
        except trio.TooSlowError:
            raise PeerUnreachable(f"dialing {peer.short} at {', '.join(addrs)} timed out") from None
        except Exception as exc:
            raise PeerUnreachable(f"cannot reach {peer.short} at {', '.join(addrs)}: {exc}") from None

    async def _send_frame(self, peer: PeerId, frame: bytes) -> None:
        data = encode_varint(len(frame)) + frame
        lock = self._locks.setdefault(peer, trio.Lock())
        async with lock:
            for attempt in (1, 2):
                stream = self._out.get(peer)
                if stream is None:
                    stream = await self.open_stream(peer, MSG_PROTOCOL)
                    self._out[peer] = stream
                try:
                    await stream.write(data)
                    return
                except TransportError as exc:
                    self._out.pop(peer, None)
                    await stream.reset()
                    if attempt == 2:
                        raise PeerUnreachable(f"sending to {peer.short} failed: {exc}") from None

    async def _inbound_messages(self, raw_stream: Any) -> None:
        peer = _peer_of(raw_stream)
        stream = _StreamAdapter(raw_stream)
        if peer is None:
            await stream.reset()
            return
        reader = FrameReader(stream, self.max_message)
        try:
            while (frame := await reader.read_frame()) is not None:
                self._last_heard[peer] = trio.current_time()
                self._on_frame(peer, frame)
        except (MessageTooLarge, WireError) as exc:
            self.stats.rejected[exc.reason] += 1
            log.warning("resetting message stream from %s: %s", peer.short, exc)
            await stream.reset()
        except TransportError as exc:
            log.debug("message stream from %s ended: %s", peer.short, exc)
        except Exception:  # never let an error escape into libp2p's nursery
            log.exception("message stream from %s failed", peer.short)
            await stream.reset()

    def _on_disconnect(self, peer: PeerId) -> None:
        self._last_heard.pop(peer, None)
        self._out.pop(peer, None)
        self._unsupported.pop(peer, None)
        self._locks.pop(peer, None)
        self._peer_lost(peer)


def _refused(exc: BaseException) -> bool:
    """Did multistream negotiation fail because the peer answered ``na`` (it lacks the protocol)?"""
    from libp2p.protocol_muxer.exceptions import MultiselectClientError

    cause = exc.__cause__
    return isinstance(cause, MultiselectClientError) and str(cause).startswith("protocols not supported")


async def _ignore_errors(fn: Any, *args: Any) -> None:
    try:
        await fn(*args)
    except Exception as exc:  # closing is best effort
        log.debug("ignored error while closing: %s", exc)

