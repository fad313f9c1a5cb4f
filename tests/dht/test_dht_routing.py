"""The routing table: invariants under random events, eviction, replacement, refresh."""

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pcompute.dht.keys import common_prefix_len, key_of, peer_key, random_key_with_cpl
from p2pcompute.dht.routing import LookupSelf, PingPeer, RefreshBucket, RoutingTable
from p2pcompute.node.identity import PeerId


def make_peers(n, seed=0):
    rng = random.Random(seed)
    return [PeerId.from_public_key(rng.randbytes(32)) for _ in range(n)]


def peers_in_bucket(table, index, n, seed=1):
    """``n`` fresh peers that fall into ``table``'s bucket ``index``."""
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        p = PeerId.from_public_key(rng.randbytes(32))
        if table.bucket_index(p) == index:
            out.append(p)
    return out


def new_table(local, **kw):
    kw.setdefault("rng", random.Random(5))
    return RoutingTable(local, now=0.0, **kw)


def check_invariants(table: RoutingTable):
    total = 0
    for index in range(257):
        entries = table.bucket(index)
        repl = table.replacements(index)
        assert len(entries) <= table.k
        assert len(repl) <= table.replacement_size
        assert not set(entries) & set(repl)
        total += len(entries)
        for p in entries + repl:
            assert common_prefix_len(table.local_key, peer_key(p)) == index
            assert p != table.local
        for p in entries:
            assert p in table and table.entry(p).key == peer_key(p)
    assert total == len(table)
    assert table.local not in table
    pinged = table.pending_pings()
    assert len(pinged) == len({table.bucket_index(p) for p in pinged})
    assert all(p in table for p in pinged)


POOL = make_peers(40, seed=11)
LOCAL = POOL[0]
ops = st.lists(
    st.tuples(
        st.sampled_from(["seen", "fail", "ping_ok", "ping_bad", "remove", "tick"]),
        st.integers(0, len(POOL) - 1),
        st.floats(0, 50),
    ),
    max_size=120,
)


@settings(max_examples=150, deadline=None)
@given(ops, st.integers(1, 4), st.integers(0, 3))
def test_invariants_hold_under_random_events(events, k, repl):
    table = new_table(LOCAL, k=k, replacement_size=repl, fresh_for=5.0, ping_timeout=2.0)
    now = 0.0
    for op, i, dt in events:
        now += dt
        peer = POOL[i]
        if op == "seen":
            cmds = table.on_seen(peer, now)
        elif op == "fail":
            cmds = table.on_failure(peer, now)
        elif op == "ping_ok":
            cmds = table.on_ping_result(peer, True, now)
        elif op == "ping_bad":
            cmds = table.on_ping_result(peer, False, now)
        elif op == "remove":
            cmds = []
            table.remove(peer, now)
        else:
            cmds = table.tick(now)
        for cmd in cmds:
            if isinstance(cmd, PingPeer):
                assert cmd.peer in table and cmd.deadline == now + table.ping_timeout
        check_invariants(table)


@settings(max_examples=50, deadline=None)
@given(st.permutations(POOL[1:]), st.integers(1, 5))
def test_table_keeps_at_most_k_per_bucket_and_all_that_fit(order, k):
    table = new_table(LOCAL, k=k)
    for p in order:
        table.on_seen(p, 0.0)
    check_invariants(table)
    by_bucket = {}
    for p in POOL[1:]:
        by_bucket.setdefault(table.bucket_index(p), []).append(p)
    for index, members in by_bucket.items():
        assert len(table.bucket(index)) == min(k, len(members))


def test_self_is_never_added():
    table = new_table(LOCAL)
    assert table.on_seen(LOCAL, 0.0) == []
    assert LOCAL not in table and len(table) == 0


def test_closest_matches_brute_force():
    table = new_table(LOCAL, k=20)
    for p in POOL[1:]:
        table.on_seen(p, 0.0)
    rng = random.Random(2)
    for _ in range(20):
        target = rng.getrandbits(256)
        expect = sorted(table.peers(), key=lambda p: peer_key(p) ^ target)
        assert table.closest(target, 7) == expect[:7]
        assert table.closest(target, 7, exclude=[expect[0]]) == expect[1:8]


