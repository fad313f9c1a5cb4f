"""Property tests: the merge rule is a lattice, dissemination limits hold, self never dies."""

from __future__ import annotations

import random
from functools import reduce

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pcompute.gossip import events as ev
from p2pcompute.gossip.broadcast import BroadcastQueue
from p2pcompute.gossip.events import MembershipConfig
from p2pcompute.gossip.membership import Membership
from p2pcompute.gossip.messages import ALIVE, DEAD, LEFT, SUSPECT, Gossip, Update
from p2pcompute.gossip.table import join, normal
from gossip_sim import identities

IDS = [i.peer_id for i in identities(8, salt=3)]
ME = IDS[0]

states = st.sampled_from([ALIVE, SUSPECT, DEAD, LEFT])


@st.composite
def updates(draw, peers=IDS[1:4]):
    peer = draw(st.sampled_from(peers))
    state = draw(states)
    origins = tuple(draw(st.lists(st.sampled_from(IDS), max_size=3)))
    address = draw(st.sampled_from(["", "mem/a", "mem/b"]))
    return Update(peer, state, draw(st.integers(0, 3)), origins, address)


same_peer = st.lists(updates(peers=IDS[1:2]), min_size=1, max_size=6)


@given(st.lists(updates(peers=IDS[1:2]), min_size=3, max_size=3))
def test_join_is_commutative_associative_idempotent(facts):
    a, b, c = facts
    assert join(a, b) == join(b, a)
    assert join(join(a, b), c) == join(a, join(b, c))
    assert join(a, a) == normal(a)
    assert join(join(a, b), b) == join(a, b)


@given(same_peer, st.randoms(use_true_random=False))
def test_merge_is_order_independent(facts, rnd):
    shuffled = list(facts)
    rnd.shuffle(shuffled)
    assert reduce(join, facts) == reduce(join, shuffled)
    top = reduce(join, facts)
    assert top.rank == max(f.rank for f in facts)


def feed(m: Membership, facts, t0: float = 1.0) -> None:
    for i, fact in enumerate(facts):
        m.handle(ev.Received(IDS[7], Gossip(updates=(fact,))), t0 + i * 1e-3)


def fresh_machine(seed: int = 0) -> Membership:
    m = Membership(ME, MembershipConfig(), random.Random(seed), 0.0)
    m.handle(ev.Join(()), 0.0)
    return m


@settings(max_examples=60, deadline=None)
@given(st.lists(updates(), max_size=12), st.randoms(use_true_random=False))
def test_machines_agree_whatever_order_facts_arrive_in(facts, rnd):
    shuffled = list(facts)
    rnd.shuffle(shuffled)
    a, b = fresh_machine(1), fresh_machine(2)
    feed(a, facts)
    feed(b, shuffled)
    view = lambda m: {p: (mm.state, mm.incarnation) for p, mm in m.table.members.items()}  # noqa: E731
    assert view(a) == view(b)
    for peer, (state, inc) in view(a).items():
        best = max((f for f in facts if f.peer == peer), key=lambda f: f.rank)
        assert (inc, state) == best.rank


@settings(max_examples=60, deadline=None)
@given(st.lists(updates(peers=[ME, IDS[1]]), max_size=12))
def test_never_declares_itself_dead_and_always_outbids_accusations(facts):
    m = fresh_machine()
    for i, fact in enumerate(facts):
        cmds = m.handle(ev.Received(IDS[7], Gossip(updates=(fact,))), 1.0 + i)
        assert not [c for c in cmds if isinstance(c, ev.MemberChanged) and c.peer == ME]
    assert m.state_of(ME) == ALIVE and ME not in m.table.members
    accusations = [f.incarnation for f in facts if f.peer == ME and f.state != ALIVE]
    claims = [f.incarnation for f in facts if f.peer == ME]
    if accusations:
        assert m.incarnation > max(accusations)
    if claims:
        assert m.incarnation >= max(claims)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 20), st.integers(1, 400)), min_size=1, max_size=40),
    st.integers(1, 6),
    st.integers(1, 8),
    st.integers(100, 2000),
)
def test_broadcast_queue_sends_each_item_exactly_limit_times(pushes, limit, per_msg, budget):
    q = BroadcastQueue(max_items=1000)
    latest = {}
    for key, size in pushes:
        q.push(key, (key, size), size)
        latest[key] = (key, size)
    sent: dict = {}
    while len(q):
        before = {k: q.transmits(k) for k in latest if k in q}
        items, used = q.take(budget, limit, per_msg)
        assert items and len(items) <= per_msg
        assert used <= budget or len(items) == 1
        taken = {key for key, _ in items}
        untaken = [n for k, n in before.items() if k not in taken]
        assert not untaken or max(before[k] for k in taken) <= min(untaken)  # least-sent first
        for item in items:
            sent[item] = sent.get(item, 0) + 1
    assert sent == {item: limit for item in latest.values()}


