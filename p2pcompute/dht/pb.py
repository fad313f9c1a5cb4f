"""The libp2p kad-dht wire message (protobuf), encoded and decoded by hand.

The schema is go-libp2p-kad-dht's ``dht.pb`` (and kubo's; py-libp2p ships
the same one)::

    Record  { bytes key = 1; bytes value = 2; optional bytes author = 3;
              optional bytes signature = 4; string timeReceived = 5; }
    Message { MessageType type = 1; bytes key = 2; Record record = 3;
              repeated Peer closerPeers = 8; repeated Peer providerPeers = 9;
              int32 clusterLevelRaw = 10; optional bytes senderRecord = 11;
              Peer { bytes id = 1; repeated bytes addrs = 2;
                     ConnectionType connection = 3; optional bytes signedRecord = 4; } }

On a stream each message is preceded by its length as an unsigned varint
(``frame``; read with ``node.framing.FrameReader``). Peer ``id``s are peer
ID multihash bytes and ``addrs`` binary multiaddrs (``addr_from_bytes``).

Why by hand rather than the protobuf runtime: the message is small and
fixed, and a ~200-line codec lets us (1) raise only ``WireError``
subclasses, which a fuzz test checks, (2) bound the work a peer can cause
(message size, peers per list, addresses per peer) while parsing rather than
after building a large object, (3) avoid depending on a generated module
whose code must match the installed runtime's version (protobuf refuses
mismatched gencode) or on py-libp2p's private module path. Compatibility
with the generated classes is checked in the tests, both directions.

Protobuf rules followed: fields in any order; unknown fields of wire types
0, 1, 2 and 5 are skipped (groups are refused); for a scalar field seen
twice the last wins; a ``record`` seen twice is merged (parsed as the
concatenation, which is what protobuf merging means); proto3 fields equal
to their default are not written; ``optional`` fields keep their presence.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from multiaddr import Multiaddr

from ..errors import ConfigError, MessageTooLarge, UnknownMessageType, WireError
from ..node.framing import encode_varint
from ..node.identity import PeerId

MAX_MESSAGE = 4 << 20  # go-libp2p's network.MessageSizeMax
MAX_PEERS = 1024  # per closerPeers / providerPeers list
MAX_ADDRS = 128  # per peer
MAX_ADDR_BYTES = 256  # a binary multiaddr longer than this is not kept (real ones are under 100 bytes)


def kept_addrs(addrs: tuple[bytes, ...] | list[bytes], limit: int) -> tuple[bytes, ...]:
    """The first ``limit`` distinct addresses of a peer's list that are worth keeping (non-empty, <= MAX_ADDR_BYTES)."""
    out: dict[bytes, None] = {}
    for a in addrs:
        if 0 < len(a) <= MAX_ADDR_BYTES:
            out[a] = None
            if len(out) >= limit:
                break
    return tuple(out)


class MessageType(enum.IntEnum):
    PUT_VALUE = 0
    GET_VALUE = 1
    ADD_PROVIDER = 2
    GET_PROVIDERS = 3
    FIND_NODE = 4
    PING = 5


class Connection(enum.IntEnum):
    NOT_CONNECTED = 0
    CONNECTED = 1
    CAN_CONNECT = 2
    CANNOT_CONNECT = 3


@dataclass(frozen=True)
class KadPeer:
    id: bytes
    addrs: tuple[bytes, ...] = ()
    connection: int = 0  # a Connection value; proto3 enums are open, so any int32 is kept
    signed_record: bytes | None = None


@dataclass(frozen=True)
class KadRecord:
    key: bytes = b""
    value: bytes = b""
    time_received: str = ""
    author: bytes | None = None
    signature: bytes | None = None


@dataclass(frozen=True)
class KadMessage:
    type: MessageType
    key: bytes = b""
    record: KadRecord | None = None
    closer_peers: tuple[KadPeer, ...] = ()
    provider_peers: tuple[KadPeer, ...] = ()
    cluster_level: int = 0
    sender_record: bytes | None = None


# --- encoding --------------------------------------------------------------

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def _tag(field: int, wire_type: int) -> bytes:
    return encode_varint(field << 3 | wire_type)


