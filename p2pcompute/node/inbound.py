"""Our TCP listener for py-libp2p: an exclusive port, and bounded inbound connections.

Theory of operation
-------------------
py-libp2p 0.8.1's TCP listener sets SO_REUSEPORT, so a second daemon on the
same port binds without error and the kernel splits connections between the
two. Ours binds with ``trio.open_tcp_listeners`` (SO_REUSEADDR only): a port
in use is an ``OSError`` we turn into one clear line.

py-libp2p's swarm keeps the handler of every inbound connection (and with it
one of its ``max_connections`` inbound slots) alive until the whole swarm
stops, even after the connection closed: 512 short-lived connections lock a
daemon for good. Each handler runs here in a cancel scope, and ``InboundGate``
decides when it ends:

* when the connection closes (libp2p closes the socket, or the transport's
  notifee reports the disconnect) -> the scope is cancelled, the slot freed;
* when the Noise + yamux handshake has not finished ``handshake_timeout``
  seconds after accept (a silent socket) -> cancelled;
* when more than ``max_pending`` handshakes are under way, the oldest is
  cancelled for the newcomer (honest handshakes take milliseconds);
* when ``max_connections`` are open, the oldest unfinished handshake, else
  the established connection heard from least recently (``last_active``,
  never heard first) and older than ``grace`` seconds, is closed for the
  newcomer (as go-libp2p's connection
  manager trims); with none to close, the newcomer is refused;
* a connection beyond ``max_per_ip`` from one non-loopback IP is refused;
* handshakes cost CPU (Noise: key agreement and signatures), so each IP
  (loopback too) starts at most ``handshake_rate`` per second after a burst
  of ``handshake_burst``; a newcomer past that waits for its turn (at most
  ``handshake_wait`` seconds, and at most ``max_pending`` wait at once) or
  is refused: a crowd of throwaway identities gets a bounded share of the CPU
  instead of starving the peers already connected;
  refusals and evictions are logged at WARNING at most once a minute.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
import weakref
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

import trio

from .ratelimit import PeerRateLimiter

log = logging.getLogger(__name__)

WARN_EVERY = 60.0


@dataclass
class _Entry:
    ip: str
    since: float
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    established: bool = False
    peer: Any = None


class InboundGate:
    """Bookkeeping of inbound connections: admission, handshake deadline, release."""

    def __init__(self, max_connections: int = 512, max_per_ip: int = 16, max_pending: int = 64,
                 handshake_timeout: float = 10.0, grace: float = 10.0,
                 last_active: Callable[[Any], float] = lambda peer: -math.inf,
                 handshake_rate: float = 20.0, handshake_burst: int = 64, handshake_wait: float = 10.0) -> None:
        self.max_connections = max_connections
        self.grace = grace
        self.last_active = last_active
        self.max_per_ip = max_per_ip
        self.max_pending = max_pending
        self.handshake_timeout = handshake_timeout
        self._entries: dict[tuple[str, int], _Entry] = {}
        self._per_ip: dict[str, int] = {}
        self._warned_at = -math.inf
        self.refused = 0
        self.evicted = 0
        self._handshakes = PeerRateLimiter(handshake_rate, handshake_burst, max_wait=handshake_wait)
        self._waiting = 0  # accepted sockets waiting for their handshake's turn

    def counts(self) -> dict[str, int]:
        pending = sum(1 for e in self._entries.values() if not e.established)
        return {"inbound": len(self._entries), "pending": pending, "waiting": self._waiting,
                "refused": self.refused, "evicted": self.evicted}

    def refusal(self, ip: str) -> str | None:
        """Why a connection from ``ip`` is refused now, or None to admit it (maybe closing an idle one)."""
        if not _is_loopback(ip) and self._per_ip.get(ip, 0) >= self.max_per_ip:
            return f"{self.max_per_ip} connections from {ip} (max_connections_per_ip)"
        live = [e for e in self._entries.values() if not e.scope.cancel_called]
        if len(live) >= self.max_connections and not self._make_room(live):
            return f"{len(live)} inbound connections, none idle (max_connections)"
        return None

    def _make_room(self, live: list[_Entry]) -> bool:
        now = trio.current_time()
        pending = [e for e in live if not e.established]
        idle = [e for e in live if e.established and now - e.since >= self.grace]
        if pending:  # the oldest unfinished handshake (honest ones take milliseconds)
            victim = pending[0]
        elif idle:
            victim = min(idle, key=lambda e: self._activity(e.peer))
        else:
            return False
        victim.scope.cancel()
        self.evicted += 1
        self._warn(f"{len(live)} inbound connections (max_connections): closing the least active ones for newcomers")
        return True

    def _activity(self, peer: Any) -> float:
        try:
            return float(self.last_active(peer))
        except Exception:
            return -math.inf

    async def serve(self, stream: trio.SocketStream, handler: Any) -> None:
        """Run libp2p's ``handler`` for one accepted socket, bounded as above."""
        try:
            ip, port = stream.socket.getpeername()[:2]
        except OSError:
            return
        wait = self._handshakes.reserve(ip, trio.current_time())
        if wait is None or (wait > 0 and self._waiting >= self.max_pending):
            self.refused += 1
            self._warn(f"refusing inbound connections: {ip} starts handshakes faster than "
                       f"{self._handshakes.rate:g}/s")
            return  # trio closes the socket
        if wait > 0:
            self._waiting += 1
            try:
                await trio.sleep(wait)
            finally:
                self._waiting -= 1
        reason = self.refusal(ip)
        if reason is not None:
            self.refused += 1
            self._warn(f"refusing inbound connections: {reason}")
            return  # trio closes the socket
        key = (ip, port)
        entry = _Entry(ip, trio.current_time())
        entry.scope.deadline = trio.current_time() + self.handshake_timeout
        self._entries[key] = entry
        self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        self._evict_pending()
        try:
            with entry.scope:
                await handler(_closing_stream_type()(stream, entry.scope))
        finally:
            self._entries.pop(key, None)
            left = self._per_ip.get(ip, 1) - 1
            if left > 0:
                self._per_ip[ip] = left
            else:
                self._per_ip.pop(ip, None)

    def established(self, remote: tuple[str, int] | None, peer: Any = None) -> None:
        """The handshake of the connection from ``remote`` finished: no deadline any more."""
        entry = self._entries.get(_key(remote))
        if entry is not None:
            entry.established, entry.peer = True, peer
            entry.scope.deadline = math.inf

    def closed(self, remote: tuple[str, int] | None) -> None:
        entry = self._entries.get(_key(remote))
        if entry is not None:
            entry.scope.cancel()

    def _evict_pending(self) -> None:
        pending = [e for e in self._entries.values() if not e.established and not e.scope.cancel_called]
        for entry in pending[: max(0, len(pending) - self.max_pending)]:  # oldest first (insertion order)
            entry.scope.cancel()
            self.evicted += 1
            self._warn(f"more than {self.max_pending} inbound handshakes at once; closing the oldest")

    def _warn(self, text: str) -> None:
        now = trio.current_time()
        if now - self._warned_at >= WARN_EVERY:
            self._warned_at = now
            log.warning("%s (logged at most once a minute)", text)


