"""The bitswap wire message (protocols /ipfs/bitswap/1.0.0, 1.1.0, 1.2.0), hand-written codec.

::

    message Message {
      message Wantlist {
        enum WantType { Block = 0; Have = 1; }
        message Entry { bytes block = 1; int32 priority = 2; bool cancel = 3;
                        WantType wantType = 4; bool sendDontHave = 5; }
        repeated Entry entries = 1; bool full = 2;
      }
      message Block { bytes prefix = 1; bytes data = 2; }
      enum BlockPresenceType { Have = 0; DontHave = 1; }
      message BlockPresence { bytes cid = 1; BlockPresenceType type = 2; }
      Wantlist wantlist = 1;
      repeated bytes blocks = 2;          // 1.0.0: the block bytes, CIDv0 implied
      repeated Block payload = 3;         // 1.1.0+: CID prefix + bytes
      repeated BlockPresence blockPresences = 4;
      int32 pendingBytes = 5;
    }

On a stream each message is preceded by its length as an unsigned varint
(``node/framing.py``); ``MAX_MESSAGE`` (4 MiB, as go-bitswap) bounds it.

A payload block carries no CID, only a *prefix* (CID version, codec, hash
function, digest length): the receiver hashes the bytes to learn which block
it got (``Block.cid()``), so a block that does not match what was asked for
simply arrives under another CID. Encoding writes proto3 defaults as go does
(default values omitted). Decoding takes untrusted bytes: unknown fields of a
valid wire type are skipped (forward compatibility), everything malformed —
truncation, bad varints, groups, bad CIDs or prefixes, unknown enum values,
too many entries, oversized blocks — raises a ``WireError`` subclass and
nothing else escapes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ..errors import MessageTooLarge, WireError
from .cid import CODEC_NAMES, DAG_PB, SHA2_256, SHA2_512, Cid, decode_varint, encode_varint

MAX_MESSAGE = 4 * 1024 * 1024
MAX_BLOCK = 2 * 1024 * 1024  # as the blockstore and kubo
MAX_ENTRIES = 16384  # wantlist entries or presences per message
WANT_BLOCK = 0
WANT_HAVE = 1
_DIGESTS = {SHA2_256: (32, hashlib.sha256), SHA2_512: (64, hashlib.sha512)}


@dataclass(frozen=True, slots=True)
class WantEntry:
    cid: Cid
    priority: int = 1
    cancel: bool = False
    want_type: int = WANT_BLOCK
    send_dont_have: bool = False


@dataclass(frozen=True, slots=True)
class Block:
    """A block as it travels: the CID prefix and the bytes (``cid()`` hashes them)."""

    version: int
    codec: int
    mh_code: int
    data: bytes

    @classmethod
    def of(cls, cid: Cid, data: bytes) -> Block:
        return cls(cid.version, cid.codec, cid.multihash[0], data)

    def prefix(self) -> bytes:
        digest_len = _DIGESTS[self.mh_code][0]
        return b"".join(encode_varint(v) for v in (self.version, self.codec, self.mh_code, digest_len))

    def cid(self) -> Cid:
        """The CID these bytes really have, under this prefix (hashes the data)."""
        length, fn = _DIGESTS[self.mh_code]
        mh = bytes((self.mh_code, length)) + fn(self.data).digest()
        return Cid(self.version, self.codec, mh)


@dataclass(frozen=True, slots=True)
class Presence:
    cid: Cid
    have: bool  # False: DontHave


@dataclass(frozen=True, slots=True)
class Message:
    wants: tuple[WantEntry, ...] = ()
    full: bool = False
    blocks: tuple[Block, ...] = ()
    presences: tuple[Presence, ...] = ()
    pending_bytes: int = 0

    def __bool__(self) -> bool:
        return bool(self.wants or self.full or self.blocks or self.presences)


# --- encode ---------------------------------------------------------------------------


def _len_field(out: list[bytes], tag: int, payload: bytes) -> None:
    out.append(bytes((tag,)) + encode_varint(len(payload)))
    out.append(payload)


def _int32(value: int) -> bytes:
    """An int32 as protobuf writes it: negatives sign-extended to 64 bits (10 bytes)."""
    value = _as_int32(value) & 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _encode_entry(e: WantEntry) -> bytes:
    out: list[bytes] = []
    _len_field(out, 0x0A, e.cid.to_bytes())
    if e.priority:
        out.append(b"\x10" + _int32(e.priority))
    if e.cancel:
        out.append(b"\x18\x01")
    if e.want_type:
        out.append(b"\x20" + encode_varint(e.want_type))
    if e.send_dont_have:
        out.append(b"\x28\x01")
    return b"".join(out)


def encode(msg: Message) -> bytes:
    """The protobuf bytes of ``msg`` (without the length prefix). Raises MessageTooLarge."""
    out: list[bytes] = []
    if msg.wants or msg.full:
        wl: list[bytes] = []
        for e in msg.wants:
            _len_field(wl, 0x0A, _encode_entry(e))
        if msg.full:
            wl.append(b"\x10\x01")
        _len_field(out, 0x0A, b"".join(wl))
    for b in msg.blocks:
        inner: list[bytes] = []
        _len_field(inner, 0x0A, b.prefix())
        if b.data:
            _len_field(inner, 0x12, b.data)
        _len_field(out, 0x1A, b"".join(inner))
    for p in msg.presences:
        cid = p.cid.to_bytes()
        body = b"\x0a" + encode_varint(len(cid)) + cid + (b"" if p.have else b"\x10\x01")
        _len_field(out, 0x22, body)
    if msg.pending_bytes:
        out.append(b"\x28" + _int32(msg.pending_bytes))
    data = b"".join(out)
    if len(data) > MAX_MESSAGE:
        raise MessageTooLarge(f"bitswap message of {len(data)} bytes is over {MAX_MESSAGE}")
    return data


# --- decode ---------------------------------------------------------------------------


def _fields(buf: memoryview):
    """Yield (field number, wire type, value) of a protobuf message; value is int or memoryview."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = decode_varint(buf, pos, WireError)
        number, wtype = key >> 3, key & 7
        if number == 0:
            raise WireError("protobuf field number 0")
        if wtype == 0:
            value, pos = _varint(buf, pos)
        elif wtype == 2:
            length, pos = decode_varint(buf, pos, WireError)
            if length > end - pos:
                raise WireError("truncated length-delimited field")
            value, pos = buf[pos:pos + length], pos + length
        elif wtype in (1, 5):
            size = 8 if wtype == 1 else 4
            if pos + size > end:
                raise WireError("truncated fixed-size field")
            value, pos = int.from_bytes(buf[pos:pos + size], "little"), pos + size
        else:
            raise WireError(f"unsupported protobuf wire type {wtype}")
        yield number, wtype, value


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    """A protobuf varint (up to 10 bytes, non-minimal forms allowed as protobuf does)."""
    result = shift = 0
    for i in range(10):
        if pos + i >= len(buf):
            raise WireError("truncated varint")
        byte = buf[pos + i]
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result & 0xFFFFFFFFFFFFFFFF, pos + i + 1
        shift += 7
    raise WireError("varint longer than 10 bytes")


