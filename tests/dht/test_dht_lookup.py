"""The iterative lookup state machine: unit behaviour and runs on a 200-peer synthetic network."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kad_harness import build, measure, random_peer, run_lookup
from p2pcompute.dht.keys import peer_key
from p2pcompute.dht.lookup import Lookup, ProviderLookup, Query, State, ValueLookup
from p2pcompute.dht.records import make_record, newer
from p2pcompute.node.identity import Identity

RNG = random.Random(42)
PEERS = [random_peer(RNG) for _ in range(60)]
TARGET = RNG.getrandbits(256)


def by_distance(peers, target=TARGET):
    return sorted(peers, key=lambda p: peer_key(p) ^ target)


# --- unit behaviour -------------------------------------------------------------


def test_no_seeds_finishes_at_once():
    lookup = Lookup(TARGET, [], now=0.0)
    assert lookup.next(0.0) == []
    assert lookup.finished and not lookup.timed_out and lookup.result() == []


def test_queries_closest_first_alpha_at_a_time():
    seeds = PEERS[:10]
    lookup = Lookup(TARGET, seeds, now=0.0, k=5, alpha=2, query_timeout=4.0)
    first = lookup.next(0.0)
    assert [q.peer for q in first] == by_distance(seeds)[:2]
    assert all(q.deadline == 4.0 for q in first)
    assert lookup.next(0.5) == []  # at capacity
    lookup.on_response(first[0].peer, [], 1.0)
    [third] = lookup.next(1.0)
    assert third.peer == by_distance(seeds)[2]


def test_terminates_exactly_when_the_k_closest_answered():
    seeds = PEERS[:8]
    ordered = by_distance(seeds)
    lookup = Lookup(TARGET, seeds, now=0.0, k=3, alpha=3)
    queries = lookup.next(0.0)
    assert {q.peer for q in queries} == set(ordered[:3])
    lookup.on_response(ordered[0], [], 1.0)
    lookup.on_response(ordered[1], [], 1.0)
    assert lookup.next(1.0) == [] and not lookup.finished
    lookup.on_response(ordered[2], [], 1.0)
    assert lookup.next(1.0) == []
    assert lookup.finished and lookup.result() == ordered[:3]
    assert lookup.queries == 3 and lookup.hops == 1


def test_closer_peers_are_followed_and_hops_counted():
    ordered = by_distance(PEERS)
    far, near = ordered[30:33], ordered[:3]
    lookup = Lookup(TARGET, far, now=0.0, k=3, alpha=3)
    for q in lookup.next(0.0):
        lookup.on_response(q.peer, near if q.peer == far[0] else [], 1.0)
    queries = lookup.next(1.0)
    assert {q.peer for q in queries} == set(near)
    for q in queries:
        lookup.on_response(q.peer, [], 2.0)
    lookup.next(2.0)
    assert lookup.finished and lookup.result() == near and lookup.hops == 2


def test_timeouts_are_data_and_late_answers_count():
    ordered = by_distance(PEERS[:6])
    lookup = Lookup(TARGET, ordered, now=0.0, k=2, alpha=1, query_timeout=5.0)
    [q] = lookup.next(0.0)
    assert q.peer == ordered[0] and lookup.next_deadline() == 5.0
    assert lookup.next(4.9) == []
    [q2] = lookup.next(5.0)  # the first query expired: move on
    assert q2.peer == ordered[1] and lookup.state_of(ordered[0]) is State.FAILED
    assert lookup.failures == 1 and lookup.failed() == [ordered[0]]
    lookup.on_response(ordered[0], [], 6.0)  # late, still taken
    lookup.on_response(ordered[1], [], 6.0)
    assert lookup.next(6.0) == [] and lookup.finished
    assert lookup.result() == ordered[:2]


def test_failure_moves_on_to_the_next_candidate():
    ordered = by_distance(PEERS[:4])
    lookup = Lookup(TARGET, ordered, now=0.0, k=2, alpha=2)
    lookup.next(0.0)
    lookup.on_failure(ordered[0], 0.1)
    [q] = lookup.next(0.1)
    assert q.peer == ordered[2]
    for p in ordered[1:3]:
        lookup.on_response(p, [], 0.2)
    lookup.next(0.2)
    assert lookup.finished and lookup.result() == ordered[1:3]


def test_whole_lookup_deadline():
    lookup = Lookup(TARGET, PEERS[:5], now=10.0, timeout=30.0, query_timeout=100.0)
    lookup.next(10.0)
    assert lookup.next_deadline() == 40.0
    assert lookup.next(40.0) == [] and lookup.finished and lookup.timed_out


def test_local_peer_is_never_queried_and_answers_are_bounded():
    local = PEERS[0]
    lookup = Lookup(TARGET, PEERS[:3], now=0.0, k=3, alpha=1, local=local, max_closer=5, max_candidates=6)
    [q] = lookup.next(0.0)
    assert q.peer != local
    flood = [random_peer(RNG) for _ in range(500)]
    lookup.on_response(q.peer, [local] + flood, 1.0)
    assert lookup.state_of(local) is None
    assert sum(lookup.state_of(p) is not None for p in flood) <= 5
    assert sum(lookup.state_of(p) is not None for p in PEERS[:3] + flood) <= 6


def test_query_budget_ends_the_lookup():
    lookup = Lookup(TARGET, PEERS[:30], now=0.0, k=20, alpha=3, max_queries=4)
    sent = []
    for _ in range(10):
        for q in lookup.next(1.0):
            sent.append(q.peer)
            lookup.on_failure(q.peer, 1.0)
    assert len(sent) == 4 and lookup.finished


def test_stalled_lookup_widens_to_k_in_flight():
    ordered = by_distance(PEERS[:30])
    lookup = Lookup(TARGET, ordered, now=0.0, k=10, alpha=2)
    in_flight = {q.peer for q in lookup.next(0.0)}
    assert len(in_flight) == 2
    # one answer that brings nothing closer: still alpha in flight
    lookup.on_response(in_flight.pop(), [], 0.0)
    in_flight |= {q.peer for q in lookup.next(0.0)}
    assert len(in_flight) == 2
    # alpha such answers in a row: stalled, so every remaining one of the k closest is asked
    lookup.on_response(in_flight.pop(), [], 0.0)
    in_flight |= {q.peer for q in lookup.next(0.0)}
    assert in_flight == set(ordered[:10]) - {p for p in ordered[:10] if lookup.state_of(p) is State.SUCCEEDED}
    assert len(in_flight) == 8


def test_unsolicited_answers_are_ignored():
    lookup = Lookup(TARGET, PEERS[:3], now=0.0, k=3)
    lookup.on_response(PEERS[10], PEERS[20:25], 0.0)
    assert all(lookup.state_of(p) is None for p in PEERS[10:25])


def test_disjoint_paths_never_share_a_peer():
    lookup = Lookup(TARGET, PEERS[:12], now=0.0, k=4, alpha=2, paths=3)
    everyone = PEERS[:40]
    for _ in range(50):
        queries = lookup.next(1.0)
        if lookup.finished:
            break
        for q in queries:
            lookup.on_response(q.peer, everyone, 1.0)  # all paths learn the same peers
    assert lookup.finished
    sets = lookup.queried_by_path()
    assert len(sets) == 3
    assert not (sets[0] & sets[1] or sets[1] & sets[2] or sets[0] & sets[2])
    assert lookup.result() == by_distance(everyone)[:4]


def test_provider_lookup_stops_when_enough_providers():
    seeds = by_distance(PEERS[:10])
    lookup = ProviderLookup(TARGET, seeds, now=0.0, k=5, alpha=3, want=2)
    queries = lookup.next(0.0)
    lookup.on_response(queries[0].peer, [], 0.1, providers=[PEERS[50]])
    assert not lookup.finished
    lookup.on_response(queries[1].peer, [], 0.2, providers=[PEERS[50], PEERS[51], PEERS[52]])
    assert lookup.finished and list(lookup.providers) == [PEERS[50], PEERS[51]]
    assert lookup.providers[PEERS[50]] == queries[0].peer
    assert lookup.next(0.3) == []


def test_value_lookup_quorum_newest_and_outdated():
    author = Identity.from_seed(b"a" * 32)
    old = make_record(author, b"cfg", b"v1", 1)
    new = make_record(author, b"cfg", b"v2", 2)
    seeds = by_distance(PEERS[:10])
    lookup = ValueLookup(TARGET, seeds, now=0.0, k=3, alpha=3, quorum=2, newer=newer)
    q = lookup.next(0.0)
    lookup.on_response(q[0].peer, [], 0.1, record=old)
    lookup.on_response(q[1].peer, [], 0.1)  # answered without a value
    assert not lookup.finished
    lookup.on_response(q[2].peer, [], 0.2, record=new)
    assert lookup.finished and lookup.best == new
    assert set(lookup.outdated()) == {q[0].peer, q[1].peer}


# --- the synthetic 200-peer network -------------------------------------------


@pytest.fixture(scope="module")
def honest_net():
    return build(200, seed=1)


def test_honest_network_finds_the_true_k_closest(honest_net):
    figures, lookups = measure(honest_net, 60, seed=2, alpha=3)
    assert figures.success == 1.0
    assert figures.median_hops <= 3
    assert all(not lk.timed_out for lk in lookups)
    print("honest", figures)


def test_find_existing_peer(honest_net):
    rng = random.Random(5)
    for _ in range(30):
        origin, wanted = rng.sample(honest_net.peers, 2)
        lookup = run_lookup(honest_net, origin, peer_key(wanted))
        assert lookup.result()[0] == wanted


def test_alpha_one_still_correct(honest_net):
    figures, _ = measure(honest_net, 30, seed=3, alpha=1)
    assert figures.success == 1.0


def test_unresponsive_peers_cost_time_not_correctness():
    net = build(200, seed=4, dead=0.2)
    figures, lookups = measure(net, 60, seed=5, query_timeout=1.0)
    assert figures.success == 1.0
    assert sum(lk.failures for lk in lookups) > 0
    print("dead 20%", figures)


def test_colluding_liars_cannot_hide_the_closest():
    net = build(200, seed=6, liars=0.2)
    figures, _ = measure(net, 60, seed=7, lie="collude")
    assert figures.success == 1.0
    print("colluding liars 20%", figures)


def test_disjoint_paths_resist_liars_under_a_deadline():
    """Liars answer at once with made-up IDs nearer than any real peer; these never answer.

    On one path the lookup spends its time budget timing them out; with three
    disjoint paths the liar can only poison the paths that ask it.
    """
    net = build(200, seed=8, liars=0.2)
    single, _ = measure(net, 60, seed=9, lie="fake", timeout=3.0, query_timeout=1.0)
    disjoint, lookups = measure(net, 60, seed=9, lie="fake", timeout=3.0, query_timeout=1.0, paths=3)
    print("fake-ID liars 20%, 3 s budget: single", single, "disjoint", disjoint)
    assert disjoint.success >= 0.95
    assert disjoint.success > single.success
    for lk in lookups:
        sets = lk.queried_by_path()
        assert sum(len(s) for s in sets) == len(set().union(*sets))


def test_query_commands_carry_their_path():
    lookup = Lookup(TARGET, PEERS[:9], now=0.0, k=3, alpha=1, paths=3)
    queries = lookup.next(0.0)
    assert sorted(q.path for q in queries) == [0, 1, 2]
    assert all(isinstance(q, Query) for q in queries)


# --- bookkeeping under random events ---------------------------------------------------------


def check_paths(lookup):
    """What each path keeps alongside its list equals what a rescan of the list gives."""
    for path in lookup._paths:
        assert [c.distance for c in path.order] == sorted(c.distance for c in path.order) == path.distances
        assert all(c.distance == peer_key(c.peer) ^ lookup.target for c in path.order)
        assert set(path.cands) == {c.peer for c in path.order} and len(path.order) <= path.max_candidates
        assert set(path.waiting) == {c.peer for c in path.order if c.state is State.WAITING}
        assert path.in_flight == len(path.waiting)
        assert path.unusable == sum(c.state in (State.FAILED, State.CLAIMED) for c in path.order)
        usable = [c for c in path.order if c.state not in (State.FAILED, State.CLAIMED)]
        assert path.has_k_usable() == (len(usable) >= path.k)
        assert path.best_distance() == (usable[0].distance if usable else None)
    waiting = [c.deadline for p in lookup._paths for c in p.order if c.state is State.WAITING]
    assert lookup.next_deadline() == min(waiting + [lookup.deadline])


events = st.lists(
    st.tuples(st.sampled_from(["next", "answer", "answer", "fail", "stray"]), st.integers(0, 59),
              st.lists(st.integers(0, 59), max_size=10), st.floats(0, 3)),
    max_size=50,
)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 5), st.integers(1, 3), st.integers(1, 3),
       st.sampled_from([None, 6, 12]), events)
def test_bookkeeping_matches_a_rescan(seed, k, alpha, paths, max_candidates, script):
    rng = random.Random(seed)
    lookup = Lookup(rng.getrandbits(256), rng.sample(PEERS, rng.randint(0, 12)), now=0.0, k=k, alpha=alpha,
                    paths=paths, query_timeout=2.0, local=PEERS[rng.randrange(60)], max_candidates=max_candidates)
    now, asked = 0.0, []
    for op, i, named, dt in script:
        now += dt
        if op == "next":
            asked += [q.peer for q in lookup.next(now)]
        elif op == "fail" and asked:
            lookup.on_failure(asked[i % len(asked)], now)
        else:  # an answer from a queried peer (perhaps after its deadline), or from a stranger
            peer = asked[i % len(asked)] if asked and op == "answer" else PEERS[i]
            lookup.on_response(peer, [PEERS[j] for j in named], now)
        check_paths(lookup)
