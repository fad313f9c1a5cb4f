"""The UnixFS ``Data`` message: what a dag-pb node's Data field means as a file system.

::

    message Data {
      enum DataType { Raw = 0; Directory = 1; File = 2; Metadata = 3; Symlink = 4; HAMTShard = 5; }
      required DataType Type = 1;   optional bytes Data = 2;      optional uint64 filesize = 3;
      repeated uint64 blocksizes = 4; optional uint64 hashType = 5; optional uint64 fanout = 6;
      optional uint32 mode = 7;     optional UnixTime mtime = 8;
    }
    message UnixTime { required int64 Seconds = 1; optional fixed32 FractionalNanoseconds = 2; }

Encoding is what kubo writes: fields in number order, each when set,
``blocksizes`` unpacked. Decoding is strict (known fields and wire types,
fields in order, singular fields at most once, minimal varints, Type in
range; ``blocksizes`` may also arrive packed, which Go accepts too) and raises
only ``BadBlock``. Negative mtime seconds (10-byte varints) are refused.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import BadBlock
from .cid import encode_varint
from .dagpb import put_len, read_len, read_varint

RAW, DIRECTORY, FILE, METADATA, SYMLINK, HAMT_SHARD = range(6)
TYPE_NAMES = ("raw", "directory", "file", "metadata", "symlink", "hamt-shard")

DIRECTORY_DATA = b"\x08\x01"  # Data{Type: Directory}, as kubo writes every plain directory


@dataclass(frozen=True, slots=True)
class UnixFSData:
    type: int
    data: bytes | None = None
    filesize: int | None = None
    blocksizes: tuple[int, ...] = ()
    hash_type: int | None = None
    fanout: int | None = None
    mode: int | None = None
    mtime: tuple[int, int | None] | None = None  # (seconds, nanoseconds or None)


def _put_varint(out: bytearray, tag: int, value: int) -> None:
    out.append(tag)
    out += encode_varint(value)


def encode(msg: UnixFSData) -> bytes:
    out = bytearray()
    _put_varint(out, 0x08, msg.type)
    if msg.data is not None:
        put_len(out, 0x12, msg.data)
    if msg.filesize is not None:
        _put_varint(out, 0x18, msg.filesize)
    for size in msg.blocksizes:
        _put_varint(out, 0x20, size)
    if msg.hash_type is not None:
        _put_varint(out, 0x28, msg.hash_type)
    if msg.fanout is not None:
        _put_varint(out, 0x30, msg.fanout)
    if msg.mode is not None:
        _put_varint(out, 0x38, msg.mode)
    if msg.mtime is not None:
        seconds, nanos = msg.mtime
        inner = bytearray()
        _put_varint(inner, 0x08, seconds)
        if nanos is not None:
            inner.append(0x15)
            inner += struct.pack("<I", nanos)
        put_len(out, 0x42, inner)
    return bytes(out)


_VARINT_FIELDS = {0x08: "type", 0x18: "filesize", 0x28: "hash_type", 0x30: "fanout", 0x38: "mode"}


def decode(buf: bytes | memoryview) -> UnixFSData:
    """Strictly decode a UnixFS Data message."""
    buf = memoryview(buf)
    pos, end = 0, len(buf)
    fields: dict[str, object] = {}
    blocksizes: list[int] = []
    last_field = 0
    while pos < end:
        tag = buf[pos]
        pos += 1
        field = tag >> 3
        if tag & 0x80 or field < last_field or (field == last_field and field != 4):
            raise BadBlock(f"unixfs: unknown, repeated or out-of-order tag 0x{tag:x}")
        last_field = field
        if tag in _VARINT_FIELDS:
            fields[_VARINT_FIELDS[tag]], pos = read_varint(buf, pos)
        elif tag == 0x12:
            data, pos = read_len(buf, pos)
            fields["data"] = bytes(data)
        elif tag == 0x20:
            size, pos = read_varint(buf, pos)
            blocksizes.append(size)
        elif tag == 0x22:  # packed blocksizes
            packed, pos = read_len(buf, pos)
            p = 0
            while p < len(packed):
                size, p = read_varint(packed, p)
                blocksizes.append(size)
        elif tag == 0x42:
            inner, pos = read_len(buf, pos)
            fields["mtime"] = _decode_mtime(inner)
        else:
            raise BadBlock(f"unixfs: unexpected tag 0x{tag:x}")
    if "type" not in fields:
        raise BadBlock("unixfs: missing Type")
    if not 0 <= fields["type"] < len(TYPE_NAMES):  # type: ignore[operator]
        raise BadBlock(f"unixfs: unknown Type {fields['type']}")
    if fields.get("mode", 0) > 0xFFFFFFFF:  # type: ignore[operator]
        raise BadBlock("unixfs: mode does not fit 32 bits")
    return UnixFSData(blocksizes=tuple(blocksizes), **fields)  # type: ignore[arg-type]


def _decode_mtime(buf: memoryview) -> tuple[int, int | None]:
    if len(buf) < 2 or buf[0] != 0x08:
        raise BadBlock("unixfs: mtime without Seconds")
    seconds, pos = read_varint(buf, 1)
    nanos = None
    if pos < len(buf):
        if buf[pos] != 0x15 or len(buf) - pos != 5:
            raise BadBlock("unixfs: malformed mtime")
        (nanos,) = struct.unpack_from("<I", buf, pos + 1)
        if nanos == 0 or nanos > 999_999_999:
            raise BadBlock("unixfs: mtime nanoseconds out of range")
    return seconds, nanos
