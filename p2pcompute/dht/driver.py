"""The trio layer under the DHT: kad streams in and out, lookups driven in real time.

Theory of operation
-------------------
Nothing here decides anything about Kademlia; it moves bytes and time for
the pure state machines (``lookup.py``, ``routing.py``, ``server.py``).

* ``KadClient.request`` sends one kad request to a peer on a stream of the
  first configured protocol id the peer speaks (ours, ``/p2pcompute/kad/1.0.0``,
  and kubo's LAN DHT, ``/ipfs/lan/kad/1.0.0``; the one a peer last used
  first, and a refusal is remembered by the transport) (``pb.frame``), reads the one reply frame
  (``FrameReader``, bounded by ``max_message``) and checks its type. The
  whole exchange runs under a deadline; every failure (no route, refused
  protocol, reset, timeout, malformed or mismatched reply) becomes one
  ``TransportError``/``WireError``, so callers report a plain failure.
  ADD_PROVIDER has no reply: the stream is closed after the write. One
  stream per query costs ~3 ms on loopback, little next to a lookup's
  round trips, and keeps a slow or lying peer from blocking other queries.
* ``KadResponder.serve`` answers one inbound stream: a loop of frames, each
  decoded and given to ``KadServer.handle``, the reply written back. Bounds:
  concurrent inbound streams, in all and per peer (beyond them new streams
  are reset), requests per stream, requests per second per peer (a token
  bucket, ``ratelimit.py``: a request waits for its token up to
  ``max_wait``, past that the stream is reset and the flood logged once),
  an idle timeout between requests and a write timeout. A frame
  that does not decode, or a request the server refuses, is logged with the
  peer and the stream is reset: the peer may open another, and nothing else
  is affected.
* ``run_lookup`` drives a ``Lookup`` (or a subclass): it sends the
  ``Query`` commands of ``lookup.next(now)`` as tasks in its own nursery,
  each bounded by the query's deadline, and feeds answers and failures back
  as they arrive, calling ``next`` again after each and at
  ``lookup.next_deadline()``. When the lookup is finished (or the caller's
  ``stop`` predicate holds) the queries still out are cancelled.
* ``AddressBook`` remembers binary multiaddrs of peers named in answers
  (bounded LRU), for answering others and for dialling.
* Peers of every libp2p key type take part (kubo's RSA ``Qm...`` too):
  Kademlia needs only an ID's bytes.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter, OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from ..errors import ConfigError, RequestTimeout, TransportError, WireError
from ..node.framing import FrameReader
from ..node.addrs import usable_for
from ..node.identity import PeerId
from ..node.transport import ProtocolNotSupported
from . import pb
from .lookup import Lookup, Query
from ..node.ratelimit import PeerRateLimiter
from .server import KadServer

log = logging.getLogger(__name__)

DEFAULT_PROTOCOL = "/p2pcompute/kad/1.0.0"
LAN_PROTOCOL = "/ipfs/lan/kad/1.0.0"  # kubo's LAN DHT
_DIALABLE = ("/tcp/",)
_UNDIALABLE = ("/p2p-circuit", "/ws", "/wss", "/tls", "/quic", "/webtransport", "/webrtc")
_REPLY_TYPES = {pb.MessageType.FIND_NODE, pb.MessageType.GET_PROVIDERS, pb.MessageType.GET_VALUE,
                pb.MessageType.PUT_VALUE, pb.MessageType.PING}


@dataclass(frozen=True)
class Limits:
    """Bounds of the kad streams (in and out)."""

    max_message: int = pb.MAX_MESSAGE
    max_inbound_streams: int = 64
    max_requests_per_stream: int = 256
    idle_timeout: float = 60.0  # between requests on an inbound stream (go-libp2p-kad-dht: 1 min)
    write_timeout: float = 10.0
    max_streams_per_peer: int = 8  # inbound streams one peer may hold open (go-libp2p-kad-dht uses one)
    request_rate: float = 50.0  # inbound requests per second per peer (token bucket) ...
    request_burst: float = 200.0  # ... with this burst (a routing-table refresh fits)
    max_wait: float = 1.0  # a request that would wait longer for its token is dropped (stream reset)


class AddressBook:
    """Binary multiaddrs of peers, newest first, for at most ``max_peers`` peers (LRU)."""

    def __init__(self, max_peers: int = 4096, max_addrs: int = 8) -> None:
        self.max_peers = max_peers
        self.max_addrs = max_addrs
        self._addrs: OrderedDict[PeerId, tuple[bytes, ...]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._addrs)

    def add(self, peer: PeerId, addrs: tuple[bytes, ...] | list[bytes]) -> bool:
        """Remember ``addrs`` (new ones first); True if something new was learned."""
        if not addrs:
            return False
        old = self._addrs.get(peer, ())
        merged = pb.kept_addrs((*addrs, *old), self.max_addrs)  # sizes bounded: answers come from peers
        self._addrs[peer] = merged
        self._addrs.move_to_end(peer)
        while len(self._addrs) > self.max_peers:
            self._addrs.popitem(last=False)
        return merged != old

    def get(self, peer: PeerId) -> tuple[bytes, ...]:
        return self._addrs.get(peer, ())


@dataclass
class _Sender:
    """The outbound stream to one peer; one request at a time on it (as go-libp2p-kad-dht does)."""

    lock: trio.Lock = field(default_factory=trio.Lock)
    stream: Any = None
    reader: FrameReader | None = None
    used: float = 0.0


class KadClient:
    """Outbound kad requests over ``transport.open_stream``: one reused stream per peer.

    Opening a stream costs several round trips of multistream negotiation
    (~4x a request on an open stream, measured on loopback), and py-libp2p
    stalls when dozens are opened at once, so each peer gets one stream,
    kept for ``idle_close`` seconds and at most ``max_streams`` peers (LRU).
    Requests to one peer are serialised on it. If a reused stream turns out
    dead (the peer closed it while idle), the request is retried once on a
    new stream. A request cancelled or timed out mid-way resets its stream,
    whose state is then unknown.
    """

    def __init__(self, transport: Any, protocols: str | tuple[str, ...], limits: Limits,
                 *, max_streams: int = 128, idle_close: float = 30.0, max_known: int = 4096) -> None:
        self.transport = transport
        self.protocols = (protocols,) if isinstance(protocols, str) else tuple(protocols)
        self.limits = limits
        self.max_streams = max_streams
        self.idle_close = idle_close
        self.max_known = max_known
        self._senders: OrderedDict[PeerId, _Sender] = OrderedDict()
        self._spoken: OrderedDict[PeerId, str] = OrderedDict()  # the protocol each peer last used (LRU)
        self.sent: Counter = Counter()  # by message type name
        self.failures: Counter = Counter()  # by reason

    async def request(self, peer: PeerId, msg: pb.KadMessage, deadline: float) -> pb.KadMessage | None:
        """Send ``msg`` to ``peer``; its reply (``None`` for ADD_PROVIDER). Raises on any failure."""
        self.sent[msg.type.name] += 1
        try:
            with trio.fail_at(deadline):
                sender = await self._sender(peer)
                async with sender.lock:
                    try:
                        return await self._exchange(peer, sender, msg)
                    finally:
                        if self._senders.get(peer) is not sender:  # evicted or forgotten meanwhile
                            await _drop(sender, reset=False)
        except trio.TooSlowError:
            self.failures["timeout"] += 1
            raise RequestTimeout(f"{peer.short} did not answer {msg.type.name} in time") from None
        except (TransportError, WireError) as exc:
            self.failures[getattr(exc, "reason", None) or type(exc).__name__] += 1
            raise

    async def _exchange(self, peer: PeerId, sender: _Sender, msg: pb.KadMessage) -> pb.KadMessage | None:
        for _attempt in (1, 2):
            fresh = sender.stream is None
            if fresh:
                sender.stream = await self._open(peer)
                sender.reader = FrameReader(sender.stream, self.limits.max_message)
            try:
                reply = await self._once(peer, sender, msg)
                sender.used = trio.current_time()
                return reply
            except TransportError:
                await _drop(sender)
                if fresh:
                    raise
            except BaseException:  # malformed reply, timeout, cancellation: the stream's state is unknown
                await _drop(sender)
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _once(self, peer: PeerId, sender: _Sender, msg: pb.KadMessage) -> pb.KadMessage | None:
        frame = pb.frame(msg)
        await sender.stream.write(frame)
        count_frame(self.transport, sent=len(frame))
        if msg.type not in _REPLY_TYPES:
            return None
        data = await sender.reader.read_frame()
        if data is None:
            raise TransportError(f"{peer.short} closed the kad stream without answering {msg.type.name}")
        count_frame(self.transport, received=framed_size(data))
        reply = pb.decode(data, max_size=self.limits.max_message)
        if reply.type is not msg.type:
            raise WireError(f"{peer.short} answered {msg.type.name} with {reply.type.name}")
        return reply

    def spoken(self, peer: PeerId, protocol: str) -> None:
        """``peer`` used ``protocol`` (it sent us a request on it): ask it in that one first."""
        if protocol in self.protocols:
            self._spoken[peer] = protocol
            self._spoken.move_to_end(peer)
            while len(self._spoken) > self.max_known:
                self._spoken.popitem(last=False)

    def protocol_of(self, peer: PeerId) -> str | None:
        return self._spoken.get(peer)

    async def _open(self, peer: PeerId) -> Any:
        """A stream in the first of our protocols the peer speaks (the one it spoke last tried first)."""
        known = self._spoken.get(peer)
        order = ([known] if known else []) + [p for p in self.protocols if p != known]
        for protocol in order:
            try:
                stream = await self.transport.open_stream(peer, protocol)
            except ProtocolNotSupported:
                continue  # the transport remembers the refusal: trying it again costs nothing
            self.spoken(peer, protocol)
            return stream
        raise ProtocolNotSupported(f"{peer.short} speaks none of {', '.join(self.protocols)}")

    async def _sender(self, peer: PeerId) -> _Sender:
        sender = self._senders.get(peer)
        if sender is None:
            sender = self._senders[peer] = _Sender()
            while len(self._senders) > self.max_streams:
                _old, evicted = self._senders.popitem(last=False)
                if not evicted.lock.locked():  # a busy one is closed by its user (see request)
                    await _drop(evicted, reset=False)
        self._senders.move_to_end(peer)
        return sender

    def forget(self, peer: PeerId) -> None:
        """The connection to ``peer`` closed, and its stream with it."""
        sender = self._senders.pop(peer, None)
        if sender is not None and not sender.lock.locked():
            sender.stream = sender.reader = None

    async def close_idle(self, now: float) -> None:
        for peer, sender in list(self._senders.items()):
            if not sender.lock.locked() and now - sender.used > self.idle_close:
                del self._senders[peer]
                await _drop(sender, reset=False)


async def _drop(sender: _Sender, reset: bool = True) -> None:
    stream, sender.stream, sender.reader = sender.stream, None, None
    if stream is not None:
        with trio.CancelScope(shield=True), trio.move_on_after(1.0):
            await (stream.reset() if reset else stream.close())


class _RateLimited(Exception):
    """A peer's request came while its token bucket was empty for longer than ``max_wait``."""


