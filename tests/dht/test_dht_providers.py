"""Provider records: expiry, bounds, the ADD_PROVIDER rule, the republish schedule."""

import random

import pytest

from p2pcompute.dht.providers import Announce, ProviderStore, Republisher, accept_add_provider
from p2pcompute.errors import UserError
from p2pcompute.node.identity import PeerId

RNG = random.Random(1)
P = [PeerId.from_public_key(RNG.randbytes(32)) for _ in range(10)]


def test_providers_expire_after_ttl_unless_reannounced():
    store = ProviderStore(ttl=100.0)
    store.add(b"cid", P[0], 0.0, [b"\x04\x7f\x00\x00\x01"])
    store.add(b"cid", P[1], 50.0)
    assert [r.provider for r in store.get(b"cid", 60.0)] == [P[1], P[0]]
    assert store.get(b"cid", 60.0)[1].addrs == (b"\x04\x7f\x00\x00\x01",)
    assert [r.provider for r in store.get(b"cid", 100.0)] == [P[1]]  # P0 expired at 100
    store.add(b"cid", P[1], 120.0)  # re-announced: lives on
    assert store.next_expiry() == 100.0
    assert store.expire(149.0) == 1
    assert [r.provider for r in store.get(b"cid", 160.0)] == [P[1]]
    assert store.expire(220.0) == 1
    assert store.get(b"cid", 220.0) == [] and store.keys() == []
    assert store.next_expiry() is None


def test_store_is_bounded():
    store = ProviderStore(ttl=1000.0, max_keys=2, max_per_key=3)
    for i in range(5):
        store.add(b"k", P[i], float(i))
    assert [r.provider for r in store.get(b"k", 10.0)] == [P[4], P[3], P[2]]
    store.add(b"a", P[0], 10.0)
    store.add(b"b", P[0], 11.0)
    assert sorted(store.keys()) == [b"a", b"b"]  # k, the least recently announced, went
    store.add(b"a", P[1], 12.0, [bytes([i]) for i in range(50)])
    assert len(store.get(b"a", 13.0)[0].addrs) == 8
    assert len(store.get(b"a", 13.0, limit=1)) == 1


def test_addresses_are_bounded_in_size_and_number():
    store = ProviderStore(ttl=1000.0)
    huge, fine = b"\x04" * (500 * 1024), b"\x04\x7f\x00\x00\x01\x06\x0f\xa0"
    assert store.add(b"k", P[0], 0.0, [huge] * 8 + [fine, fine, b""] + [bytes([i]) * 256 for i in range(1, 20)])
    addrs = store.get(b"k", 1.0)[0].addrs
    assert addrs[0] == fine and len(addrs) == 8 and max(map(len, addrs)) <= 256
    assert store.bytes < 4096
    assert not store.add(b"x" * 1025, P[0], 0.0) and store.refused == 1  # a key over 1024 bytes


def test_memory_budget_one_provider_only_displaces_its_own_records():
    store = ProviderStore(ttl=1000.0, max_bytes=200_000)  # 12,500 bytes per provider
    honest = [b"honest-%d" % i for i in range(5)]
    for key in honest:
        assert store.add(key, P[1], 0.0, [b"\x04\x7f\x00\x00\x01"])
    for i in range(10_000):  # the flood: big records for ever new keys, from one peer
        store.add(b"flood-%d" % i, P[0], 1.0 + i, [bytes([j]) * 256 for j in range(8)])
        assert store.provider_bytes(P[0]) <= store.max_bytes_per_provider
    assert store.bytes <= store.max_bytes
    assert all(store.get(key, 5.0) for key in honest)  # the honest records are still there
    assert store.get(b"flood-9999", 10_001.0)  # the flooder's newest record stays
    assert not store.get(b"flood-0", 2.0)  # its oldest made room


def test_memory_budget_many_providers_evicts_the_least_recently_announced_key():
    store = ProviderStore(ttl=1e9, max_bytes=100_000, max_bytes_per_provider=100_000)
    for i in range(1000):
        store.add(b"key-%d" % i, P[i % 10], float(i), [bytes([1]) * 200])
        assert store.bytes <= 100_000
    assert not store.get(b"key-0", 1e3) and store.get(b"key-999", 1e3)
    # the accounting matches a recount from scratch, and shrinks to nothing as records expire
    recount = sum(250 + len(k) + sum(r.cost(k) for r in store._keys[k].values()) for k in store.keys())
    assert recount == store.bytes
    store.expire(2e9)
    assert store.bytes == 0 and len(store) == 0 and store.provider_bytes(P[0]) == 0


def test_add_provider_only_for_oneself():
    announced = [(P[0], (b"a",)), (P[1], (b"b",)), (P[0], (b"c",))]
    assert accept_add_provider(P[0], announced) == [(P[0], (b"a",)), (P[0], (b"c",))]
    assert accept_add_provider(P[2], announced) == []


def test_republish_schedule():
    rep = Republisher(rng=random.Random(3), interval=100.0, jitter=0.1)
    assert rep.provide(b"x", 0.0) == [Announce(b"x")]
    rep.provide(b"y", 10.0)
    first = rep.next_deadline()
    assert 90.0 <= first <= 100.0
    assert rep.due(first - 0.01) == []
    assert rep.due(100.0) == [Announce(b"x")]  # x falls due in [90, 100], y in (100, 110]
    assert rep.due(110.0) == [Announce(b"y")]
    assert 190.0 < rep.next_deadline() <= 200.0
    rep.stop(b"x")
    assert b"x" not in rep and len(rep) == 1
    assert rep.due(1000.0) == [Announce(b"y")]  # x is gone; y once, then rescheduled
    assert rep.due(1000.0) == []


def test_republisher_is_bounded_and_compacts():
    rep = Republisher(rng=random.Random(0), interval=10.0, max_keys=2)
    rep.provide(b"a", 0.0)
    rep.provide(b"b", 0.0)
    with pytest.raises(UserError):
        rep.provide(b"c", 0.0)
    for t in range(200):
        rep.provide(b"a", float(t))  # re-providing reschedules without growing without bound
    assert len(rep._heap) <= 2 * len(rep) + 64 + 1
    assert rep.due(1000.0) == [Announce(b"b"), Announce(b"a")]
