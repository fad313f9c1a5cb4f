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
from array import array
from collections.abc import Iterable
from itertools import islice
from typing import Protocol

KEY_BITS = 256
KEY_BYTES = KEY_BITS // 8
MAX_KEY = (1 << KEY_BITS) - 1

Key = int  # a 256-bit Kademlia key

PREFIX_BITS = 16  # key prefixes with a pre-image table entry (refresh keys)
MAX_PREIMAGE_TABLES = 4
ED25519_ID_PREFIX = bytes([0x00, 0x24, 0x08, 0x01, 0x12, 0x20])  # an ed25519 peer ID's first bytes


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
    """``prefix`` + 32 bytes whose key shares exactly ``cpl`` leading bits with ``base``.

    FIND_NODE carries the *bytes* whose hash is the target, so refreshing
    bucket ``cpl`` needs such a pre-image. For ``cpl < 16`` whether a key
    qualifies depends on its first 16 bits only: ``rng`` picks a 16-bit
    prefix that qualifies, uniformly, and the pre-image comes from that
    prefix's entry in a ``PreimageTable`` (as libp2p's refresh does with its
    shipped table). Deeper buckets take a brute-force search of at most
    ``max_tries`` hashes (about ``2 ** (cpl + 1)`` expected); ``None`` if
    that found nothing.
    """
    if 0 <= cpl < PREFIX_BITS:
        top = base >> (KEY_BITS - PREFIX_BITS)
        free = PREFIX_BITS - cpl - 1  # bits after the one that must differ
        wanted = ((top >> free) ^ 1) << free | rng.getrandbits(free)
        return preimage_table(prefix).preimage(wanted)
    for _ in range(max_tries):
        candidate = prefix + rng.getrandbits(KEY_BITS).to_bytes(KEY_BYTES, "big")
        if common_prefix_len(base, key_of(candidate)) == cpl:
            return candidate
    return None


class PreimageTable:
    """For each 16-bit key prefix, the smallest counter whose pre-image has a key with that prefix.

    The pre-image of counter ``i`` is ``prefix + i.to_bytes(32)``. Entries are
    found lazily, by hashing counters 0, 1, 2, ... in order until the asked
    prefix has one, noting every prefix met on the way. An entry is the
    *smallest* counter with its prefix, so what ``preimage`` returns does
    not depend on what was asked before: two seeded runs in one process
    replay identically. The table is bounded (2 ** 16 entries), and so is
    the scan: all prefixes are covered after a fixed number of counters
    (767,695 for the ed25519 peer-ID prefix: about a second, once per
    process, spread over the first few hundred refreshes).
    """

    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix
        self.first = array("q", [-1]) * (1 << PREFIX_BITS)
        self.scanned = 0  # counters hashed so far
        self.missing = 1 << PREFIX_BITS

    def counter(self, wanted: int) -> int:
        """The smallest counter whose pre-image's key starts with the 16 bits ``wanted``."""
        first = self.first
        if first[wanted] < 0:
            sha, prefix, i = hashlib.sha256, self.prefix, self.scanned
            while first[wanted] < 0:
                digest = sha(prefix + i.to_bytes(KEY_BYTES, "big")).digest()
                got = digest[0] << 8 | digest[1]  # the first PREFIX_BITS bits of the key
                if first[got] < 0:
                    first[got] = i
                    self.missing -= 1
                i += 1
            self.scanned = i
        return first[wanted]

    def preimage(self, wanted: int) -> bytes:
        return self.prefix + self.counter(wanted).to_bytes(KEY_BYTES, "big")


_TABLES: dict[bytes, PreimageTable] = {}


def preimage_table(prefix: bytes) -> PreimageTable:
    """The process-wide table for pre-images starting with ``prefix`` (a few prefixes kept)."""
    table = _TABLES.get(prefix)
    if table is None:
        if len(_TABLES) >= MAX_PREIMAGE_TABLES:
            del _TABLES[next(iter(_TABLES))]
        table = _TABLES[prefix] = PreimageTable(prefix)
    return table
