"""dag-pb: the protobuf block format of UnixFS (PBNode / PBLink).

::

    message PBLink { optional bytes Hash = 1; optional string Name = 2; optional uint64 Tsize = 3; }
    message PBNode { repeated PBLink Links = 2; optional bytes Data = 1; }

Encoding is canonical, as kubo (boxo merkledag) writes it: Links first (sorted
by name bytes, stable), then Data; inside a link Hash, Name, Tsize in that
order, each written when set (kubo always sets Name and Tsize, even ``""``);
minimal varints. ``Data=None`` (absent) differs from ``Data=b""``.

Decoding takes untrusted bytes and follows the dag-pb spec's strict rules:
only these fields with these wire types, links before data, each singular
field at most once, link fields in order, Hash present and a valid CID, names
valid UTF-8, minimal varints, no trailing garbage. Anything else raises
``BadBlock``; no other exception escapes.

The little protobuf helpers here (``put_len``, ``read_len``) are shared with
``unixfs.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import BadBlock, BadCid
from .cid import Cid, decode_varint, encode_varint

# tags: (field number << 3) | wire type
_NODE_DATA = 0x0A  # field 1, length-delimited
_NODE_LINK = 0x12  # field 2, length-delimited
_LINK_HASH = 0x0A
_LINK_NAME = 0x12
_LINK_TSIZE = 0x18  # field 3, varint


@dataclass(frozen=True, slots=True)
class PBLink:
    hash: Cid
    name: str | None = ""
    tsize: int | None = None


@dataclass(frozen=True, slots=True)
class PBNode:
    links: tuple[PBLink, ...] = ()
    data: bytes | None = None


# --- protobuf helpers -------------------------------------------------------------


def put_len(out: bytearray, tag: int, payload: bytes | memoryview) -> None:
    out.append(tag)
    out += encode_varint(len(payload))
    out += payload


def read_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    return decode_varint(buf, pos, BadBlock)


def read_len(buf: bytes | memoryview, pos: int) -> tuple[memoryview | bytes, int]:
    """Read a length-delimited payload at ``pos`` (after its tag)."""
    n, pos = decode_varint(buf, pos, BadBlock)
    end = pos + n
    if end > len(buf):
        raise BadBlock("length-delimited field runs past the end")
    return buf[pos:end], end


# --- encode -------------------------------------------------------------------------


def _sort_key(link: PBLink) -> bytes:
    return (link.name or "").encode("utf-8")


def encode_link(link: PBLink) -> bytes:
    out = bytearray()
    put_len(out, _LINK_HASH, link.hash.to_bytes())
    if link.name is not None:
        put_len(out, _LINK_NAME, link.name.encode("utf-8"))
    if link.tsize is not None:
        out.append(_LINK_TSIZE)
        out += encode_varint(link.tsize)
    return bytes(out)


def encode(node: PBNode) -> bytes:
    """Canonical bytes of ``node`` (links sorted by name, stable)."""
    out = bytearray()
    links = node.links
    if any(links[i].name != links[0].name for i in range(1, len(links))):
        links = sorted(links, key=_sort_key)
    for link in links:
        put_len(out, _NODE_LINK, encode_link(link))
    if node.data is not None:
        put_len(out, _NODE_DATA, node.data)
    return bytes(out)


# --- decode -------------------------------------------------------------------------


def decode(block: bytes | memoryview) -> PBNode:
    """Strictly decode a dag-pb block; raise ``BadBlock``/``BadCid`` on anything malformed."""
    buf = memoryview(block)
    pos, end = 0, len(buf)
    links: list[PBLink] = []
    data: bytes | None = None
    while pos < end:
        tag = buf[pos]
        pos += 1
        if data is not None:
            raise BadBlock("dag-pb: fields after Data")
        if tag == _NODE_LINK:
            payload, pos = read_len(buf, pos)
            links.append(decode_link(payload))
        elif tag == _NODE_DATA:
            payload, pos = read_len(buf, pos)
            data = bytes(payload)
        else:
            raise BadBlock(f"dag-pb: unexpected PBNode tag 0x{tag:x}")
    return PBNode(tuple(links), data)


def decode_link(buf: memoryview | bytes) -> PBLink:
    pos, end = 0, len(buf)
    cid: Cid | None = None
    name: str | None = None
    tsize: int | None = None
    last = 0
    while pos < end:
        tag = buf[pos]
        pos += 1
        if tag <= last or tag not in (_LINK_HASH, _LINK_NAME, _LINK_TSIZE):
            raise BadBlock(f"dag-pb: unexpected, repeated or out-of-order PBLink tag 0x{tag:x}")
        last = tag
        if tag == _LINK_TSIZE:
            tsize, pos = read_varint(buf, pos)
            continue
        payload, pos = read_len(buf, pos)
        if tag == _LINK_HASH:
            try:
                cid = Cid.decode(bytes(payload))
            except BadCid as exc:
                raise BadBlock(f"dag-pb: link hash is not a CID ({exc})") from None
        else:
            try:
                name = bytes(payload).decode("utf-8")
            except UnicodeDecodeError:
                raise BadBlock("dag-pb: link name is not UTF-8") from None
    if cid is None:
        raise BadBlock("dag-pb: link without Hash")
    return PBLink(cid, name, tsize)
