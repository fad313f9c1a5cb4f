"""Kademlia keys: SHA-256 derivation and properties of the XOR distance."""

import hashlib
import random

from hypothesis import given
from hypothesis import strategies as st

from p2pcompute.dht import keys as kmod
from p2pcompute.dht.keys import (
    KEY_BITS,
    MAX_KEY,
    closest,
    common_prefix_len,
    distance,
    key_bytes,
    key_of,
    peer_key,
    random_key_with_cpl,
    random_preimage_with_cpl,
    sort_by_distance,
)
from p2pcompute.node.identity import Identity, PeerId

keys = st.integers(min_value=0, max_value=MAX_KEY)


def test_peer_key_is_sha256_of_the_multihash_bytes():
    peer = Identity.from_seed(bytes(range(32))).peer_id
    assert peer_key(peer) == int.from_bytes(hashlib.sha256(peer.raw).digest(), "big")
    assert key_bytes(peer_key(peer)) == hashlib.sha256(peer.raw).digest()
    # not the hash of the base58 text
    assert peer_key(peer) != key_of(peer.text.encode())


def test_peer_key_memo_is_bounded_and_right(monkeypatch):
    monkeypatch.setattr(kmod, "MAX_PEER_KEYS", 8)
    monkeypatch.setattr(kmod, "_PEER_KEYS", {})
    rng = random.Random(4)
    peers = [PeerId.from_public_key(rng.randbytes(32)) for _ in range(30)]
    for _ in range(2):
        for p in peers:
            assert peer_key(p) == key_of(p.raw)
            assert len(kmod._PEER_KEYS) <= 8


def test_key_matches_py_libp2p_distance():
    from libp2p.kad_dht.utils import xor_distance

    a, b = b"some content key", b"another key"
    ours = distance(key_of(a), key_of(b))
    theirs = xor_distance(hashlib.sha256(a).digest(), hashlib.sha256(b).digest())
    assert ours == theirs


@given(keys, keys)
def test_distance_symmetric_and_zero_only_for_equal(a, b):
    assert distance(a, b) == distance(b, a)
    assert (distance(a, b) == 0) == (a == b)
    assert 0 <= distance(a, b) <= MAX_KEY


@given(keys, keys, keys)
def test_triangle_inequality_and_xor_identity(a, b, c):
    assert distance(a, c) <= distance(a, b) + distance(b, c)
    assert distance(a, c) == distance(a, b) ^ distance(b, c)


@given(keys, keys, keys)
def test_unidirectional_distinct_keys_never_tie(target, a, b):
    # For a fixed target, distance is injective: distinct keys are strictly ordered.
    if a != b:
        assert distance(target, a) != distance(target, b)


@given(keys, keys, keys)
def test_longer_common_prefix_means_closer(target, a, b):
    ca, cb = common_prefix_len(target, a), common_prefix_len(target, b)
    if ca > cb:
        assert distance(target, a) < distance(target, b)
    # the shared-prefix relation is an ultrametric
    assert common_prefix_len(a, b) >= min(ca, cb)


@given(keys, keys)
def test_common_prefix_len(a, b):
    cpl = common_prefix_len(a, b)
    assert 0 <= cpl <= KEY_BITS
    assert (cpl == KEY_BITS) == (a == b)
    if cpl < KEY_BITS:
        shift = KEY_BITS - cpl
        assert a >> shift == b >> shift
        assert (a >> (shift - 1)) != (b >> (shift - 1))


@given(st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=40, unique=True), keys, st.integers(1, 50))
def test_closest_is_a_prefix_of_the_strict_order(pubkeys, target, n):
    peers = [PeerId.from_public_key(pk) for pk in pubkeys]
    ordered = sort_by_distance(target, peers)
    dists = [distance(target, peer_key(p)) for p in ordered]
    assert dists == sorted(dists) and len(set(dists)) == len(dists)
    assert closest(target, peers, n) == ordered[:n]


@given(keys, st.integers(0, KEY_BITS - 1), st.integers(0, 2**32))
def test_random_key_with_cpl(base, cpl, seed):
    key = random_key_with_cpl(base, cpl, random.Random(seed))
    assert common_prefix_len(base, key) == cpl
    assert 0 <= key <= MAX_KEY


def test_random_preimage_with_cpl():
    rng = random.Random(3)
    base = rng.getrandbits(KEY_BITS)
    for cpl in range(8):
        data = random_preimage_with_cpl(base, cpl, rng)
        assert data is not None and common_prefix_len(base, key_of(data)) == cpl
    assert random_preimage_with_cpl(base, 200, rng, max_tries=10) is None


def test_preimage_table_entries_are_the_first_counters_whatever_the_history(monkeypatch):
    """Refresh keys depend on the rng only: a warm table answers as a fresh one would."""
    prefix = b"\x01\x02"
    base = random.Random(8).getrandbits(KEY_BITS)
    monkeypatch.setattr(kmod, "_TABLES", {})
    cold = [random_preimage_with_cpl(base, cpl, random.Random(cpl), prefix=prefix) for cpl in range(16)]
    table = kmod.preimage_table(prefix)
    for cpl, data in enumerate(cold):
        assert data.startswith(prefix) and len(data) == len(prefix) + 32
        assert common_prefix_len(base, key_of(data)) == cpl
    for wanted in random.Random(9).sample(range(1 << 16), 50):  # warm it up with other prefixes
        table.counter(wanted)
    warm = [random_preimage_with_cpl(base, cpl, random.Random(cpl), prefix=prefix) for cpl in range(16)]
    assert warm == cold
    for data in cold[:3]:  # no smaller counter has the same 16-bit key prefix
        wanted = key_of(data) >> (KEY_BITS - 16)
        found = int.from_bytes(data[len(prefix):], "big")
        assert all(key_of(prefix + i.to_bytes(32, "big")) >> (KEY_BITS - 16) != wanted for i in range(found))
