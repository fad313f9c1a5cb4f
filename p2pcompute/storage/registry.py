"""The data registry's pure logic: signed records with handles, and signed links.

Theory of operation
-------------------
**Records.** A record says "``owner`` registers this data": a ``DataRef``
(``ipfs://CID`` or a URL) and metadata (dtype, shape, partitioning,
checksums, free ``key=value`` pairs), with its creation time. Its body is
canonical CBOR; the owner signs ``DOMAIN + body`` with its peer key, and
the record travels as ``CBOR [1, body, signature]``, so any peer can check
it from the bytes alone (the owner's ID holds its public key).

The **handle** is derived from the signed record: ``dh`` + base32 of the
owner's ed25519 public key (32 bytes) and the first 20 bytes of
SHA-256(body). It is self-certifying: whoever holds a handle can check that
a record is the one it names (same owner, same body hash) without trusting
whoever served it. The owner key in the handle also gives the DHT key:
``/p2pc/<owner>/data/<digest>`` (``dht/records.py``: only the owner can
write there), so any peer resolves a handle with ``DhtService.get_value``.

**Links.** A signed link lets someone who holds no API token read one file
for a while: a token carrying ``{cid, handle, expiry, byte range}``,
authenticated with HMAC-SHA256 under a key only the serving peer knows.
``open_link(key, token, now)`` refuses altered tokens (``BadSignature``),
expired ones and malformed ones (``WireError``); ``link_span`` decides
which bytes a request with an HTTP ``Range`` header may get. Time is always
passed in.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass, field

import cbor2

from ..errors import BadSignature, P2PComputeError, UserError, WireError
from ..node.identity import Identity, PeerId
from .cid import Cid, b32decode, b32encode
from .dataref import ByteRange, DataRef

DOMAIN = b"p2pcompute/data-record/v1\x00"
LINK_DOMAIN = b"p2pcompute/data-link/v1\x00"
RECORD_VERSION = 1
LINK_VERSION = 1
HANDLE_PREFIX = "dh"
DIGEST_LEN = 20
MAX_RECORD = 12 * 1024  # fits a DHT value (16 KiB)
MAX_TOKEN = 1024
MAX_META = 32
MAX_TEXT = 256
_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class Metadata:
    dtype: str | None = None
    shape: tuple[int, ...] | None = None
    partitioning: str | None = None
    checksums: tuple[tuple[str, str], ...] = ()  # ("sha256", hex), ...
    extra: tuple[tuple[str, str], ...] = ()  # --meta key=value

    def __post_init__(self) -> None:
        for name in ("dtype", "partitioning"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not 0 < len(value) <= MAX_TEXT):
                raise UserError(f"{name} must be text of 1 to {MAX_TEXT} characters")
        if self.shape is not None and (not isinstance(self.shape, tuple) or len(self.shape) > 32 or not all(
                type(d) is int and 0 <= d < 1 << 63 for d in self.shape)):
            raise UserError("shape must be at most 32 non-negative integers, e.g. 1000,3")
        for name in ("checksums", "extra"):
            pairs = getattr(self, name)
            if len(pairs) > MAX_META or len({k for k, _ in pairs}) != len(pairs):
                raise UserError(f"{name}: at most {MAX_META} entries, each key once")
            for k, v in pairs:
                if not isinstance(k, str) or not _KEY.match(k) or not isinstance(v, str) or len(v) > MAX_TEXT:
                    raise UserError(f"{name}: {k!r}: keys are 1-64 of A-Z a-z 0-9 _ . -, values at most "
                                    f"{MAX_TEXT} characters")

    def to_json(self) -> dict:
        out: dict = {}
        if self.dtype is not None:
            out["dtype"] = self.dtype
        if self.shape is not None:
            out["shape"] = list(self.shape)
        if self.partitioning is not None:
            out["partitioning"] = self.partitioning
        if self.checksums:
            out["checksums"] = dict(self.checksums)
        if self.extra:
            out["meta"] = dict(self.extra)
        return out

    @classmethod
    def from_json(cls, data: dict) -> Metadata:
        shape = data.get("shape")
        checksums, extra = data.get("checksums") or {}, data.get("meta") or {}
        if shape is not None and not isinstance(shape, list):
            raise UserError("shape must be a list of integers")
        if not isinstance(checksums, dict) or not isinstance(extra, dict):
            raise UserError("checksums and meta must be objects of text values")
        return cls(data.get("dtype"), None if shape is None else tuple(shape), data.get("partitioning"),
                   tuple(sorted(checksums.items())), tuple(sorted(extra.items())))


@dataclass(frozen=True)
class Record:
    ref: DataRef
    meta: Metadata
    owner: PeerId
    created: int  # unix seconds

    def body(self) -> bytes:
        return cbor2.dumps({"v": RECORD_VERSION, "ref": self.ref.to_json(), "meta": self.meta.to_json(),
                            "owner": self.owner.raw, "created": self.created}, canonical=True)

    def to_json(self) -> dict:
        return {"ref": self.ref.to_json(), **self.meta.to_json(), "owner": str(self.owner), "created": self.created}


@dataclass(frozen=True)
class SignedRecord:
    record: Record
    handle: str
    encoded: bytes = field(repr=False)  # CBOR [1, body, signature]


def make_record(identity: Identity, ref: DataRef, meta: Metadata, now: float) -> SignedRecord:
    """Sign a registry record for ``ref`` by ``identity`` at time ``now``."""
    record = Record(ref, meta, identity.peer_id, int(now))
    body = record.body()
    encoded = cbor2.dumps([RECORD_VERSION, body, identity.sign(DOMAIN + body)])
    if len(encoded) > MAX_RECORD:
        raise UserError(f"the record is {len(encoded)} bytes, over {MAX_RECORD}: shorten its metadata")
    return SignedRecord(record, handle_of(record.owner, body), encoded)


def handle_of(owner: PeerId, body: bytes) -> str:
    return HANDLE_PREFIX + b32encode(owner.public_key + hashlib.sha256(body).digest()[:DIGEST_LEN])


def parse_handle(text: str) -> tuple[PeerId, bytes]:
    """(owner, digest) of a handle; ``UserError`` if it is not one."""
    if not isinstance(text, str) or not text.startswith(HANDLE_PREFIX) or len(text) > 128:
        raise UserError(f"{str(text)[:100]!r} is not a data handle (dh...; `p2pcompute data register` prints one)")
    try:
        raw = b32decode(text[len(HANDLE_PREFIX):])
    except P2PComputeError:
        raw = b""
    if len(raw) != 32 + DIGEST_LEN:
        raise UserError(f"{text[:100]!r} is not a data handle (bad encoding or length)")
    try:
        owner = PeerId.from_public_key(raw[:32])
    except ValueError:
        raise UserError(f"{text[:100]!r} is not a data handle (bad owner key)") from None
    return owner, raw[32:]


def dht_name(handle: str) -> bytes:
    """The record name under the owner's DHT namespace (``/p2pc/<owner>/data/<digest>``)."""
    return b"data/" + parse_handle(handle)[1]


