"""The wire format: typed messages in a versioned, optionally signed CBOR envelope.

Theory of operation
-------------------
Every message type is a frozen dataclass registered once with a numeric code
(``@message(code)``). Codes are append-only: a code is never reused or
renumbered, and a type may only gain fields that have defaults, so older peers
keep decoding what newer peers send (unknown fields are ignored).

One frame on the wire is one CBOR array, the *envelope*::

    [version, kind, request_id, code, body, signer, signature]

* ``version`` — ``WIRE_VERSION``; anything else is ``UnknownVersion``.
* ``kind`` — one-way message, request, reply, or error reply (``Kind``).
* ``request_id`` — set on requests; a reply carries the id it answers.
* ``body`` — the message's fields as a CBOR map, itself wrapped as a byte
  string so that a signature covers exact bytes.
* ``signer`` / ``signature`` — the sender's peer ID and its ed25519 signature
  over ``DOMAIN + code + body``. Types registered with ``signed=True`` must
  carry a valid one; ``decode`` verifies it and rejects the frame otherwise.
  Because the request id is not signed, a signed body can be lifted out of its
  envelope and forwarded as a *claim* (``sign_claim`` / ``open_claim``) that
  any third peer can check against the signer's ID alone.

``decode`` accepts arbitrary bytes and raises only ``WireError`` subclasses:
oversized input, malformed CBOR, wrong shapes or field types, unknown versions
or codes, bad signatures. Callers log and drop; nothing here can crash a node.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
import types
import typing
from dataclasses import dataclass
from typing import Any, TypeVar

import cbor2

from ..errors import (
    BadSignature,
    MessageTooLarge,
    UnknownMessageType,
    UnknownVersion,
    WireError,
)
from .identity import Identity, PeerId

WIRE_VERSION = 1
DEFAULT_MAX_MESSAGE = 1 << 20  # 1 MiB; bulk data goes over streams, by CID
DOMAIN = b"p2pcompute/msg/v1\x00"


class Kind(enum.IntEnum):
    MESSAGE = 0  # one-way, no reply expected
    REQUEST = 1
    REPLY = 2
    ERROR = 3  # a reply whose body is an ErrorReply


@dataclass(frozen=True)
class MessageSpec:
    code: int
    cls: type
    signed: bool
    hints: dict[str, Any]
    protocol: str = "other"   # protocol_of(cls): what the transport's per-protocol counters name it


PROTOCOL_NAMES = {"gossip": "membership"}   # a package whose protocol has another name


def protocol_of(cls: type) -> str:
    """The protocol a message type belongs to: its package under p2pcompute (``node``, ``membership``,
    ``scheduler``; ``p2pcompute.scheduler.verification.signed`` is ``scheduler``), else its module."""
    parts = cls.__module__.split(".")
    name = parts[1] if len(parts) > 1 and parts[0] == "p2pcompute" else cls.__module__
    return PROTOCOL_NAMES.get(name, name)


_BY_CODE: dict[int, MessageSpec] = {}
_BY_CLS: dict[type, MessageSpec] = {}

T = TypeVar("T")


def message(code: int, *, signed: bool = False):
    """Register a frozen dataclass as wire message type ``code``."""

    def register(cls: type[T]) -> type[T]:
        if not (dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen):  # type: ignore[attr-defined]
            raise TypeError(f"{cls.__name__} must be a frozen dataclass")
        if code in _BY_CODE:
            raise ValueError(f"message code {code} already used by {_BY_CODE[code].cls.__name__}")
        spec = MessageSpec(code, cls, signed, typing.get_type_hints(cls), protocol_of(cls))
        _BY_CODE[code] = spec
        _BY_CLS[cls] = spec
        return cls

    return register


def spec_of(msg_or_cls: Any) -> MessageSpec:
    cls = msg_or_cls if isinstance(msg_or_cls, type) else type(msg_or_cls)
    try:
        return _BY_CLS[cls]
    except KeyError:
        raise TypeError(f"{cls.__name__} is not a registered message type") from None


def registered_types() -> dict[int, type]:
    return {code: spec.cls for code, spec in sorted(_BY_CODE.items())}


@dataclass(frozen=True)
class Envelope:
    """A decoded frame. ``signer`` is set only when a signature was verified."""

    kind: Kind
    request_id: int
    message: Any
    signer: PeerId | None = None
    size: int = 0

    @property
    def type_name(self) -> str:
        return type(self.message).__name__


# --- encoding --------------------------------------------------------------


def _to_cbor(value: Any) -> Any:
    if isinstance(value, PeerId):
        return value.raw
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_cbor(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_to_cbor(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_cbor(v) for k, v in value.items()}
    return value


def _signed_bytes(code: int, body: bytes) -> bytes:
    return DOMAIN + struct.pack(">I", code) + body


def encode(
    msg: Any,
    *,
    kind: Kind = Kind.MESSAGE,
    request_id: int = 0,
    identity: Identity | None = None,
    max_size: int = DEFAULT_MAX_MESSAGE,
) -> bytes:
    """Encode ``msg`` into one frame; sign it when ``identity`` is given.

    Raises ``MessageTooLarge`` rather than produce a frame peers would refuse.
    """
    spec = spec_of(msg)
    body = cbor2.dumps(_to_cbor(msg), canonical=True)
    signer = signature = None
    if identity is not None:
        signer = identity.peer_id.raw
        signature = identity.sign(_signed_bytes(spec.code, body))
    elif spec.signed:
        raise ValueError(f"{type(msg).__name__} must be signed: pass identity=")
    frame = cbor2.dumps([WIRE_VERSION, int(kind), request_id, spec.code, body, signer, signature])
    if len(frame) > max_size:
        raise MessageTooLarge(
            f"{type(msg).__name__} encodes to {len(frame)} bytes, over the {max_size}-byte limit"
        )
    return frame


# --- decoding --------------------------------------------------------------


def _from_cbor(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _from_cbor(value, option, where)
            except WireError:
                continue
        raise WireError(f"{where}: {type(value).__name__} fits none of {hint}")
    if hint is type(None):
        if value is None:
            return None
    elif hint is bool:
        if type(value) is bool:
            return value
    elif hint is int:
        if type(value) is int:
            return value
    elif hint is float:
        if type(value) in (int, float):
            try:
                return float(value)
            except OverflowError:  # a CBOR bignum where a float belongs
                raise WireError(f"{where}: number too large") from None
    elif hint in (str, bytes):
        if type(value) is hint:
            return value
    elif hint is PeerId:
        if type(value) is bytes:
            try:
                return PeerId(value)
            except ValueError as exc:
                raise WireError(f"{where}: {exc}") from None
    elif origin is tuple:
        args = typing.get_args(hint)
        if type(value) is list:
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(_from_cbor(v, args[0], f"{where}[]") for v in value)
            if len(args) == len(value):
                return tuple(_from_cbor(v, a, f"{where}[]") for v, a in zip(value, args))
    elif origin is list:
        if type(value) is list:
            (arg,) = typing.get_args(hint)
            return [_from_cbor(v, arg, f"{where}[]") for v in value]
    elif origin is dict:
        if type(value) is dict:
            karg, varg = typing.get_args(hint)
            return {
                _from_cbor(k, karg, f"{where}{{}}"): _from_cbor(v, varg, f"{where}[{k!r}]")
                for k, v in value.items()
            }
    elif dataclasses.is_dataclass(hint):
        if type(value) is dict:
            return _build(hint, typing.get_type_hints(hint), value, where)
    else:  # pragma: no cover - a registration mistake, not a wire problem
        raise TypeError(f"unsupported field type {hint!r} at {where}")
    raise WireError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {type(value).__name__}")


def _build(cls: type, hints: dict[str, Any], body: dict, where: str) -> Any:
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in body:
            kwargs[f.name] = _from_cbor(body[f.name], hints[f.name], f"{where}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise WireError(f"{where}: missing field {f.name!r}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:  # __post_init__ validation
        raise WireError(f"{where}: {exc}") from None


def decode(data: bytes, *, max_size: int = DEFAULT_MAX_MESSAGE) -> Envelope:
    """Decode one frame from untrusted bytes. Raises only ``WireError``."""
    if len(data) > max_size:
        raise MessageTooLarge(f"frame of {len(data)} bytes is over the {max_size}-byte limit")
    try:
        outer = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises several types on garbage
        raise WireError(f"not CBOR: {exc}") from None
    if type(outer) is not list or len(outer) != 7:
        raise WireError("envelope is not a 7-element array")
    version, kind, request_id, code, body, signer, signature = outer
    if version != WIRE_VERSION or type(version) is not int:
        raise UnknownVersion(f"wire version {version!r} is not supported (this peer speaks {WIRE_VERSION})")
    if type(kind) is not int or kind not in Kind._value2member_map_:
        raise WireError(f"unknown envelope kind {kind!r}")
    if type(request_id) is not int or not 0 <= request_id < 2**64:
        raise WireError("request id is not a 64-bit unsigned integer")
    if type(code) is not int or code not in _BY_CODE:
        raise UnknownMessageType(f"unknown message type code {code!r}")
    if type(body) is not bytes:
        raise WireError("body is not a byte string")
    spec = _BY_CODE[code]
    verified = _verify(spec, code, body, signer, signature)
    try:
        fields = cbor2.loads(body)
    except Exception as exc:
        raise WireError(f"{spec.cls.__name__} body is not CBOR: {exc}") from None
    if type(fields) is not dict:
        raise WireError(f"{spec.cls.__name__} body is not a map")
    msg = _build(spec.cls, spec.hints, fields, spec.cls.__name__)
    return Envelope(Kind(kind), request_id, msg, verified, len(data))


def _verify(spec: MessageSpec, code: int, body: bytes, signer: Any, signature: Any) -> PeerId | None:
    if signer is None and signature is None:
        if spec.signed:
            raise BadSignature(f"{spec.cls.__name__} must be signed and is not")
        return None
    if type(signer) is not bytes or type(signature) is not bytes:
        raise BadSignature("signer and signature must both be byte strings")
    try:
        peer = PeerId(signer)
    except ValueError:
        raise BadSignature("signer is not an ed25519 peer ID") from None
    if not peer.verify(_signed_bytes(code, body), signature):
        raise BadSignature(f"{spec.cls.__name__} signature does not verify for {peer}")
    return peer


# --- forwardable claims -----------------------------------------------------


def sign_claim(identity: Identity, msg: Any) -> bytes:
    """A signed, self-contained statement by ``identity`` that others can forward."""
    return encode(msg, identity=identity)


def open_claim(data: bytes, expected: type[T], *, max_size: int = DEFAULT_MAX_MESSAGE) -> tuple[PeerId, T]:
    """Verify a claim made by ``sign_claim``; return (signer, message)."""
    env = decode(data, max_size=max_size)
    if env.signer is None:
        raise BadSignature("claim is not signed")
    if not isinstance(env.message, expected):
        raise WireError(f"claim holds a {env.type_name}, expected {expected.__name__}")
    return env.signer, env.message
