"""Byte streams over the in-memory network: ordered, reliable, flow-controlled.

Theory of operation
-------------------
A stream is a pair of ``MemStream`` ends, one in each peer's transport. Every
event between the ends (open, ack, data, end of stream, credit, reset) travels
as an item on the network's delivery heap along the directed link between the
two peers (``MemNetwork._stream_event``), so it pays that link's latency and,
for data, its bandwidth, and stays in order with everything else on the link.

* **Opening** sends ``OPEN`` and waits for ``ACK``; the receiving transport
  acks when it serves the protocol (and then runs the handler through the
  base's ``_handle_stream`` in its nursery), or answers ``RESET`` when it does
  not or has too many streams. No answer within the opener's
  ``default_timeout`` is ``PeerUnreachable``.
* **Flow control** is TCP-like credit. A writer may have at most ``window``
  bytes that the reader has not consumed; it waits when it has none left. The
  reader returns credit as it reads, and the credit travels back with
  latency. So a receiver buffers at most ``window`` bytes.
* **Reliability.** Loss does not apply to streams (TCP retransmits). What a
  connection would not survive resets the stream: a crashed or stopped end
  (``MemNetwork._disconnect``: that side at once, the other side one latency
  later unless the crash is silent, when it just hears nothing more) and an
  event crossing a partition (both ends at once). A reset discards unread data;
  reads and writes then raise ``TransportError``.

Ends are registered in their transport's ``_streams`` while in use (bounded by
``max_streams``) so that a crash can find them; an end leaves the registry once
it is reset or both directions have finished.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from ..errors import PeerUnreachable, TransportError
from ..node.identity import PeerId

if TYPE_CHECKING:
    from .memnet import MemNetwork, MemTransport

# event kinds carried on the heap
OPEN, ACK, DATA, EOF, CREDIT, RESET = range(6)

CHUNK = 64 * 1024  # largest data event; a write is cut into pieces of at most this


class MemStream:
    """One end of an in-memory stream (satisfies ``node.framing.Stream``)."""

    def __init__(
        self, network: MemNetwork, owner: MemTransport, peer: PeerId, protocol: str, window: int, stream_id: int
    ) -> None:
        self.peer = peer
        self.protocol = protocol
        self.id = stream_id
        self._net = network
        self._owner = owner
        self._other: MemStream | None = None
        self._buf = bytearray()
        self._eof = False  # the other side closed its writing half (all its data has arrived)
        self._write_closed = False
        self._error: TransportError | None = None
        self._credit = window
        self._reading = False
        self._writing = False
        self._readable = trio.Event()
        self._writable = trio.Event()
        self._opened = trio.Event()

    def __repr__(self) -> str:
        return f"MemStream({self.protocol}, {self._owner.local_id.short} -> {self.peer.short})"

    # --- the Stream protocol -----------------------------------------------------

    async def read(self, max_bytes: int = 65536) -> bytes:
        """Up to ``max_bytes``; ``b""`` once the other side closed and all data was read."""
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        await trio.lowlevel.checkpoint_if_cancelled()
        waited = False
        while True:
            if self._error is not None:
                raise self._error
            if self._buf:
                break
            if self._eof:
                self._unregister_if_done()
                await trio.lowlevel.cancel_shielded_checkpoint()
                return b""
            if self._reading:
                raise trio.BusyResourceError("another task is already reading this stream")
            self._reading = True
            try:
                self._readable = trio.Event()
                await self._readable.wait()
            finally:
                self._reading = False
            waited = True
        data = bytes(self._buf[:max_bytes])
        del self._buf[:max_bytes]
        other = self._other
        if other is not None and not other._write_closed:
            self._net._stream_event(self, CREDIT, len(data))
        if not waited:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return data

    async def write(self, data: bytes) -> None:
        """Send all of ``data``, waiting while the receiver's buffer is full."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._writing:
            raise trio.BusyResourceError("another task is already writing this stream")
        self._writing = True
        try:
            view = memoryview(data)
            pos, total = 0, len(view)
            while True:
                if self._error is not None:
                    raise self._error
                if self._write_closed:
                    raise TransportError("write on a stream already closed for writing")
                if pos >= total:
                    break
                if self._credit <= 0:
                    self._writable = trio.Event()
                    await self._writable.wait()
                    continue
                n = min(self._credit, total - pos, CHUNK)
                self._credit -= n
                self._net._stream_event(self, DATA, bytes(view[pos : pos + n]))
                pos += n
        finally:
            self._writing = False
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def close(self) -> None:
        """Finish writing; the other side reads EOF after the data already sent."""
        if self._error is None and not self._write_closed:
            self._write_closed = True
            self._net._stream_event(self, EOF, None)
            self._unregister_if_done()
        await trio.lowlevel.checkpoint()

    async def reset(self) -> None:
        """Abort both directions; the other side's reads and writes raise."""
        if self._error is None:
            self._fail(TransportError(f"stream {self.protocol} to {self.peer.short} was reset by this side"))
            self._net._stream_event(self, RESET, None)
        await trio.lowlevel.checkpoint()

    # --- events from the network ---------------------------------------------------

    def _on_event(self, kind: int, payload: Any) -> None:
        if kind == DATA:
            if self._error is None and not self._eof:
                self._buf += payload
                self._readable.set()
        elif kind == CREDIT:
            self._credit += payload
            self._writable.set()
        elif kind == EOF:
            self._eof = True
            self._readable.set()
        elif kind == ACK:
            self._opened.set()
        elif kind == RESET:
            self._fail(TransportError(f"stream {self.protocol} was reset by {self.peer.short}"))

    def _fail(self, exc: TransportError) -> None:
        if self._error is None:
            self._error = exc
            self._buf.clear()
            self._readable.set()
            self._writable.set()
            self._opened.set()
        self._owner._streams.pop(self.id, None)

    def _unregister_if_done(self) -> None:
        if self._write_closed and self._eof and not self._buf:
            self._owner._streams.pop(self.id, None)


