"""The Transport interface that every protocol talks to, and its shared machinery.

Protocols see only this: ``send`` a one-way message, ``request`` with a
timeout, ``open_stream`` for bulk bytes, handlers for what arrives, and who is
connected, all by peer ID. Two implementations move the bytes:
``node/libp2p_transport.py`` (TCP + Noise + yamux) and
``simulations/memnet.py`` (in-memory, virtual time).

Theory of operation
-------------------
An implementation only has to move frames: ``_send_frame(peer, bytes)`` out,
and call ``_on_frame(peer, bytes)`` for every frame that arrives from a peer
whose identity it authenticated (Noise does this on libp2p). Everything else
is here, once, for both:

* encoding, signing types registered ``signed=True``, size limits;
* request ids and the table of pending requests; a reply resolves its
  request, a timeout raises ``RequestTimeout``, a lost connection raises
  ``PeerDisconnected`` at once (``_peer_lost``), so nobody waits forever;
* dispatch of arriving requests and messages to handlers in tasks of the
  transport's nursery, bounded by ``max_handlers`` (beyond it requests are
  answered ``busy`` and messages are dropped);
* error handling: undecodable frames, bad signatures, a signed frame whose
  signer is not the sending peer, unknown request types and handler crashes
  are counted and logged with the peer and request id, answered with an
  ``ErrorReply`` where a reply is owed, and never propagate.
"""

from __future__ import annotations

import itertools
import logging
import math
from abc import ABC, abstractmethod
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio

from ..errors import (
    MessageTooLarge,
    PeerDisconnected,
    PeerUnreachable,
    RemoteError,
    RequestTimeout,
    TransportError,
    UserError,
    WireError,
)
from . import wire
from .framing import Stream
from .identity import Identity, PeerId
from .messages import ErrorReply
from .wire import Kind

log = logging.getLogger(__name__)

M = TypeVar("M")
RequestHandler = Callable[[PeerId, Any], Awaitable[Any]]
MessageHandler = Callable[[PeerId, Any], Awaitable[None]]
StreamHandler = Callable[[PeerId, Stream], Awaitable[None]]
PeerListener = Callable[[PeerId, bool], None]

DEFAULT_TIMEOUT = 10.0
BAD_FRAME_LOG_EVERY = 60.0  # seconds between WARNING lines about one peer's bad frames


class ProtocolNotSupported(PeerUnreachable):
    """The peer is connected but does not speak the protocol asked for (e.g. a kubo asked ours).

    Normal, not an error: a caller may try another protocol or leave the peer alone.
    """


@dataclass
class TransportStats:
    """Plain counters; ``node/metrics.py`` exports them to Prometheus on scrape."""

    sent: Counter = field(default_factory=Counter)  # by message type name
    received: Counter = field(default_factory=Counter)
    bytes_sent: int = 0
    bytes_received: int = 0
    # by protocol (wire.protocol_of: node, membership, scheduler; "invalid": a frame that did not decode;
    # "dht": kad messages on their own streams, count_stream)
    protocol_sent: Counter = field(default_factory=Counter)           # messages
    protocol_received: Counter = field(default_factory=Counter)
    protocol_bytes_sent: Counter = field(default_factory=Counter)     # frame bytes; they sum to bytes_sent
    protocol_bytes_received: Counter = field(default_factory=Counter)

    def count_sent(self, msg: Any, size: int) -> None:
        """One frame of ``size`` bytes carrying ``msg`` went out."""
        protocol = wire.spec_of(msg).protocol
        self.sent[type(msg).__name__] += 1
        self.bytes_sent += size
        self.protocol_sent[protocol] += 1
        self.protocol_bytes_sent[protocol] += size

    def count_received(self, msg: Any, size: int) -> None:
        """One frame of ``size`` bytes carrying ``msg`` came in (``None``: it did not decode)."""
        self.bytes_received += size
        protocol = "invalid" if msg is None else wire.spec_of(msg).protocol
        self.protocol_bytes_received[protocol] += size
        if msg is not None:
            self.received[type(msg).__name__] += 1
            self.protocol_received[protocol] += 1
    def count_stream(self, protocol: str, sent: int = 0, received: int = 0) -> None:
        """One frame of a protocol with its own libp2p streams (the DHT's kad messages) went out (``sent``
        bytes) or came in (``received``): counted by protocol and in the byte totals, as the wire's frames."""
        if sent:
            self.bytes_sent += sent
            self.protocol_sent[protocol] += 1
            self.protocol_bytes_sent[protocol] += sent
        if received:
            self.bytes_received += received
            self.protocol_received[protocol] += 1
            self.protocol_bytes_received[protocol] += received

    rejected: Counter = field(default_factory=Counter)  # by WireError.reason
    request_failures: Counter = field(default_factory=Counter)  # timeout / disconnected / remote
    busy_drops: int = 0
    request_seconds: list[float] = field(default_factory=list, repr=False)  # bounded sample


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass
class _Pending:
    peer: PeerId
    done: trio.Event = field(default_factory=trio.Event)
    reply: Any = None
    error: Exception | None = None