class KadResponder:
    """Serves inbound kad streams through a ``KadServer``; bounded. See the module doc."""

    def __init__(self, server: KadServer, limits: Limits,
                 on_request: Callable[[PeerId, pb.KadMessage, str], None],
                 remote_ip: Callable[[PeerId], str | None] = lambda peer: None, transport: Any = None) -> None:
        self.server = server
        self.transport = transport  # its stats count the frames (count_frame); None: not counted
        self.limits = limits
        self._on_request = on_request  # the driver's hook (routing-table feed, counters)
        self._remote_ip = remote_ip  # where a peer's connection comes from: replies carry only addresses it can use
        self.active = 0
        self.per_peer: Counter = Counter()  # open inbound streams by peer (zero entries removed)
        self.limiter = PeerRateLimiter(limits.request_rate, limits.request_burst, max_wait=limits.max_wait)
        self._warned: OrderedDict[PeerId, None] = OrderedDict()  # peers whose flood was logged (bounded)
        self.served: Counter = Counter()  # by message type name
        self.rejected: Counter = Counter()  # by reason
        self.recent: deque[tuple[str, str]] = deque(maxlen=64)  # (peer, message type) of the last requests

    async def serve(self, peer: PeerId, stream: Any, protocol: str = DEFAULT_PROTOCOL) -> None:
        if self.active >= self.limits.max_inbound_streams or self.per_peer[peer] >= self.limits.max_streams_per_peer:
            self.rejected["busy"] += 1
            await stream.reset()
            return
        self.active += 1
        self.per_peer[peer] += 1
        try:
            await self._serve(peer, stream, protocol)
        except _RateLimited:
            self.rejected["rate_limited"] += 1
            self._warn_once(peer)
            await stream.reset()
        except (WireError, TransportError) as exc:
            reason = getattr(exc, "reason", "transport")
            self.rejected[reason] += 1
            log.info("kad stream from %s dropped: %s", peer.short, exc)
            await stream.reset()
        finally:
            self.active -= 1
            self.per_peer[peer] -= 1
            if self.per_peer[peer] <= 0:
                del self.per_peer[peer]

    def _warn_once(self, peer: PeerId) -> None:
        if peer in self._warned:
            return
        self._warned[peer] = None
        while len(self._warned) > 1024:
            self._warned.popitem(last=False)
        log.warning("%s sends kad requests faster than %g/s: dropping its excess streams",
                    peer.short, self.limits.request_rate)

    async def _serve(self, peer: PeerId, stream: Any, protocol: str) -> None:
        reader = FrameReader(stream, self.limits.max_message)
        for _ in range(self.limits.max_requests_per_stream):
            with trio.move_on_after(self.limits.idle_timeout) as idle:
                data = await reader.read_frame()
            if idle.cancelled_caught or data is None:
                break
            count_frame(self.transport, received=framed_size(data))
            wait = self.limiter.reserve(peer, trio.current_time())
            if wait is None:
                raise _RateLimited()
            if wait > 0:
                await trio.sleep(wait)
            msg = pb.decode(data, max_size=self.limits.max_message)
            reply = self.server.handle(peer, msg, trio.current_time())
            self.served[msg.type.name] += 1
            self.recent.append((str(peer), msg.type.name))
            self._on_request(peer, msg, protocol)
            if reply is not None:
                reply = reply_for(reply, self._remote_ip(peer))
                frame = pb.frame(reply)
                with trio.fail_after(self.limits.write_timeout):
                    await stream.write(frame)
                count_frame(self.transport, sent=len(frame))
        await stream.close()