def _expect(wtype: int, want: int, what: str) -> None:
    if wtype != want:
        raise WireError(f"bitswap: {what} has wire type {wtype}, expected {want}")


def _as_int32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _cid(raw: memoryview) -> Cid:
    return Cid.decode(bytes(raw))  # raises BadCid (a WireError)


def _decode_entry(buf: memoryview) -> WantEntry:
    cid, priority, cancel, want_type, sdh = None, 0, False, WANT_BLOCK, False
    for number, wtype, value in _fields(buf):
        if number == 1:
            _expect(wtype, 2, "entry.block")
            cid = _cid(value)
        elif number == 2:
            _expect(wtype, 0, "entry.priority")
            priority = _as_int32(value)
        elif number == 3:
            _expect(wtype, 0, "entry.cancel")
            cancel = bool(value)
        elif number == 4:
            _expect(wtype, 0, "entry.wantType")
            if value not in (WANT_BLOCK, WANT_HAVE):
                raise WireError(f"bitswap: unknown want type {value}")
            want_type = value
        elif number == 5:
            _expect(wtype, 0, "entry.sendDontHave")
            sdh = bool(value)
    if cid is None:
        raise WireError("bitswap: wantlist entry without a CID")
    return WantEntry(cid, priority, cancel, want_type, sdh)