def test_broadcast_queue_is_bounded_and_evicts_the_most_sent():
    q = BroadcastQueue(max_items=3)
    for k in "abc":
        q.push(k, k, 10)
    q.take(10, 5, 1)  # "a" sent once
    q.push("d", "d", 10)
    assert len(q) == 3 and "a" not in q
    q.push("b", "b2", 10)  # replaces, no eviction
    assert len(q) == 3 and q.transmits("b") == 0


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.one_of(st.tuples(st.just("push"), st.integers(0, 12), st.integers(1, 300)),
                       st.tuples(st.just("refine"), st.integers(0, 12), st.integers(0, 3)),
                       st.tuples(st.just("take"), st.integers(1, 6), st.integers(50, 1500))),
             min_size=1, max_size=60),
    st.integers(1, 5),
)
def test_broadcast_queue_counts_transmits_with_pushes_between_draws(ops, limit):
    """Whatever the interleaving, each queued version is sent until ``limit`` or until replaced."""
    q = BroadcastQueue(max_items=1000)
    sent: dict = {}  # (key, version) -> transmits
    version: dict = {}
    for op, a, b in ops:
        if op == "push":
            version[a] = version.get(a, 0) + 1
            q.push(a, (a, version[a]), b)
        elif op == "refine" and a in q:
            t = q.transmits(a)
            q.push(a, (a, version[a]), 10, refine=b)  # same item, new size: keeps its count
            assert q.transmits(a) == t
        elif op == "take":
            before = {k: q.transmits(k) for k in version if k in q}
            items, used = q.take(b, limit, a)
            assert len(items) <= a and (used <= b or len(items) == 1)
            for item in items:
                sent[item] = sent.get(item, 0) + 1
                assert q.transmits(item[0]) in (None, before[item[0]] + 1)
            assert all(q.transmits(k) == n for k, n in before.items() if k not in {i[0] for i in items})
            if q._all is not None:  # the remembered list of everything is what the buckets hold
                assert list(q._all) == [e[0] for bucket in q._buckets for e in bucket.values()]
    while len(q):
        for item in q.take(10_000, limit, 1000)[0]:
            sent[item] = sent.get(item, 0) + 1
    assert all(n <= limit for n in sent.values())
    assert all(sent.get((k, v)) == limit for k, v in version.items())  # the latest version: always all


@given(st.lists(st.tuples(st.sampled_from(["set", "remove", "probe"]), updates(peers=IDS[1:8])), max_size=60),
       st.randoms(use_true_random=False))
@settings(max_examples=200, deadline=None)
def test_table_live_list_and_slots_stay_in_step(ops, rnd):
    from p2pcompute.gossip.table import Member, Table

    table = Table(rnd)
    for op, update in ops:
        member = table.get(update.peer)
        if op == "set":
            if member is None:
                table.add(Member(update.peer, update, 0.0, 0.0))
            else:
                table.set_update(member, update)
        elif op == "remove":
            table.remove(update.peer)
        else:
            probed = table.next_probe()
            assert probed is None or table.get(probed).live
        live = {p for p, m in table.members.items() if m.live}
        assert set(table.live) == live and len(table.live) == len(live)
        for i, peer in enumerate(table.live):
            assert table.members[peer].slot == i
        assert all(m.slot == -1 for m in table.members.values() if not m.live)