def framed_size(body: bytes) -> int:
    """A kad frame's bytes on the stream: its body and the varint length before it."""
    return len(pb.encode_varint(len(body))) + len(body)


def count_frame(transport: Any, sent: int = 0, received: int = 0) -> None:
    """A kad frame in the transport's per-protocol counters (protocol ``dht``), when it keeps them."""
    stats = getattr(transport, "stats", None)
    if stats is not None and hasattr(stats, "count_stream"):
        stats.count_stream("dht", sent, received)


def reply_for(reply: pb.KadMessage, remote: str | None) -> pb.KadMessage:
    """``reply`` with only the peer addresses usable by a requester at ``remote`` (no loopback off-host).

    Addresses we cannot parse are dropped too: we would not dial them either.
    """
    if not reply.closer_peers and not reply.provider_peers:
        return reply

    def usable(peer: pb.KadPeer) -> pb.KadPeer:
        keep = set(usable_for(pb.peer_addrs(peer), remote))
        addrs = tuple(raw for raw in peer.addrs if _text_or_none(raw) in keep)
        return peer if addrs == peer.addrs else dataclasses.replace(peer, addrs=addrs)

    return dataclasses.replace(reply, closer_peers=tuple(map(usable, reply.closer_peers)),
                               provider_peers=tuple(map(usable, reply.provider_peers)))