def _decode_wantlist(buf: memoryview, wants: list[WantEntry]) -> bool:
    full = False
    for number, wtype, value in _fields(buf):
        if number == 1:
            _expect(wtype, 2, "wantlist.entries")
            if len(wants) >= MAX_ENTRIES:
                raise WireError(f"bitswap: more than {MAX_ENTRIES} wantlist entries")
            wants.append(_decode_entry(value))
        elif number == 2:
            _expect(wtype, 0, "wantlist.full")
            full = bool(value)
    return full


def decode_prefix(raw: memoryview | bytes) -> tuple[int, int, int]:
    """A CID prefix -> (version, codec, hash code); only hashes we can check are accepted."""
    buf = memoryview(raw)
    version, p = decode_varint(buf, 0, WireError)
    codec, p = decode_varint(buf, p, WireError)
    mh_code, p = decode_varint(buf, p, WireError)
    length, p = decode_varint(buf, p, WireError)
    if p != len(buf):
        raise WireError("bitswap: trailing bytes after the CID prefix")
    if version not in (0, 1) or (version == 0 and (codec != DAG_PB or mh_code != SHA2_256)):
        raise WireError(f"bitswap: bad CID version {version} in a block prefix")
    if codec not in CODEC_NAMES:
        raise WireError(f"bitswap: unsupported codec 0x{codec:x} in a block prefix")
    if mh_code not in _DIGESTS or _DIGESTS[mh_code][0] != length:
        raise WireError(f"bitswap: unsupported hash 0x{mh_code:x}/{length} in a block prefix")
    return version, codec, mh_code


def _decode_block(buf: memoryview) -> Block:
    prefix, data = None, b""
    for number, wtype, value in _fields(buf):
        if number == 1:
            _expect(wtype, 2, "block.prefix")
            prefix = value
        elif number == 2:
            _expect(wtype, 2, "block.data")
            data = value
    if prefix is None:
        raise WireError("bitswap: payload block without a prefix")
    if len(data) > MAX_BLOCK:
        raise WireError(f"bitswap: block of {len(data)} bytes is over {MAX_BLOCK}")
    return Block(*decode_prefix(prefix), bytes(data))


def _decode_presence(buf: memoryview) -> Presence:
    cid, kind = None, 0
    for number, wtype, value in _fields(buf):
        if number == 1:
            _expect(wtype, 2, "presence.cid")
            cid = _cid(value)
        elif number == 2:
            _expect(wtype, 0, "presence.type")
            if value not in (0, 1):
                raise WireError(f"bitswap: unknown presence type {value}")
            kind = value
    if cid is None:
        raise WireError("bitswap: block presence without a CID")
    return Presence(cid, kind == 0)


def decode(data: bytes | memoryview) -> Message:
    """Strictly decode one bitswap message; raise a ``WireError`` subclass on anything malformed."""
    if len(data) > MAX_MESSAGE:
        raise MessageTooLarge(f"bitswap message of {len(data)} bytes is over {MAX_MESSAGE}")
    wants: list[WantEntry] = []
    blocks: list[Block] = []
    presences: list[Presence] = []
    full, pending = False, 0
    for number, wtype, value in _fields(memoryview(data)):
        if number == 1:
            _expect(wtype, 2, "wantlist")
            full = _decode_wantlist(value, wants) or full
        elif number == 2:  # 1.0.0 blocks: CIDv0 dag-pb sha2-256 implied
            _expect(wtype, 2, "blocks")
            if len(value) > MAX_BLOCK:
                raise WireError(f"bitswap: block of {len(value)} bytes is over {MAX_BLOCK}")
            blocks.append(Block(0, DAG_PB, SHA2_256, bytes(value)))
        elif number == 3:
            _expect(wtype, 2, "payload")
            blocks.append(_decode_block(value))
        elif number == 4:
            _expect(wtype, 2, "blockPresences")
            if len(presences) >= MAX_ENTRIES:
                raise WireError(f"bitswap: more than {MAX_ENTRIES} block presences")
            presences.append(_decode_presence(value))
        elif number == 5:
            _expect(wtype, 0, "pendingBytes")
            pending = _as_int32(value)
    return Message(tuple(wants), full, tuple(blocks), tuple(presences), pending)