def open_record(data: bytes, handle: str | None = None) -> SignedRecord:
    """Verify an encoded record (and that it is the one ``handle`` names). Raises ``WireError``s."""
    if len(data) > MAX_RECORD:
        raise WireError(f"record of {len(data)} bytes is over {MAX_RECORD}")
    try:
        outer = cbor2.loads(data)
        version, body, signature = outer
        fields = cbor2.loads(body)
    except Exception:  # cbor2 and unpacking raise several types on garbage
        raise WireError("registry record is not CBOR [version, body, signature]") from None
    if version != RECORD_VERSION or type(body) is not bytes or type(signature) is not bytes:
        raise WireError("registry record: unsupported version or field types")
    if not isinstance(fields, dict) or set(fields) != {"v", "ref", "meta", "owner", "created"} \
            or fields["v"] != RECORD_VERSION or type(fields["created"]) is not int or type(fields["owner"]) is not bytes:
        raise WireError("registry record: the body does not have the record fields")
    try:
        owner = PeerId(fields["owner"])
        record = Record(DataRef.from_json(fields["ref"]), Metadata.from_json(_dict(fields["meta"])), owner,
                        fields["created"])
    except (ValueError, UserError) as exc:
        raise WireError(f"registry record: {exc}") from None
    if record.body() != body:
        raise WireError("registry record: the body is not in canonical form")
    if not owner.verify(DOMAIN + body, signature):
        raise BadSignature(f"registry record does not carry the signature of {owner.short}")
    signed = SignedRecord(record, handle_of(owner, body), bytes(data))
    if handle is not None and signed.handle != handle:
        raise BadSignature("the record is not the one the handle names")
    return signed