def _text_or_none(raw: bytes) -> str | None:
    try:
        return pb.addr_from_bytes(raw)
    except WireError:
        return None


QueryFn = Callable[[PeerId, float], Awaitable[pb.KadMessage | None]]


async def run_lookup(
    lookup: Lookup,
    query: QueryFn,
    on_reply: Callable[[PeerId, pb.KadMessage, float], None],
    on_failure: Callable[[PeerId, float], None],
    stop: Callable[[], bool] = lambda: False,
) -> None:
    """Drive ``lookup`` to its end. ``query(peer, deadline)`` does one request.

    ``on_reply(peer, reply, now)`` must feed the lookup (``on_response``) and
    anything else that learns from answers; ``on_failure(peer, now)`` gets
    every failed query (the lookup has already been told).
    """
    in_flight_cap = max(1, lookup.k * len(lookup.queried_by_path()))
    send, receive = trio.open_memory_channel(in_flight_cap)
    async with trio.open_nursery() as nursery:
        while True:
            now = trio.current_time()
            for cmd in lookup.next(now):
                nursery.start_soon(_one_query, query, cmd, send)
            if lookup.finished or stop():
                break
            with trio.move_on_at(max(lookup.next_deadline(), now + 1e-3)):
                peer, reply = await receive.receive()
                now = trio.current_time()
                if reply is None:
                    lookup.on_failure(peer, now)
                    on_failure(peer, now)
                else:
                    on_reply(peer, reply, now)
        nursery.cancel_scope.cancel()