def _int32(field: int, value: int) -> bytes:
    return _tag(field, _VARINT) + encode_varint(value & 0xFFFFFFFFFFFFFFFF)  # negatives: 10 bytes


def _bytes(field: int, value: bytes) -> bytes:
    return _tag(field, _LEN) + encode_varint(len(value)) + value


def _encode_peer(peer: KadPeer) -> bytes:
    out = bytearray()
    if peer.id:
        out += _bytes(1, peer.id)
    for addr in peer.addrs:
        out += _bytes(2, addr)
    if peer.connection:
        out += _int32(3, peer.connection)
    if peer.signed_record is not None:
        out += _bytes(4, peer.signed_record)
    return bytes(out)


def _encode_record(rec: KadRecord) -> bytes:
    out = bytearray()
    if rec.key:
        out += _bytes(1, rec.key)
    if rec.value:
        out += _bytes(2, rec.value)
    if rec.author is not None:
        out += _bytes(3, rec.author)
    if rec.signature is not None:
        out += _bytes(4, rec.signature)
    if rec.time_received:
        out += _bytes(5, rec.time_received.encode("utf-8"))
    return bytes(out)


def encode(msg: KadMessage) -> bytes:
    out = bytearray()
    if msg.type:
        out += _int32(1, int(msg.type))
    if msg.key:
        out += _bytes(2, msg.key)
    if msg.record is not None:
        out += _bytes(3, _encode_record(msg.record))
    for peer in msg.closer_peers:
        out += _bytes(8, _encode_peer(peer))
    for peer in msg.provider_peers:
        out += _bytes(9, _encode_peer(peer))
    if msg.cluster_level:
        out += _int32(10, msg.cluster_level)
    if msg.sender_record is not None:
        out += _bytes(11, msg.sender_record)
    if len(out) > MAX_MESSAGE:
        raise MessageTooLarge(f"kad message of {len(out)} bytes is over the {MAX_MESSAGE}-byte limit")
    return bytes(out)


def frame(msg: KadMessage) -> bytes:
    """``msg`` with its varint length prefix, as written on a kad stream."""
    body = encode(msg)
    return encode_varint(len(body)) + body


# --- decoding --------------------------------------------------------------


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for i in range(10):
        if pos >= len(data):
            raise WireError("truncated varint")
        byte = data[pos]
        pos += 1
        if i == 9 and byte > 1:
            raise WireError("varint overflows 64 bits")
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos
    raise WireError("varint longer than 10 bytes")


def _fields(data: bytes):
    """Yield ``(field, wire_type, value)``: an int for varints, bytes for LEN; skips fixed."""
    pos, end = 0, len(data)
    while pos < end:
        tag, pos = _varint(data, pos)
        field, wire_type = tag >> 3, tag & 7
        if field == 0 or field >= 1 << 29:
            raise WireError(f"invalid protobuf field number {field}")
        if wire_type == _VARINT:
            value, pos = _varint(data, pos)
            yield field, wire_type, value
        elif wire_type == _LEN:
            length, pos = _varint(data, pos)
            if length > end - pos:
                raise WireError("length-delimited field runs past the end")
            yield field, wire_type, data[pos : pos + length]
            pos += length
        elif wire_type in (_I64, _I32):
            pos += 8 if wire_type == _I64 else 4
            if pos > end:
                raise WireError("fixed-width field runs past the end")
        else:
            raise WireError(f"unsupported protobuf wire type {wire_type}")


def _expect(field: int, wire_type: int, wanted: int) -> None:
    if wire_type != wanted:
        raise WireError(f"field {field} has wire type {wire_type}, expected {wanted}")


def _to_int32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def _decode_peer(data: bytes, max_addrs: int) -> KadPeer:
    pid, addrs, connection, signed = b"", [], 0, None
    for field, wt, value in _fields(data):
        if field == 1:
            _expect(field, wt, _LEN)
            pid = value
        elif field == 2:
            _expect(field, wt, _LEN)
            if len(addrs) >= max_addrs:
                raise WireError(f"peer lists more than {max_addrs} addresses")
            addrs.append(value)
        elif field == 3:
            _expect(field, wt, _VARINT)
            connection = _to_int32(value)
        elif field == 4:
            _expect(field, wt, _LEN)
            signed = value
    return KadPeer(pid, tuple(addrs), connection, signed)