def _dict(value: object) -> dict:
    if not isinstance(value, dict):
        raise UserError("metadata must be a map")
    return value


# --- signed links ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    cid: Cid
    expires: int  # unix seconds
    range: ByteRange | None = None
    handle: str | None = None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise WireError("link token: not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error:  # e.g. one character: no whole byte
        raise WireError("link token: not base64url") from None


def _mac(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, LINK_DOMAIN + payload, hashlib.sha256).digest()


def sign_link(key: bytes, grant: Grant) -> str:
    """A token for ``grant``: base64url(CBOR payload) "." base64url(HMAC)."""
    rng = grant.range
    payload = cbor2.dumps([LINK_VERSION, grant.cid.to_bytes(), grant.expires, None if rng is None else rng.start,
                           None if rng is None else rng.end, grant.handle])
    return _b64(payload) + "." + _b64(_mac(key, payload))


def open_link(key: bytes, token: str, now: float) -> Grant:
    """The grant of a token made with ``key``; refuses altered (``BadSignature``), expired or malformed ones."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN or token.count(".") != 1:
        raise WireError("link token: malformed")
    text, mac_text = token.split(".")
    payload, mac = _unb64(text), _unb64(mac_text)
    if not hmac.compare_digest(mac, _mac(key, payload)):
        raise BadSignature("link token: the signature does not match (altered, or made by another peer)")
    try:
        version, cid_bytes, expires, start, end, handle = cbor2.loads(payload)
        grant = Grant(Cid.decode(cid_bytes), expires, None if start is None else ByteRange(start, end), handle)
    except Exception:  # only our own key signs, so this is a bug or a key reuse; refuse all the same
        raise WireError("link token: the payload does not decode") from None
    if version != LINK_VERSION or type(expires) is not int:
        raise WireError("link token: unsupported version")
    if now >= expires:
        raise WireError(f"link token: expired {int(now) - expires} s ago")
    return grant


def parse_range_header(text: str | None, size: int) -> tuple[int, int] | None:
    """``(offset, length)`` asked for by an HTTP ``Range`` header over ``size`` bytes; None for no header.

    Raises ``UserError`` for a range that cannot be satisfied (answer 416).
    One range only (``bytes=a-b``, ``bytes=a-``, ``bytes=-n``).
    """
    if text is None:
        return None
    m = re.fullmatch(r"\s*bytes\s*=\s*([0-9]{0,19})-([0-9]{0,19})\s*", text)
    if m is None or (not m[1] and not m[2]):
        raise UserError(f"unsupported Range header {text[:100]!r}: send one range, bytes=FIRST-LAST")
    if not m[1]:  # suffix: the last n bytes
        n = min(int(m[2]), size)
        if n == 0:
            raise UserError("Range asks for no bytes")
        return size - n, n
    first = int(m[1])
    last = size - 1 if not m[2] else min(int(m[2]), size - 1)
    if first >= size or (m[2] and int(m[2]) < first):
        raise UserError(f"Range {text.strip()} is outside the {size} bytes")
    return first, last - first + 1


def link_span(grant: Grant, asked: tuple[int, int] | None, size: int) -> tuple[int, int]:
    """The bytes a link may serve: what was asked (or the whole grant), which must lie inside the grant."""
    allowed = (0, size) if grant.range is None else grant.range.clamp(size)
    if allowed is None:
        raise UserError("the link's range is outside the data")
    lo, n = allowed
    if asked is None:
        return lo, n
    offset, length = asked
    if offset < lo or offset + length > lo + n:
        raise UserError(f"the link allows bytes {lo}-{lo + n - 1} only")
    return offset, length
