"""replicas.py: the k closest peers to a job id by XOR of SHA-256 keys, and who takes a job over."""

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pcompute.node.identity import Identity
from p2pcompute.scheduler.replicas import closest, job_key, peer_key, pick, successor

PEERS = [Identity.from_seed(bytes([i]) * 32).peer_id for i in range(12)]


def test_keys_are_sha256_of_the_job_id_and_of_the_peer_id_bytes():
    assert job_key("j1") == int.from_bytes(hashlib.sha256(b"j1").digest(), "big")
    assert peer_key(PEERS[0]) == int.from_bytes(hashlib.sha256(PEERS[0].raw).digest(), "big")


@settings(max_examples=50, deadline=None)
@given(st.text(min_size=1, max_size=40), st.sets(st.integers(0, 11), min_size=1), st.integers(1, 5))
def test_closest_are_the_k_nearest_by_xor_in_order_whatever_the_input_order(job, chosen, k):
    peers = [PEERS[i] for i in sorted(chosen)]
    got = closest(job, peers, k)
    assert got == closest(job, list(reversed(peers)), k)
    assert len(got) == min(k, len(peers))
    dist = [peer_key(p) ^ job_key(job) for p in got]
    assert dist == sorted(dist)
    rest = [peer_key(p) ^ job_key(job) for p in peers if p not in got]
    assert all(d < r for d in dist for r in rest)


@settings(max_examples=50, deadline=None)
@given(st.text(min_size=1, max_size=40), st.sets(st.integers(0, 11), min_size=1, max_size=3),
       st.sets(st.integers(0, 11)))
def test_the_successor_is_the_closest_live_replica_and_every_replica_agrees(job, replica_ids, alive_ids):
    replicas = [PEERS[i] for i in replica_ids]
    alive = {PEERS[i] for i in alive_ids}
    heir = successor(job, replicas, alive)
    live = [p for p in replicas if p in alive]
    if not live:
        assert heir is None
    else:
        assert heir in live and heir == closest(job, live, 1)[0]
        assert successor(job, list(reversed(replicas)), alive) == heir


@settings(max_examples=50, deadline=None)
@given(st.text(min_size=1, max_size=40), st.sets(st.integers(0, 11), min_size=1), st.sets(st.integers(0, 11)))
def test_pick_passes_over_the_silent_and_takes_the_next_closest_in_their_place(job, live_ids, passed_ids):
    live = [PEERS[i] for i in sorted(live_ids)]
    passed = {PEERS[i] for i in passed_ids}
    got = pick(job, live, 3, passed)
    assert not passed & set(got)
    assert got == closest(job, [p for p in live if p not in passed], 3)
    assert len(got) == min(3, len([p for p in live if p not in passed]))
    assert pick(job, live, 3) == closest(job, live, 3)
