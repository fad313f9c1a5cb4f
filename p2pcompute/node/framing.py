"""Length-prefixed frames on a byte stream, and the ``Stream`` protocols use.

A frame is an unsigned LEB128 varint (the multiformats varint, as libp2p
uses) giving the length, then that many bytes. A length over the limit is a
``MessageTooLarge``: the reader cannot resynchronise after it, so the caller
resets the stream.
"""

from __future__ import annotations

from typing import Protocol

from ..errors import MessageTooLarge, WireError

_MAX_VARINT_BYTES = 9  # enough for 2**63


class Stream(Protocol):
    """A reliable, ordered byte stream to one peer (libp2p or memnet)."""

    async def read(self, max_bytes: int = 65536) -> bytes:
        """Up to ``max_bytes``; ``b""`` at end of stream."""
        ...

    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None:
        """Finish writing; the other side reads EOF."""
        ...

    async def reset(self) -> None:
        """Abort both directions."""
        ...


def encode_varint(n: int) -> bytes:
    if n < 0:
        raise ValueError("varint must be non-negative")
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def frame(data: bytes) -> bytes:
    return encode_varint(len(data)) + data


class FrameReader:
    """Reads frames from a ``Stream``, buffering what arrives past a frame."""

    def __init__(self, stream: Stream, max_size: int) -> None:
        self._stream = stream
        self._max = max_size
        self._buf = bytearray()

    async def _fill(self) -> bool:
        chunk = await self._stream.read(65536)
        if not chunk:
            return False
        self._buf += chunk
        return True

    async def read_frame(self) -> bytes | None:
        """The next frame, or ``None`` at a clean end of stream."""
        length = 0
        shift = 0
        pos = 0
        while True:
            if pos >= len(self._buf):
                if not await self._fill():
                    if pos == 0 and not self._buf:
                        return None
                    raise WireError("stream ended inside a frame length")
                continue
            byte = self._buf[pos]
            length |= (byte & 0x7F) << shift
            pos += 1
            if not byte & 0x80:
                break
            shift += 7
            if pos >= _MAX_VARINT_BYTES:
                raise WireError("frame length varint is too long")
        if length > self._max:
            raise MessageTooLarge(f"peer announced a {length}-byte frame, over the {self._max}-byte limit")
        while len(self._buf) - pos < length:
            if not await self._fill():
                raise WireError("stream ended inside a frame")
        data = bytes(self._buf[pos : pos + length])
        del self._buf[: pos + length]
        return data
