"""Hostile gossip: forged incarnations, fake members, poisoned records. The machine never raises."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pcompute.errors import WireError
from p2pcompute.gossip import events as ev
from p2pcompute.gossip.events import MembershipConfig, TimerKind
from p2pcompute.gossip.membership import Membership
from p2pcompute.gossip.messages import ALIVE, DEAD, LEFT, MAX_INCARNATION, SUSPECT, Gossip, PushPull, Update
from p2pcompute.node import wire
from gossip_sim import identities
from hostile import forged, poisoned  # tests/hostile.py: messages no honest peer builds

IDS = [i.peer_id for i in identities(8, salt=41)]
ME, FRIEND, HOSTILE = IDS[0], IDS[1], IDS[2]


def machine(config: MembershipConfig | None = None, incarnation: int = 0) -> Membership:
    m = Membership(ME, config or MembershipConfig(), random.Random(5), 0.0, address="mem/me", incarnation=incarnation)
    m.handle(ev.Join(()), 0.0)
    news = tuple(Update(p, ALIVE, 0, (), f"mem/{k}") for k, p in enumerate(IDS[1:6], 1))
    m.handle(ev.Received(FRIEND, Gossip(updates=news)), 0.0)
    return m


def run_timers(m: Membership, until: float) -> None:
    """Fire every timer in deadline order up to ``until``; any exception fails the test."""
    while m._timers:
        kind, at = min(m._timers.items(), key=lambda kv: kv[1])
        if at > until:
            return
        m.handle(ev.TimerFired(kind), at)


# --- forged incarnations (issue 9: one gossip message crashed a daemon) -------------------


def test_an_incarnation_over_the_bound_is_refused_when_decoded():
    frame = wire.encode(Gossip(updates=(forged(ME, ALIVE, 2**63 - 1),)))
    with pytest.raises(WireError, match="incarnation"):
        wire.decode(frame)
    frame = wire.encode(Gossip(updates=(forged(ME, ALIVE, MAX_INCARNATION),)))
    assert wire.decode(frame).message.updates[0].incarnation == MAX_INCARNATION


@pytest.mark.parametrize("state", [ALIVE, SUSPECT, DEAD])
def test_a_forged_huge_incarnation_about_us_is_dropped_and_we_go_on(state):
    m = machine()
    m.handle(ev.Received(HOSTILE, Gossip(updates=(Update(ME, state, MAX_INCARNATION),))), 1.0)
    m.handle(ev.Received(HOSTILE, Gossip(updates=(Update(ME, state, 2**40),))), 1.0)
    assert m.incarnation == 0 and m.stats["implausible_updates"] == 2
    run_timers(m, 60.0)  # probes, gossip and push-pull all build our own update
    assert m.incarnation == 0


def test_a_forged_huge_incarnation_about_another_member_is_neither_kept_nor_forwarded():
    m = machine()
    m.handle(ev.Received(HOSTILE, Gossip(updates=(Update(FRIEND, DEAD, 2**30),))), 1.0)
    m.handle(ev.Received(HOSTILE, Gossip(updates=(Update(IDS[7], ALIVE, 2**30),))), 1.0)  # unknown peer
    assert m.member(FRIEND).state == ALIVE and m.member(FRIEND).incarnation == 0
    assert m.member(IDS[7]) is None
    assert not any(u.incarnation for u in m._piggyback()[0])


def test_a_plausible_suspicion_is_still_refuted_and_a_refutation_never_overflows():
    m = machine()
    m.handle(ev.Received(FRIEND, Gossip(updates=(Update(ME, SUSPECT, 0, (FRIEND,)),))), 1.0)
    assert m.incarnation == 1  # ordinary refutation
    top = machine(incarnation=MAX_INCARNATION - 1)
    top.handle(ev.Received(FRIEND, Gossip(updates=(Update(ME, SUSPECT, MAX_INCARNATION - 1, (FRIEND,)),))), 1.0)
    assert top.incarnation == MAX_INCARNATION
    top.handle(ev.Received(FRIEND, Gossip(updates=(Update(ME, DEAD, MAX_INCARNATION, (FRIEND,)),))), 2.0)
    assert top.incarnation == MAX_INCARNATION
    run_timers(top, 60.0)


def test_rearm_gives_back_every_timer_after_a_handler_failed():
    m = machine()
    del m._timers[TimerKind.PROBE]  # as if a probe step raised after taking its timer
    kinds = {c.kind for c in m.rearm(3.0) if isinstance(c, ev.SetTimer)}
    assert {TimerKind.PROBE, TimerKind.PUSH_PULL} <= kinds
    run_timers(m, 10.0)
    assert m.stats["probes"] > 0


incarnations = st.one_of(st.integers(0, 5), st.integers(0, MAX_INCARNATION))


@st.composite
def hostile_updates(draw):
    peer = draw(st.sampled_from(IDS[:4] + IDS[6:]))  # ourselves, known and unknown members
    origins = tuple(draw(st.lists(st.sampled_from(IDS), max_size=3)))
    return Update(peer, draw(st.sampled_from([ALIVE, SUSPECT, DEAD, LEFT])), draw(incarnations), origins)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.lists(hostile_updates(), min_size=1, max_size=5)), max_size=12))
def test_no_sequence_of_hostile_updates_makes_the_machine_raise_or_overflow(batches):
    m = machine()
    now = 1.0
    for push_pull, updates in batches:
        before = m.incarnation
        msg = PushPull(members=tuple(updates), versions=()) if push_pull else Gossip(updates=tuple(updates))
        m.handle(ev.Received(HOSTILE, msg), now)
        assert m.incarnation <= before + m.config.max_incarnation_jump + 1
        now += 0.5
        run_timers(m, now)
    assert m.incarnation <= MAX_INCARNATION
    m._self_update()


# --- fake members (issue 9: 50,000 made-up members were accepted and dialled) -------------

FAKES = [i.peer_id for i in identities(3000, salt=77)]


def fake_batches(fakes, size=256):
    for i in range(0, len(fakes), size):
        yield tuple(Update(p, ALIVE, 0, (), f"/ip4/10.9.{k // 250}.{k % 250}/tcp/1")
                    for k, p in enumerate(fakes[i:i + size], i))


def test_a_flood_of_made_up_members_is_rate_bounded_not_dialled_and_honest_members_stay():
    cfg = MembershipConfig()
    m = machine()
    for p in IDS[1:6]:
        m.handle(ev.Received(p, Gossip()), 0.0)  # the honest members have talked to us
    honest = set(IDS[1:6])
    now, sent_to = 1.0, []
    for batch in fake_batches(FAKES):
        out = m.handle(ev.Received(HOSTILE, Gossip(updates=batch)), now)
        sent_to += [c.peer for c in out if isinstance(c, ev.Send)]
        while m._timers and min(m._timers.values()) <= now + 0.5:
            kind, at = min(m._timers.items(), key=lambda kv: kv[1])
            sent_to += [c.peer for c in m.handle(ev.TimerFired(kind), at) if isinstance(c, ev.Send)]
        now += 0.5
    held = len(m.table) - 5
    assert held <= cfg.new_member_burst + cfg.new_member_rate * now + 1
    assert m.stats["new_members_refused"] >= len(FAKES) - held
    for p in honest:
        assert m.state_of(p) == ALIVE
    # members only heard of are dialled by probes alone: at most one per probe period (plus relays' pings)
    dialled_fakes = [p for p in sent_to if p not in honest]
    assert len(dialled_fakes) <= now / cfg.probe_interval + 1


def test_a_full_table_evicts_members_nobody_vouched_for_never_first_hand_ones():
    cfg = MembershipConfig(max_members=50)
    m = machine(cfg)
    for p in IDS[1:6]:
        m.handle(ev.Received(p, Gossip()), 0.0)
    now = 1.0
    for k, batch in enumerate(fake_batches(FAKES[:600], size=40)):  # many senders: a sybil flood
        m.handle(ev.Received(FAKES[-1 - k], Gossip(updates=batch)), now)
        now += 0.1
    assert len(m.table) <= 50
    assert all(m.state_of(p) == ALIVE for p in IDS[1:6])
    assert m.stats["hearsay_evicted"] > 0


def test_a_joining_peer_still_learns_a_whole_table_from_its_seed():
    m = Membership(ME, MembershipConfig(), random.Random(1), 0.0, address="mem/me")
    m.handle(ev.Join((FRIEND,)), 0.0)
    table = (Update(FRIEND, ALIVE, 0, (), "mem/f"),) + tuple(Update(p, ALIVE, 0) for p in FAKES[:2000])
    from p2pcompute.gossip.messages import PushPullReply

    m.handle(ev.Received(FRIEND, PushPullReply(members=table, capabilities=(), versions=())), 0.5)
    assert len(m.table) == 2001 and m.stats["new_members_refused"] == 0


# --- poisoned records (issue 9: memory = 10**5000 in a Hello broke `peers` everywhere) ------

import json  # noqa: E402

from p2pcompute.gossip.capability import CapabilityRecord, open_record  # noqa: E402
from p2pcompute.node.api import _json  # noqa: E402
from p2pcompute.node.messages import PeerRecord, Resources  # noqa: E402

KEYS = identities(2, salt=9)
hostile_numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**70), 2**70),
    st.sampled_from([10**5000, -(10**400), 2**62, 2**63, 65536, 65537, float("nan"), float("-inf")]),
)
hostile_texts = st.one_of(st.text(max_size=8), st.text(min_size=120, max_size=140), st.just("x" * 5000))
hostile_labels = st.dictionaries(hostile_texts, hostile_texts, max_size=40)


def assert_sane_resources(cpus, memory, labels):
    assert type(cpus) is float and 0.0 <= cpus <= 65536.0
    assert type(memory) is int and 0 <= memory <= 2**62
    assert len(labels) <= 32 and all(len(t) <= 128 for kv in labels.items() for t in kv)


@settings(max_examples=150, deadline=None)
@given(hostile_numbers, hostile_numbers, hostile_numbers, hostile_numbers, hostile_labels,
       st.lists(hostile_texts, max_size=20), hostile_texts)
def test_a_hostile_capability_record_is_refused_or_sane(cpus, memory, slots, load, labels, opsets, arch):
    record = poisoned(CapabilityRecord(KEYS[1].peer_id, 1, 1.0, 1, "x86_64"), cpus=cpus, memory=memory,
                      free_slots=slots, load=load, labels=labels, opsets=tuple(opsets), arch=arch)
    claim = wire.sign_claim(KEYS[1], record)
    try:
        got = open_record(claim)
    except WireError:
        got = None
    if got is not None:
        assert_sane_resources(got.cpus, got.memory, got.labels)
        assert 0 <= got.free_slots <= 65536 and 0.0 <= got.load <= 1e6 and len(got.opsets) <= 16
    m = machine()
    m.handle(ev.Received(HOSTILE, Gossip(capabilities=(claim,))), 1.0)  # never raises
    if got is not None:
        row = {"cpus": got.cpus, "memory": got.memory, "load": got.load, "labels": got.labels, "arch": got.arch}
        json.loads(_json(row), parse_constant=pytest.fail)


def test_sane_hostile_looking_records_still_pass():
    record = CapabilityRecord(KEYS[1].peer_id, 1, 65536.0, 2**62, "a" * 128, free_slots=65536, load=1e6,
                              labels={"k" * 128: "v" * 128})
    assert open_record(wire.sign_claim(KEYS[1], record)) == record


@settings(max_examples=150, deadline=None)
@given(hostile_numbers, hostile_numbers, hostile_labels, st.lists(hostile_texts, max_size=80), hostile_texts,
       hostile_numbers)
def test_a_hostile_peer_record_is_refused_when_opened_or_sane(cpus, memory, labels, addrs, agent, seq):
    res = poisoned(Resources(1.0, 1), cpus=cpus, memory=memory, labels=labels)
    record = poisoned(PeerRecord(KEYS[1].peer_id, 1, (), Resources(1.0, 1)), resources=res,
                      addrs=tuple(addrs), agent=agent, seq=seq)
    try:
        _, got = wire.open_claim(wire.sign_claim(KEYS[1], record), PeerRecord)
    except WireError:
        return
    r = got.resources
    assert_sane_resources(r.cpus, r.memory, r.labels)
    assert len(got.addrs) <= 64 and all(len(a) <= 512 for a in got.addrs) and len(got.agent) <= 128
    assert 0 <= got.seq < 2**63
    json.loads(_json({"cpus": r.cpus, "memory": r.memory, "labels": r.labels}), parse_constant=pytest.fail)


def test_json_answers_never_carry_nan_infinity_or_unprintable_ints():
    body = _json({"a": [float("nan"), float("inf"), 1.5], "b": {"m": 10**5000, "n": 3}, "c": True})
    assert json.loads(body, parse_constant=pytest.fail) == {"a": [None, None, 1.5], "b": {"m": None, "n": 3}, "c": True}


def test_ping_reqs_reach_only_known_live_members_a_few_at_a_time_per_requester():
    from p2pcompute.gossip.messages import Ping, PingReq

    m = machine()
    pings = lambda out: [c for c in out if isinstance(c, ev.Send) and isinstance(c.msg, Ping)]  # noqa: E731
    assert not pings(m.handle(ev.Received(HOSTILE, PingReq(1, IDS[7], 1.0)), 1.0))  # unknown target
    sent = [pings(m.handle(ev.Received(HOSTILE, PingReq(k, FRIEND, 1.0)), 1.0)) for k in range(10)]
    assert sum(map(len, sent)) == 4 and m.stats["ping_reqs_refused"] == 7
    assert pings(m.handle(ev.Received(IDS[3], PingReq(99, FRIEND, 1.0)), 1.0))  # others are still served


def test_a_victim_pushed_to_the_edge_of_the_jump_is_still_believed_when_it_speaks_for_itself():
    """An attacker makes the victim refute just under the jump bound; a peer that holds the
    victim's old incarnation drops the refutation when relayed, takes it from the victim itself,
    and the victim answers an old suspicion with its current word."""
    jump = MembershipConfig().max_incarnation_jump
    victim = machine()
    victim.handle(ev.Received(HOSTILE, Gossip(updates=(Update(ME, SUSPECT, jump),))), 1.0)
    assert victim.incarnation == jump + 1
    other = Membership(FRIEND, MembershipConfig(), random.Random(2), 0.0)
    other.handle(ev.Join(()), 0.0)
    other.handle(ev.Received(ME, Gossip(updates=(Update(ME, ALIVE, 0),))), 0.0)
    refutation = Update(ME, ALIVE, jump + 1, (), "mem/me")
    other.handle(ev.Received(IDS[3], Gossip(updates=(refutation,))), 1.5)  # relayed: too far a jump
    assert other.member(ME).incarnation == 0
    # the other peer suspects the victim at the old incarnation; the victim answers, itself
    victim.handle(ev.Received(FRIEND, Gossip(updates=(Update(ME, SUSPECT, 0, (FRIEND,)),))), 2.0)
    assert victim.stats["reassertions"] == 1 and victim.incarnation == jump + 1
    ack = Gossip(updates=victim._piggyback()[0])
    assert refutation in ack.updates
    other.handle(ev.Received(ME, ack), 2.1)
    assert other.member(ME).incarnation == jump + 1 and other.state_of(ME) == ALIVE
