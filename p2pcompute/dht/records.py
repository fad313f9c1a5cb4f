"""Signed value records for PUT_VALUE / GET_VALUE: validation, newest-wins, a bounded store.

Theory of operation
-------------------
A record lives under a key that names its owner:
``/p2pc/<author peer ID multihash bytes>/<name>``, the way ``/ipns/<id>``
works in IPFS. Only the author can write it, so the key alone says whose
signature to check and no lookup of a public key is needed (our peer IDs
embed the ed25519 key).

The record travels in the kad ``Record.value`` field as a CBOR array
``[1, seq, value, signature]``. The signature is the author's over
``DOMAIN + len(key) + key + seq + value`` (lengths and seq as fixed-width
big-endian integers), so neither the key, the sequence number nor the value
can be swapped. ``seq`` grows with every new version; ``newer`` picks the
higher ``seq`` and, at equal ``seq``, the larger signature bytes, so every
peer resolves a conflict the same way.

``validate(key, value)`` accepts arbitrary bytes and raises only
``WireError`` subclasses (``BadSignature`` for a signature that does not
verify). ``RecordStore`` is the serving side: it keeps validated records,
refuses older versions than it holds, forgets records ``max_age`` seconds
after it received them (authors republish), and holds at most
``max_records``, dropping the oldest received first.
"""

from __future__ import annotations

import enum
import struct
from collections import OrderedDict
from dataclasses import dataclass

import cbor2

from ..errors import BadSignature, MessageTooLarge, WireError
from ..node.identity import Identity, PeerId

NAMESPACE = b"/p2pc/"
DOMAIN = b"p2pcompute/dht-record/v1\x00"
RECORD_VERSION = 1
PEER_ID_LEN = 38
MAX_NAME = 256
MAX_VALUE = 16 * 1024  # values are small claims; bulk data goes by CID
MAX_SEQ = (1 << 64) - 1


@dataclass(frozen=True)
class SignedValue:
    key: bytes
    author: PeerId
    seq: int
    value: bytes
    signature: bytes

    def encode(self) -> bytes:
        """The bytes that go into the kad ``Record.value`` field."""
        return cbor2.dumps([RECORD_VERSION, self.seq, self.value, self.signature])


def record_key(author: PeerId, name: bytes) -> bytes:
    if not name or len(name) > MAX_NAME:
        raise ValueError(f"a record name has 1..{MAX_NAME} bytes")
    return NAMESPACE + author.raw + b"/" + name


def author_of(key: bytes) -> PeerId:
    """The peer allowed to write ``key``; ``WireError`` if the key is not ours."""
    if not key.startswith(NAMESPACE):
        raise WireError("record key is not in the /p2pc/ namespace")
    rest = key[len(NAMESPACE) :]
    name = rest[PEER_ID_LEN + 1 :]
    if len(rest) < PEER_ID_LEN + 2 or rest[PEER_ID_LEN : PEER_ID_LEN + 1] != b"/" or len(name) > MAX_NAME:
        raise WireError("record key is not /p2pc/<peer id>/<name>")
    try:
        return PeerId(rest[:PEER_ID_LEN])
    except ValueError:
        raise WireError("record key does not hold an ed25519 peer ID") from None


def _signed_bytes(key: bytes, seq: int, value: bytes) -> bytes:
    return DOMAIN + struct.pack(">I", len(key)) + key + struct.pack(">Q", seq) + value


def make_record(identity: Identity, name: bytes, value: bytes, seq: int) -> SignedValue:
    """Sign version ``seq`` of ``value`` under ``identity``'s key ``name``."""
    if len(value) > MAX_VALUE:
        raise ValueError(f"a record value has at most {MAX_VALUE} bytes")
    if not 0 <= seq <= MAX_SEQ:
        raise ValueError("seq must fit in 64 bits")
    key = record_key(identity.peer_id, name)
    signature = identity.sign(_signed_bytes(key, seq, value))
    return SignedValue(key, identity.peer_id, seq, value, signature)


def validate(key: bytes, data: bytes) -> SignedValue:
    """Check a record received for ``key``. Raises only ``WireError`` subclasses."""
    author = author_of(key)
    if len(data) > MAX_VALUE + 256:
        raise MessageTooLarge(f"record of {len(data)} bytes is over the limit")
    try:
        fields = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises several types on garbage
        raise WireError(f"record is not CBOR: {exc}") from None
    if type(fields) is not list or len(fields) != 4:
        raise WireError("record is not a 4-element array")
    version, seq, value, signature = fields
    if type(version) is not int or version != RECORD_VERSION:
        raise WireError(f"record version {version!r} is not supported")
    if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
        raise WireError("record seq is not a 64-bit unsigned integer")
    if type(value) is not bytes or type(signature) is not bytes:
        raise WireError("record value and signature must be byte strings")
    if len(value) > MAX_VALUE:
        raise MessageTooLarge("record value is over the limit")
    if not author.verify(_signed_bytes(key, seq, value), signature):
        raise BadSignature(f"record for {author.short} does not carry its signature")
    return SignedValue(key, author, seq, value, signature)


def newer(a: SignedValue, b: SignedValue) -> bool:
    """True when ``a`` supersedes ``b`` (higher seq; ties broken by signature bytes)."""
    return (a.seq, a.signature) > (b.seq, b.signature)


class PutResult(enum.Enum):
    STORED = "stored"
    UNCHANGED = "unchanged"  # the same record was already held
    OLDER = "older"  # refused: a newer version is held


@dataclass
class _Held:
    record: SignedValue
    received: float


class RecordStore:
    """Validated records this peer serves, bounded and expiring. See the module doc."""

    def __init__(self, *, max_records: int = 10_000, max_age: float = 36 * 3600.0) -> None:
        self.max_records = max_records
        self.max_age = max_age
        self._held: OrderedDict[bytes, _Held] = OrderedDict()  # oldest received first

    def __len__(self) -> int:
        return len(self._held)

    def put(self, key: bytes, data: bytes, now: float) -> PutResult:
        """Validate and keep ``data`` for ``key``. Raises ``WireError`` if invalid."""
        record = validate(key, data)
        self.expire(now)
        held = self._held.get(key)
        if held is not None:
            if record == held.record:
                return PutResult.UNCHANGED
            if not newer(record, held.record):
                return PutResult.OLDER
        self._held[key] = _Held(record, now)
        self._held.move_to_end(key)
        while len(self._held) > self.max_records:
            self._held.popitem(last=False)
        return PutResult.STORED

    def get(self, key: bytes, now: float) -> SignedValue | None:
        held = self._held.get(key)
        if held is None or held.received + self.max_age <= now:
            return None
        return held.record

    def expire(self, now: float) -> int:
        """Forget records older than ``max_age``; returns how many."""
        dropped = 0
        while self._held:
            key, held = next(iter(self._held.items()))
            if held.received + self.max_age > now:
                break
            del self._held[key]
            dropped += 1
        return dropped