class Transport(ABC):
    """Message and stream transport to peers named by ``PeerId``."""

    def __init__(
        self,
        identity: Identity,
        *,
        max_message: int = wire.DEFAULT_MAX_MESSAGE,
        max_handlers: int = 256,
        max_pending: int = 4096,
        default_timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.identity = identity
        self.local_id = identity.peer_id
        self.max_message = max_message
        self.default_timeout = default_timeout
        self.stats = TransportStats()
        self._request_handlers: dict[type, RequestHandler] = {}
        self._message_handlers: dict[type, MessageHandler] = {}
        self._stream_handlers: dict[str, StreamHandler] = {}
        self._peer_listeners: list[PeerListener] = []
        self._pending: dict[int, _Pending] = {}
        self._max_pending = max_pending
        self._ids = itertools.count(1)
        self._max_handlers = max_handlers
        self._active_handlers = 0
        self._nursery: trio.Nursery | None = None
        self._warned: OrderedDict[PeerId, float] = OrderedDict()  # peer -> when its bad frames were last logged

    # --- what protocols use ---------------------------------------------------

    def on_request(self, msg_type: type[M], handler: Callable[[PeerId, M], Awaitable[Any]]) -> None:
        """``handler(peer, msg)`` returns the reply message for requests of ``msg_type``."""
        self._request_handlers[msg_type] = handler

    def on_message(self, msg_type: type[M], handler: Callable[[PeerId, M], Awaitable[None]]) -> None:
        self._message_handlers[msg_type] = handler

    def on_stream(self, protocol: str, handler: StreamHandler) -> None:
        """``handler(peer, stream)`` serves streams opened to us for ``protocol``."""
        self._stream_handlers[protocol] = handler
        self._register_stream_protocol(protocol)

    def on_peer_event(self, listener: PeerListener) -> None:
        """``listener(peer, connected)`` is called when a connection opens or is lost."""
        self._peer_listeners.append(listener)

    async def send(self, peer: PeerId, msg: Any) -> None:
        """Send a one-way message. Raises ``TransportError`` if it cannot be sent."""
        frame = self._encode(msg, Kind.MESSAGE, 0)
        await self._send_frame(peer, frame)
        self._count_sent(msg, frame)

    async def request(self, peer: PeerId, msg: Any, timeout: float | None = None) -> Any:
        """Send ``msg`` and wait for the reply message.

        Raises ``RequestTimeout``, ``PeerDisconnected``, ``RemoteError`` (the
        peer answered with an error) or ``PeerUnreachable``.
        """
        timeout = self.default_timeout if timeout is None else timeout
        if len(self._pending) >= self._max_pending:
            raise TransportError(f"{len(self._pending)} requests already pending; refusing more")
        request_id = next(self._ids)
        frame = self._encode(msg, Kind.REQUEST, request_id)
        pending = _Pending(peer)
        self._pending[request_id] = pending
        started = trio.current_time()
        try:
            with trio.move_on_after(timeout):
                await self._send_frame(peer, frame)
                self._count_sent(msg, frame)
                await pending.done.wait()
            if not pending.done.is_set():
                self.stats.request_failures["timeout"] += 1
                raise RequestTimeout(
                    f"no reply from {peer.short} to {type(msg).__name__} "
                    f"(request {request_id}) within {timeout:g} s"
                )
            if pending.error is not None:
                self.stats.request_failures[type(pending.error).__name__] += 1
                raise pending.error
            self._record_latency(trio.current_time() - started)
            return pending.reply
        finally:
            self._pending.pop(request_id, None)

    @abstractmethod
    async def open_stream(self, peer: PeerId, protocol: str) -> Stream:
        """Open a new byte stream to ``peer`` for ``protocol``."""

    @abstractmethod
    def connected_peers(self) -> list[PeerId]:
        """Peers with an open connection now."""

    @abstractmethod
    async def connect(self, address: str) -> PeerId:
        """Dial ``address`` (a multiaddr ending in /p2p/ID, or a memnet peer ID)."""

    def add_addresses(self, peer: PeerId, addrs: list[str]) -> None:
        """Learn where ``peer`` listens (used to dial it later). Default: nothing to keep."""

    def addresses_of(self, peer: PeerId) -> list[str]:
        """Where ``peer`` listens, as far as this transport knows (given or learned)."""
        return []

    def listen_addresses(self) -> list[str]:
        return []

    def announce_addresses(self) -> list[str]:
        """Where others can dial us (``node/addrs.py``); default: where we listen."""
        return self.listen_addresses()

    def remote_ip(self, peer: PeerId) -> str | None:
        """The IP a connected ``peer`` reaches us from; None if unknown or not IP."""
        return None

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; ``task_status.started()`` once ready to use."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                await self._serve(nursery, task_status)
            finally:
                self._nursery = None
                self._fail_all_pending()

    # --- what implementations provide -------------------------------------------

    @abstractmethod
    async def _send_frame(self, peer: PeerId, frame: bytes) -> None:
        """Deliver one frame to ``peer``, connecting if needed; raise TransportError."""

    @abstractmethod
    async def _serve(self, nursery: trio.Nursery, task_status: Any) -> None:
        """Start listening, call ``task_status.started()``, then serve until cancelled."""

    def _register_stream_protocol(self, protocol: str) -> None:
        """Hook for implementations that must announce stream protocols."""

    # --- what implementations call ---------------------------------------------

    def _log_bad_frame(self, peer: PeerId, exc: WireError) -> None:
        """A peer's bad frames: one WARNING per peer a minute (a hostile peer cannot flood the log), the rest DEBUG."""
        now = trio.current_time()
        last = self._warned.get(peer)
        if last is not None and now - last < BAD_FRAME_LOG_EVERY:
            log.debug("dropped a frame from %s: %s", peer.short, exc)
            return
        self._warned[peer] = now
        self._warned.move_to_end(peer)
        while len(self._warned) > 1024:
            self._warned.popitem(last=False)
        log.warning("dropped a frame from %s: %s (more from this peer within a minute: at debug level; "
                    "counted in metrics)", peer.short, exc)

    def _on_frame(self, peer: PeerId, frame: bytes) -> None:
        """A frame arrived from authenticated ``peer``. Never raises."""
        try:
            env = wire.decode(frame, max_size=self.max_message)
            if env.signer is not None and env.signer != peer:
                raise WireError(f"frame signed by {env.signer.short} but sent by {peer.short}")
        except WireError as exc:
            self.stats.count_received(None, len(frame))
            self.stats.rejected[exc.reason] += 1
            self._log_bad_frame(peer, exc)
            return
        self.stats.count_received(env.message, len(frame))
        try:
            if env.kind in (Kind.REPLY, Kind.ERROR):
                self._resolve(peer, env)
            elif env.kind is Kind.REQUEST:
                self._spawn_handler(self._serve_request, peer, env, busy_reply=True)
            else:
                self._spawn_handler(self._serve_message, peer, env, busy_reply=False)
        except Exception:  # a bug here must not take the node down
            log.exception("dispatching %s (request %d) from %s failed", env.type_name, env.request_id, peer.short)

    def _peer_lost(self, peer: PeerId) -> None:
        """The connection to ``peer`` closed: fail its pending requests now."""
        for pending in self._pending.values():
            if pending.peer == peer and not pending.done.is_set():
                pending.error = PeerDisconnected(f"connection to {peer.short} closed before it replied")
                pending.done.set()
        self._notify(peer, False)

    def _peer_connected(self, peer: PeerId) -> None:
        self._notify(peer, True)

    async def _handle_stream(self, peer: PeerId, protocol: str, stream: Stream) -> None:
        handler = self._stream_handlers.get(protocol)
        if handler is None:
            await stream.reset()
            return
        try:
            await handler(peer, stream)
        except Exception:
            log.exception("stream handler for %s from %s failed", protocol, peer.short)
            await _quietly(stream.reset())

    # --- internals -----------------------------------------------------------

    def _encode(self, msg: Any, kind: Kind, request_id: int) -> bytes:
        signer = self.identity if wire.spec_of(msg).signed else None
        return wire.encode(msg, kind=kind, request_id=request_id, identity=signer, max_size=self.max_message)

    def _count_sent(self, msg: Any, frame: bytes) -> None:
        self.stats.count_sent(msg, len(frame))

    def _record_latency(self, seconds: float) -> None:
        sample = self.stats.request_seconds
        sample.append(seconds)
        if len(sample) > 2048:
            del sample[:1024]

    def _notify(self, peer: PeerId, connected: bool) -> None:
        for listener in self._peer_listeners:
            try:
                listener(peer, connected)
            except Exception:
                log.exception("peer listener failed")

    def _resolve(self, peer: PeerId, env: wire.Envelope) -> None:
        pending = self._pending.get(env.request_id)
        if pending is None or pending.peer != peer or pending.done.is_set():
            log.debug("late or unexpected reply %d from %s", env.request_id, peer.short)
            return
        if env.kind is Kind.ERROR:
            err = env.message
            if isinstance(err, ErrorReply):
                pending.error = RemoteError(err.code, err.message)
            else:
                pending.error = RemoteError("bad_reply", f"error reply carried a {env.type_name}")
        else:
            pending.reply = env.message
        pending.done.set()

    def _spawn_handler(self, fn: Callable, peer: PeerId, env: wire.Envelope, *, busy_reply: bool) -> None:
        if self._nursery is None:
            return
        if self._active_handlers >= self._max_handlers:
            self.stats.busy_drops += 1
            log.warning("too busy for %s from %s", env.type_name, peer.short)
            if busy_reply:
                self._nursery.start_soon(
                    self._reply, peer, env.request_id, ErrorReply("busy", "too many requests in progress"), Kind.ERROR
                )
            return
        self._active_handlers += 1
        self._nursery.start_soon(self._run_handler, fn, peer, env)

    async def _run_handler(self, fn: Callable, peer: PeerId, env: wire.Envelope) -> None:
        try:
            await fn(peer, env)
        finally:
            self._active_handlers -= 1

    async def _serve_message(self, peer: PeerId, env: wire.Envelope) -> None:
        handler = self._message_handlers.get(type(env.message))
        if handler is None:
            log.debug("no handler for message %s from %s", env.type_name, peer.short)
            return
        try:
            await handler(peer, env.message)
        except Exception:
            log.exception("handler for %s from %s failed", env.type_name, peer.short)

    async def _serve_request(self, peer: PeerId, env: wire.Envelope) -> None:
        handler = self._request_handlers.get(type(env.message))
        if handler is None:
            reply: Any = ErrorReply("unknown_request", f"this peer does not serve {env.type_name}")
        else:
            try:
                reply = await handler(peer, env.message)
            except (WireError, UserError) as exc:
                reply = ErrorReply("bad_request", str(exc))
            except Exception as exc:
                log.exception("handler for %s (request %d) from %s failed", env.type_name, env.request_id, peer.short)
                reply = ErrorReply("internal", f"{type(exc).__name__}: {exc}")
        kind = Kind.ERROR if isinstance(reply, ErrorReply) else Kind.REPLY
        await self._reply(peer, env.request_id, reply, kind)

    async def _reply(self, peer: PeerId, request_id: int, reply: Any, kind: Kind) -> None:
        try:
            frame = self._encode(reply, kind, request_id)
        except MessageTooLarge as exc:
            reply, kind = ErrorReply("too_large", str(exc)), Kind.ERROR
            frame = self._encode(reply, kind, request_id)
        try:
            await self._send_frame(peer, frame)
            self._count_sent(reply, frame)
        except TransportError as exc:
            log.info("could not reply to request %d from %s: %s", request_id, peer.short, exc)

    def _fail_all_pending(self) -> None:
        for pending in self._pending.values():
            if not pending.done.is_set():
                pending.error = PeerDisconnected("transport stopped")
                pending.done.set()


async def _quietly(awaitable: Awaitable[Any]) -> None:
    try:
        await awaitable
    except Exception:
        pass