@st.composite
def table_and_query(draw):
    """A table of random peers (small k, so buckets overflow) and a target near us, a peer or anywhere."""
    seed = draw(st.integers(0, 2**32))
    peers = make_peers(draw(st.integers(0, 120)), seed=seed)
    local = PeerId.from_public_key(random.Random(seed + 1).randbytes(32))
    table = new_table(local, k=draw(st.integers(1, 8)))
    for p in peers:
        table.on_seen(p, 0.0)
    kind = draw(st.sampled_from(["any", "cpl", "peer", "local"]))
    rng = random.Random(draw(st.integers(0, 2**32)))
    if kind == "any":
        target = rng.getrandbits(256)
    elif kind == "cpl":
        target = random_key_with_cpl(table.local_key, draw(st.integers(0, 20)), rng)
    elif kind == "peer" and peers:
        target = peer_key(draw(st.sampled_from(peers)))
    else:
        target = table.local_key
    exclude = draw(st.lists(st.sampled_from(peers), max_size=5)) if peers else []
    if draw(st.booleans()):
        exclude.append(make_peers(1, seed=seed + 2)[0])  # not in the table
    return table, target, draw(st.integers(0, 30)), exclude


@settings(max_examples=300, deadline=None)
@given(table_and_query())
def test_closest_bucket_walk_equals_full_sort(case):
    table, target, n, exclude = case
    reference = sorted((p for p in table.peers() if p not in exclude), key=lambda p: peer_key(p) ^ target)[:n]
    assert table.closest(target, n, exclude=exclude) == reference
    assert table.closest(target, n) == sorted(table.peers(), key=lambda p: peer_key(p) ^ target)[:n]


def test_full_far_bucket_does_not_block_nearer_peers():
    """What a bucket split gives: peers nearer to us are kept though bucket 0 is full."""
    table = new_table(LOCAL, k=3)
    for p in peers_in_bucket(table, 0, 6, seed=1):
        table.on_seen(p, 0.0)
    assert len(table.bucket(0)) == 3 and len(table.replacements(0)) == 3
    for index in (1, 2, 3):
        for p in peers_in_bucket(table, index, 2, seed=index + 10):
            table.on_seen(p, 0.0)
        assert len(table.bucket(index)) == 2
    check_invariants(table)


def test_stale_lru_is_pinged_and_evicted_when_silent():
    table = new_table(LOCAL, k=2, fresh_for=10.0, ping_timeout=3.0)
    a, b, c, d = peers_in_bucket(table, 0, 4)
    table.on_seen(a, 0.0)
    table.on_seen(b, 1.0)
    # a was seen 5 s ago: fresh enough, no ping; c waits in the cache
    assert table.on_seen(c, 5.0) == []
    assert table.replacements(0) == [c]
    # 20 s on, a is stale: ping the least recently seen
    cmds = table.on_seen(d, 20.0)
    assert cmds == [PingPeer(a, 23.0)]
    assert table.replacements(0) == [c, d]
    # only one ping per bucket at a time
    assert table.on_seen(c, 21.0) == []
    assert table.next_deadline() <= 23.0
    # silence until the deadline: a is evicted, the newest replacement (c, re-seen at 21) promoted
    table.tick(23.0)
    assert table.bucket(0) == [b, c]
    assert table.replacements(0) == [d]
    check_invariants(table)


def test_a_peer_that_only_pinged_us_starts_no_ping_of_ours():
    """An eviction check must not set off another one at every peer it reaches."""
    table = new_table(LOCAL, k=2, fresh_for=10.0, ping_timeout=3.0)
    a, b, c = peers_in_bucket(table, 0, 3)
    table.on_seen(a, 0.0)
    table.on_seen(b, 1.0)
    assert table.on_seen(c, 20.0, evict_check=False) == []  # a is stale, but c merely pinged us
    assert table.replacements(0) == [c] and table.pending_pings() == []
    assert table.on_seen(c, 21.0) == [PingPeer(a, 24.0)]  # a real request from c does check
    check_invariants(table)


def test_a_full_bucket_checks_at_most_one_stale_entry_per_fresh_for():
    """Each new sighting must not ping the next stale entry: one check per bucket per ``fresh_for``."""
    table = new_table(LOCAL, k=3, fresh_for=10.0, ping_timeout=1.0)
    a, b, c, d, e = peers_in_bucket(table, 0, 5)
    for p in (a, b, c):
        table.on_seen(p, 0.0)
    assert table.on_seen(d, 20.0) == [PingPeer(a, 21.0)]
    table.on_ping_result(a, True, 20.5)  # a answers; b is now the stale LRU
    assert table.on_seen(e, 21.0) == []  # checked 1 s ago: no second ping
    assert table.on_seen(d, 29.0) == []
    assert table.on_seen(e, 30.0) == [PingPeer(b, 31.0)]  # fresh_for after the last check
    check_invariants(table)