def _decode_record(data: bytes) -> KadRecord:
    key, value_, author, signature, received = b"", b"", None, None, ""
    for field, wt, value in _fields(data):
        if field in (1, 2, 3, 4, 5):
            _expect(field, wt, _LEN)
        if field == 1:
            key = value
        elif field == 2:
            value_ = value
        elif field == 3:
            author = value
        elif field == 4:
            signature = value
        elif field == 5:
            try:
                received = value.decode("utf-8")
            except UnicodeDecodeError:
                raise WireError("record timeReceived is not UTF-8") from None
    return KadRecord(key, value_, received, author, signature)


def decode(
    data: bytes, *, max_size: int = MAX_MESSAGE, max_peers: int = MAX_PEERS, max_addrs: int = MAX_ADDRS
) -> KadMessage:
    """Decode one kad message (without its length prefix). Raises only ``WireError``."""
    if len(data) > max_size:
        raise MessageTooLarge(f"kad message of {len(data)} bytes is over the {max_size}-byte limit")
    data = bytes(data)
    mtype, key, record_parts, cluster, sender = 0, b"", [], 0, None
    lists: dict[int, list[KadPeer]] = {8: [], 9: []}
    for field, wt, value in _fields(data):
        if field in (1, 10):
            _expect(field, wt, _VARINT)
            if field == 1:
                mtype = _to_int32(value)
            else:
                cluster = _to_int32(value)
        elif field in (2, 3, 8, 9, 11):
            _expect(field, wt, _LEN)
            if field == 2:
                key = value
            elif field == 3:
                record_parts.append(value)
            elif field == 11:
                sender = value
            else:
                if len(lists[field]) >= max_peers:
                    raise WireError(f"kad message lists more than {max_peers} peers")
                lists[field].append(_decode_peer(value, max_addrs))
    if mtype not in MessageType._value2member_map_:
        raise UnknownMessageType(f"unknown kad message type {mtype}")
    record = _decode_record(b"".join(record_parts)) if record_parts else None
    return KadMessage(MessageType(mtype), key, record, tuple(lists[8]), tuple(lists[9]), cluster, sender)


# --- peers and addresses ------------------------------------------------------


def addr_to_bytes(text: str) -> bytes:
    """The binary form of a multiaddr written as text (ours, from config or flags)."""
    try:
        return Multiaddr(text).to_bytes()
    except Exception as exc:  # the multiaddr package raises several types
        raise ConfigError(f"{text!r} is not a multiaddr (e.g. /ip4/127.0.0.1/tcp/4001): {exc}") from None


def addr_from_bytes(raw: bytes) -> str:
    """The text form of a binary multiaddr from a peer; ``WireError`` if malformed.

    The ``multiaddr`` package accepts some truncated inputs (it pads them when
    printing), so the text is parsed again and must encode to exactly ``raw``.
    """
    try:
        text = str(Multiaddr(raw))
        ok = Multiaddr(text).to_bytes() == raw
    except Exception as exc:
        raise WireError(f"malformed binary multiaddr: {exc}") from None
    if not ok or not text:
        raise WireError("malformed binary multiaddr (does not re-encode to itself)")
    return text


def peer_addrs(peer: KadPeer) -> list[str]:
    """The addresses of ``peer`` we understand, as text; others are skipped."""
    out = []
    for raw in peer.addrs:
        try:
            out.append(addr_from_bytes(raw))
        except WireError:
            continue
    return out


def peer_id_of(peer: KadPeer) -> PeerId | None:
    """Our ``PeerId`` for a kad peer entry, or ``None`` (not a valid peer ID multihash)."""
    try:
        return PeerId(peer.id)
    except ValueError:
        return None


def kad_peer(peer: PeerId, addrs: list[bytes] | tuple[bytes, ...] = (), connection: int = 0) -> KadPeer:
    return KadPeer(peer.raw, tuple(addrs), connection)


def request(kind: MessageType, key: bytes = b"", **fields) -> KadMessage:
    """A request of type ``kind`` (FIND_NODE, GET_PROVIDERS, GET_VALUE, PING, ...)."""
    return KadMessage(kind, key, **fields)
