"""Kademlia keys: 256-bit integers from SHA-256, XOR distance, common prefixes.

Every DHT key is the SHA-256 of some bytes, read as a big-endian 256-bit
integer, exactly as libp2p (go-libp2p-kbucket ``ConvertKey`` /
``ConvertPeerID``) does:

* a peer's key is the SHA-256 of its peer ID *multihash bytes*
  (``PeerId.raw``), not of the base58 text;
* a content key is the SHA-256 of the bytes carried in the kad message's
  ``key`` field (for provider records the CID's multihash, for values the
  record key such as ``/pk/...``).

Keys are plain ``int`` values in ``[0, 2**256)`` so that the distance is one
XOR and comparisons are native; ``key_bytes`` gives the 32-byte form.
The distance ``a ^ b`` is a metric (zero only for equal keys, symmetric,
and ``d(a, c) <= d(a, b) + d(b, c)``, in fact ``d(a, c) == d(a, b) ^ d(b, c)``),
and for a fixed target it is injective, so peers with distinct keys are
totally ordered by closeness with no ties.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Iterable
from itertools import islice
from typing import Protocol

KEY_BITS = 256
KEY_BYTES = KEY_BITS // 8
MAX_KEY = (1 << KEY_BITS) - 1

Key = int  # a 256-bit Kademlia key


class HasRaw(Protocol):
    """Anything named by raw peer-ID bytes (``PeerId``)."""

    @property
    def raw(self) -> bytes: ...


def key_of(data: bytes) -> Key:
    """The Kademlia key of the bytes in a message's ``key`` field."""
    return int.from_bytes(hashlib.sha256(data).digest(), "big")


_PEER_KEYS: dict[HasRaw, Key] = {}
MAX_PEER_KEYS = 1 << 16


def peer_key(peer: HasRaw) -> Key:
    """The Kademlia key of a peer: SHA-256 of its peer ID multihash bytes.

    Memoised by the peer itself (a ``PeerId`` hashes in C): tables and
    lookups ask for it millions of times in a simulation. Bounded: past
    ``MAX_PEER_KEYS`` the older half is forgotten.
    """
    key = _PEER_KEYS.get(peer)
    if key is None:
        key = key_of(peer.raw)
        if len(_PEER_KEYS) >= MAX_PEER_KEYS:
            for old in list(islice(_PEER_KEYS, MAX_PEER_KEYS // 2)):
                del _PEER_KEYS[old]
        _PEER_KEYS[peer] = key
    return key


def key_bytes(key: Key) -> bytes:
    return key.to_bytes(KEY_BYTES, "big")


def distance(a: Key, b: Key) -> int:
    """XOR distance between two keys."""
    return a ^ b


def common_prefix_len(a: Key, b: Key) -> int:
    """Number of leading bits ``a`` and ``b`` share (256 when equal)."""
    return KEY_BITS - (a ^ b).bit_length()


def closest(target: Key, peers: Iterable[HasRaw], n: int) -> list:
    """The ``n`` peers closest to ``target``, closest first."""
    return heapq.nsmallest(n, peers, key=lambda p: peer_key(p) ^ target)


def sort_by_distance(target: Key, peers: Iterable[HasRaw]) -> list:
    return sorted(peers, key=lambda p: peer_key(p) ^ target)


def random_key_with_cpl(base: Key, cpl: int, rng: random.Random) -> Key:
    """A random key sharing exactly ``cpl`` leading bits with ``base``."""
    if not 0 <= cpl < KEY_BITS:
        raise ValueError(f"cpl must be in [0, {KEY_BITS})")
    low_bits = KEY_BITS - cpl - 1
    flip = 1 << low_bits
    prefix = (base >> (low_bits + 1)) << (low_bits + 1)
    return prefix | ((base & flip) ^ flip) | rng.getrandbits(low_bits)


def random_preimage_with_cpl(
    base: Key, cpl: int, rng: random.Random, max_tries: int = 1 << 20, prefix: bytes = b""
) -> bytes | None:
    """``prefix`` + 32 random bytes whose key shares exactly ``cpl`` leading bits with ``base``.

    FIND_NODE carries the *bytes* whose hash is the target, so refreshing
    bucket ``cpl`` needs such a pre-image; finding one takes about
    ``2 ** (cpl + 1)`` hashes, hence the bound. ``None`` if none was found.
    """
    for _ in range(max_tries):
        candidate = prefix + rng.getrandbits(KEY_BITS).to_bytes(KEY_BYTES, "big")
        if common_prefix_len(base, key_of(candidate)) == cpl:
            return candidate
    return None