def test_lru_that_answers_the_ping_stays():
    table = new_table(LOCAL, k=2, fresh_for=10.0)
    a, b, c = peers_in_bucket(table, 0, 3)
    table.on_seen(a, 0.0)
    table.on_seen(b, 0.0)
    [ping] = table.on_seen(c, 30.0)
    assert ping.peer == a
    table.on_ping_result(a, True, 31.0)
    assert table.bucket(0) == [b, a]  # a is now the most recently seen
    assert table.replacements(0) == [c]
    assert table.pending_pings() == []
    # a failed ping instead evicts and promotes
    [ping] = table.on_seen(c, 60.0)
    assert ping.peer == b
    table.on_ping_result(b, False, 61.0)
    assert table.bucket(0) == [a, c] and table.replacements(0) == []


def test_failures_ping_then_evict_with_promotion():
    table = new_table(LOCAL, k=2, max_failures=2)
    a, b, c = peers_in_bucket(table, 0, 3)
    for p in (a, b, c):
        table.on_seen(p, 0.0)
    cmds = table.on_failure(b, 1.0)
    assert [cmd.peer for cmd in cmds] == [b]  # first failure: confirm with a ping
    assert b in table
    assert table.on_failure(b, 2.0) == []  # second: evicted, c promoted
    assert b not in table and table.bucket(0) == [a, c]
    assert table.pending_pings() == []
    # a success in between resets the count
    table.on_failure(a, 3.0)
    table.on_seen(a, 4.0)
    table.on_failure(a, 5.0)
    assert a in table
    # failures of unknown peers are ignored
    assert table.on_failure(POOL[5], 6.0) == []


def test_remove_promotes_replacement():
    table = new_table(LOCAL, k=1)
    a, b = peers_in_bucket(table, 0, 2)
    table.on_seen(a, 0.0)
    table.on_seen(b, 0.0)
    assert table.remove(a, 1.0)
    assert table.bucket(0) == [b]
    assert not table.remove(a, 1.0)


def test_refresh_commands_and_due_times():
    table = new_table(LOCAL, k=20, refresh_interval=100.0, rng=random.Random(9))
    for p in POOL[1:]:
        table.on_seen(p, 0.0)
    deepest = max(table.bucket_indices())
    assert table.tick(0.0) == []
    first = table.next_deadline()
    assert 50.0 <= first <= 100.0
    cmds = table.tick(100.0)
    refreshes = [c for c in cmds if isinstance(c, RefreshBucket)]
    assert sorted(c.cpl for c in refreshes) == list(range(deepest + 1))
    for c in refreshes:
        assert common_prefix_len(table.local_key, key_of(c.key)) == c.cpl
        PeerId(c.key)  # shaped like a peer ID, as FIND_NODE keys usually are
    assert LookupSelf() in cmds
    assert table.tick(100.0) == []
    # a lookup into bucket 0 postpones its refresh; others come due again
    bucket0_target = peer_key(table.bucket(0)[0])
    table.touched(bucket0_target, 150.0)
    cmds = table.tick(215.0)
    assert 0 not in {c.cpl for c in cmds if isinstance(c, RefreshBucket)}
    assert 1 in {c.cpl for c in cmds if isinstance(c, RefreshBucket)}
    cmds = table.tick(250.0)
    assert 0 in {c.cpl for c in cmds if isinstance(c, RefreshBucket)}


def test_refresh_keys_fall_in_their_bucket_vary_and_replay():
    table = new_table(LOCAL, max_refresh_cpl=17)
    for cpl in range(18):
        key = table._refresh_key(cpl)
        assert key is not None and common_prefix_len(table.local_key, key_of(key)) == cpl
        assert PeerId(key).is_ed25519  # shaped like a peer ID
    assert len({table._refresh_key(0) for _ in range(20)}) == 20
    assert len({table._refresh_key(9) for _ in range(20)}) > 10
    one, two, other = new_table(LOCAL), new_table(LOCAL), new_table(LOCAL, rng=random.Random(6))
    assert [one._refresh_key(c) for c in range(18)] == [two._refresh_key(c) for c in range(18)]  # same seed
    assert [other._refresh_key(c) for c in range(4)] != [two._refresh_key(c) for c in range(4)]


def test_peers_most_recent_first():
    table = new_table(LOCAL)
    for t, p in enumerate(POOL[1:6]):
        table.on_seen(p, float(t))
    assert table.peers() == list(reversed(POOL[1:6]))
