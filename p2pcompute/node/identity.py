"""Peer identity: an ed25519 key pair and its libp2p peer ID.

A peer ID is the libp2p one for an ed25519 key: the identity multihash of the
protobuf-encoded public key, written in base58btc (``12D3KooW...``). Because
the public key is inside the ID, anyone can check a signature made by a peer
from its ID alone, with no lookup.

The key lives in ``<data dir>/identity.key`` (mode 0600) as the protobuf
``PrivateKey`` that libp2p and kubo use (type Ed25519, 64 bytes: seed then
public key). It is made on first start and reused, so the ID survives
restarts.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

import base58
import nacl.exceptions
import nacl.signing

from ..errors import ConfigError

KEY_FILE = "identity.key"
# protobuf PublicKey{Type: Ed25519 (1), Data: <32 bytes>}
_PUB_PREFIX = bytes([0x08, 0x01, 0x12, 0x20])
# protobuf PrivateKey{Type: Ed25519 (1), Data: <64 bytes>}
_PRIV_PREFIX = bytes([0x08, 0x01, 0x12, 0x40])
# multihash: identity function (0x00), length 36
_MH_PREFIX = bytes([0x00, 0x24])


class PeerId(bytes):
    """A libp2p peer ID: the multihash bytes themselves. Ordered by its bytes.

    Our peers use ed25519 keys (``12D3KooW...``): the ID holds the public key,
    so ``verify`` checks their signatures from the ID alone. Other libp2p
    peers (a kubo with an RSA key, ``Qm...``; secp256k1, ``16Uiu2...``) have
    IDs too, and we may exchange blocks or DHT messages with them, but they
    cannot sign our claims: ``verify`` is False for them.

    A ``bytes`` subclass so that hashing and comparison run in C: peer IDs
    are the keys of every table, and simulations do tens of millions of
    lookups. ``bytes(peer_id)`` gives plain ``bytes``.
    """

    def __new__(cls, raw: bytes) -> PeerId:
        if len(raw) >= 3 and raw[0] == 0x00 and raw[1] == len(raw) - 2 and raw[1] <= 42:
            return super().__new__(cls, raw)  # identity multihash of a small protobuf public key
        if len(raw) == 34 and raw[:2] == b"\x12\x20":
            return super().__new__(cls, raw)  # sha2-256 multihash of a larger key (RSA)
        raise ValueError("not a libp2p peer ID multihash")

    @property
    def raw(self) -> bytes:
        """The multihash bytes: the ID itself (a ``PeerId`` is ``bytes``), no copy."""
        return self

    def __reduce__(self) -> tuple:
        return (PeerId, (bytes(self),))

    @property
    def is_ed25519(self) -> bool:
        return len(self) == 38 and self.startswith(_MH_PREFIX + _PUB_PREFIX)

    @classmethod
    def from_public_key(cls, public_key: bytes) -> PeerId:
        if len(public_key) != 32:
            raise ValueError("an ed25519 public key has 32 bytes")
        return cls(_MH_PREFIX + _PUB_PREFIX + public_key)

    @classmethod
    def from_string(cls, text: str) -> PeerId:
        try:
            raw = base58.b58decode(text.strip())
            return cls(raw)
        except ValueError as exc:
            raise ValueError(f"{text!r} is not a libp2p peer ID (12D3KooW... or Qm...)") from exc

    @property
    def public_key(self) -> bytes:
        """The ed25519 public key inside the ID (ValueError for other key types)."""
        if not self.is_ed25519:
            raise ValueError(f"{self} is not an ed25519 peer ID")
        return bytes(self[len(_MH_PREFIX) + len(_PUB_PREFIX) :])

    def verify(self, data: bytes, signature: bytes) -> bool:
        """True when ``signature`` over ``data`` was made by this peer's (ed25519) key."""
        if not self.is_ed25519:
            return False
        try:
            nacl.signing.VerifyKey(self.public_key).verify(data, signature)
            return True
        except (nacl.exceptions.BadSignatureError, ValueError):
            return False

    @cached_property
    def text(self) -> str:
        return base58.b58encode(bytes(self)).decode("ascii")

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"PeerId({self.short})"

    @property
    def short(self) -> str:
        """The last characters of the ID, enough to tell peers apart in logs."""
        return "…" + self.text[-8:]


def check_private_file(path: Path) -> None:
    """Refuse a secret file other users can read or write (as ssh does with keys): ConfigError saying how to fix it.

    A key others could read may already be copied; fixing its mode silently
    would hide that. The user decides: ``chmod 600`` it, or move it away to
    make a new one.
    """
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigError(
            f"{path} is open to other users (mode {mode:o}), so its key may be known to them; "
            f"run `chmod 600 {path}` if it is still secret, or move it away to make a new one"
        )


class Identity:
    """This peer's signing key and peer ID."""

    def __init__(self, signing_key: nacl.signing.SigningKey) -> None:
        self._key = signing_key
        self.public_key = bytes(signing_key.verify_key)
        self.peer_id = PeerId.from_public_key(self.public_key)

    @classmethod
    def generate(cls) -> Identity:
        return cls(nacl.signing.SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """A deterministic identity (simulations, tests): ``seed`` is 32 bytes."""
        return cls(nacl.signing.SigningKey(seed))

    @property
    def seed(self) -> bytes:
        return bytes(self._key)

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data).signature

    def to_protobuf(self) -> bytes:
        return _PRIV_PREFIX + self.seed + self.public_key

    @classmethod
    def from_protobuf(cls, data: bytes) -> Identity:
        if len(data) != 68 or not data.startswith(_PRIV_PREFIX):
            raise ValueError("not a protobuf-encoded ed25519 private key")
        ident = cls.from_seed(data[4:36])
        if ident.public_key != data[36:]:
            raise ValueError("private key file is inconsistent (public half does not match)")
        return ident

    @classmethod
    def load_or_create(cls, data_dir: Path) -> Identity:
        """Load ``<data_dir>/identity.key``, making it (mode 0600) on first use."""
        path = Path(data_dir) / KEY_FILE
        if path.exists():
            check_private_file(path)
            try:
                return cls.from_protobuf(path.read_bytes())
            except ValueError as exc:
                raise ConfigError(f"{path}: {exc}; move it away to make a new identity") from exc
        path.parent.mkdir(parents=True, exist_ok=True)
        ident = cls.generate()
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(ident.to_protobuf())
        os.replace(tmp, path)
        return ident