async def _one_query(query: QueryFn, cmd: Query, send: trio.MemorySendChannel) -> None:
    try:
        reply = await query(cmd.peer, cmd.deadline)
    except (TransportError, WireError) as exc:
        log.debug("kad query to %s failed: %s", cmd.peer.short, exc)
        reply = None
    await send.send((cmd.peer, reply))


def closer_of(reply: pb.KadMessage) -> list[tuple[PeerId, tuple[bytes, ...]]]:
    """The peers an answer names, with their addresses (unreadable peer IDs are skipped)."""
    return _entries(reply.closer_peers)


def providers_of(reply: pb.KadMessage) -> list[tuple[PeerId, tuple[bytes, ...]]]:
    return _entries(reply.provider_peers)


def _entries(entries: tuple[pb.KadPeer, ...]) -> list[tuple[PeerId, tuple[bytes, ...]]]:
    out = []
    for entry in entries:
        peer = pb.peer_id_of(entry)
        if peer is not None:
            out.append((peer, entry.addrs))
    return out


# --- keys and addresses -------------------------------------------------------


def content_key(text: str) -> bytes:
    """The bytes a kad message carries for a user-given key (see ``dht provide --help``).

    A CID (``Qm...``, ``bafy...``) maps to its multihash, as kubo does, so
    provider records interoperate; any other text maps to its UTF-8 bytes.
    The 256-bit Kademlia key is the SHA-256 of those bytes.
    """
    from ..errors import BadCid
    from ..storage.cid import Cid

    try:
        return Cid.parse(text).multihash
    except BadCid:
        return text.encode("utf-8")


def dialable(addrs: list[str]) -> list[str]:
    """TCP addresses this node can dial, without a trailing ``/p2p/ID``."""
    out = []
    for a in addrs:
        a = a.split("/p2p/")[0]
        if any(t in a for t in _DIALABLE) and not any(t in a for t in _UNDIALABLE):
            out.append(a)
    return out


def addrs_to_binary(addrs: Any) -> tuple[bytes, ...]:
    out = []
    for a in dialable(list(addrs)):
        try:
            out.append(pb.addr_to_bytes(a))
        except ConfigError:
            continue
    return tuple(out)


def addrs_to_text(addrs: tuple[bytes, ...]) -> list[str]:
    return pb.peer_addrs(pb.KadPeer(b"", tuple(addrs)))