# --- opening and accepting -----------------------------------------------------------


async def open_stream(net: MemNetwork, src: MemTransport, dst_id: PeerId, protocol: str) -> MemStream:
    """Open a stream from ``src`` to ``dst_id``; wait for the other side to accept it."""
    if len(src._streams) >= src.max_streams:
        raise TransportError(f"{len(src._streams)} streams already open; close some first")
    await src._ensure_connected(dst_id)
    dst = net._live.get(dst_id) or net._known[dst_id]
    local = MemStream(net, src, dst_id, protocol, net.stream_window, next(net._stream_ids))
    remote = MemStream(net, dst, src.local_id, protocol, net.stream_window, next(net._stream_ids))
    local._other, remote._other = remote, local
    src._streams[local.id] = local
    net._stream_event(local, OPEN, protocol)
    with trio.move_on_after(src.default_timeout):
        await local._opened.wait()
    if not local._opened.is_set():
        local._fail(TransportError("stream open timed out"))
        raise PeerUnreachable(
            f"{dst_id.short} did not accept a {protocol} stream within {src.default_timeout:g} s"
        )
    if local._error is not None:
        raise TransportError(f"{dst_id.short} refused a {protocol} stream") from local._error
    return local


def accept_stream(net: MemNetwork, end: MemStream) -> None:
    """An ``OPEN`` arrived at ``end``: serve it in the owner's nursery, or refuse it."""
    owner = end._owner
    nursery = owner._nursery
    if (
        nursery is None
        or end.protocol not in owner._stream_handlers
        or len(owner._streams) >= owner.max_streams
    ):
        end._error = TransportError("refused")
        net._stream_event(end, RESET, None)
        return
    owner._streams[end.id] = end
    net._stream_event(end, ACK, None)
    nursery.start_soon(_serve_stream, owner, end)


async def _serve_stream(owner: MemTransport, end: MemStream) -> None:
    try:
        await owner._handle_stream(end.peer, end.protocol, end)
    finally:
        # A handler that returns without closing is done with the stream.
        if end._error is None and not end._write_closed:
            end._write_closed = True
            owner.network._stream_event(end, EOF, None)
        owner._streams.pop(end.id, None)