@functools.cache
def _closing_stream_type() -> type:
    from libp2p.io.trio import TrioTCPStream

    class ClosingStream(TrioTCPStream):
        """libp2p's socket stream; libp2p closing it also ends the handler that holds the slot."""

        def __init__(self, stream: trio.SocketStream, scope: trio.CancelScope) -> None:
            super().__init__(stream)
            self._scope = scope

        async def close(self) -> None:
            self._scope.cancel()
            await super().close()

    return ClosingStream


def _key(remote: Any) -> tuple[str, int]:
    try:
        return (str(remote[0]), int(remote[1]))
    except (TypeError, IndexError, ValueError):
        return ("", -1)


def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip.split("%")[0]).is_loopback
    except ValueError:
        return False


def make_tcp_transport(gate: InboundGate, listen_errors: list[str]) -> Any:
    """A py-libp2p TCP transport whose listeners are exclusive and go through ``gate``."""
    from libp2p.abc import IListener
    from libp2p.transport.tcp.tcp import TCP
    from libp2p.utils.multiaddr_utils import multiaddr_from_socket

    class Listener(IListener):
        def __init__(self, handler: Any) -> None:
            self.handler = handler
            self.listeners: list[trio.SocketListener] = []
            self._scope = trio.CancelScope()
            self.background_nursery: Any = None  # set by the swarm before listen()

        async def listen(self, maddr: Any) -> None:
            parts = str(maddr).split("/")
            host, port = parts[2], int(maddr.value_for_protocol("tcp"))
            try:
                self.listeners = await trio.open_tcp_listeners(port, host=host)
            except OSError as exc:
                listen_errors.append(_listen_error(host, port, exc))
                raise
            await self.background_nursery.start(self._serve)

        async def _serve(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            async def one(stream: trio.SocketStream) -> None:
                await gate.serve(stream, self.handler)

            with self._scope:
                await trio.serve_listeners(one, self.listeners, task_status=task_status)

        def get_addrs(self) -> tuple:
            return tuple(multiaddr_from_socket(lst.socket) for lst in self.listeners)

        async def close(self) -> None:
            self._scope.cancel()
            for lst in self.listeners:
                await lst.aclose()

    class ExclusiveTCP(TCP):
        """Also remembers its outbound sockets: a swarm cancelled on shutdown forgets to close them."""

        def __init__(self) -> None:
            super().__init__()
            self.dialled: weakref.WeakSet = weakref.WeakSet()

        def create_listener(self, handler_function: Any) -> Listener:
            return Listener(handler_function)

        async def dial(self, maddr: Any) -> Any:
            raw = await super().dial(maddr)
            self.dialled.add(raw)
            return raw

        async def close_dialled(self) -> None:
            for raw in list(self.dialled):
                try:
                    await raw.close()
                except Exception:  # already closed, or closing
                    pass

    return ExclusiveTCP()


def _listen_error(host: str, port: int, exc: OSError) -> str:
    import errno

    if exc.errno == errno.EADDRINUSE:
        return f"port {port} is already in use by another process"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this machine"
    if exc.errno == errno.EACCES:
        return f"no permission to listen on port {port} (ports below 1024 need root)"
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
