"""The simulation's fast paths into the membership machine give what the plain paths give."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pcompute.gossip import events as ev
from p2pcompute.gossip.events import MembershipConfig
from p2pcompute.gossip.membership import Membership
from p2pcompute.gossip.messages import ALIVE, DEAD, SUSPECT, Ack, Gossip, Ping, Update
from p2pcompute.gossip.table import Member, Table
from gossip_sim import identities

IDS = [i.peer_id for i in identities(40, salt=7)]


def _members(states: list[int]) -> list[Member]:
    return [Member(p, Update(p, s, 0), 0.0, 0.0) for p, s in zip(IDS, states)]


def _snapshot(t: Table) -> tuple:
    return (list(t.members), [(m.slot, m.state) for m in t.members.values()], list(t.live), list(t._order),
            t._cursor, t._rng.getstate())


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([ALIVE, ALIVE, SUSPECT, DEAD]), min_size=1, max_size=len(IDS)),
       st.integers(0, 10), st.integers(0, 2**32))
def test_add_all_is_add_one_at_a_time(states, walked, seed):
    """Same members, live list, probe order, cursor and rng state as ``add`` called in a loop."""
    half = len(states) // 2
    tables = []
    for bulk in (False, True):
        t = Table(random.Random(seed))
        first, rest = _members(states[:half]), _members(states)[half:]
        for m in first:
            t.add(m)
        for _ in range(walked):  # a round under way: new members land in what is left of it
            t.next_probe()
        if bulk:
            t.add_all(rest)
        else:
            for m in rest:
                t.add(m)
        tables.append(_snapshot(t))
    assert tables[0] == tables[1]


def test_add_all_refuses_duplicates():
    t = Table(random.Random(1))
    t.add(_members([ALIVE])[0])
    with pytest.raises(ValueError):
        t.add_all(_members([ALIVE]))
    with pytest.raises(ValueError):
        t.add_all(_members([ALIVE, ALIVE])[1:] * 2)


def _machine(seed: int) -> Membership:
    m = Membership(IDS[0], MembershipConfig(), random.Random(seed), 0.0, address="mem/0")
    m.handle(ev.Join(()), 0.0)
    return m


def test_receive_is_handle_of_received():
    """``receive(peer, msg, now)`` returns the same commands and leaves the same state as
    ``handle(Received(peer, msg), now)``, message after message."""
    plain, fast = _machine(3), _machine(3)
    news = tuple(Update(p, ALIVE, 0, (), f"mem/{k}") for k, p in enumerate(IDS[1:12], 1))
    script = [(IDS[1], Gossip(updates=news)), (IDS[2], Ping(5)), (IDS[3], Ack(9)),
              (IDS[4], Gossip(updates=(Update(IDS[5], SUSPECT, 0, (IDS[4],)),))), (IDS[6], Ping(7, news[:3]))]
    for k, (peer, msg) in enumerate(script):
        now = 0.1 * (k + 1)
        assert plain.handle(ev.Received(peer, msg), now) == fast.receive(peer, msg, now)
        assert plain._timers == fast._timers and plain.table.live == fast.table.live
        assert plain._rng.getstate() == fast._rng.getstate()
    assert [m.update for m in plain.table.members.values()] == [m.update for m in fast.table.members.values()]
    assert plain.stats == fast.stats


def test_receive_after_leave_does_nothing():
    m = _machine(1)
    m.handle(ev.Leave(), 0.0)
    assert m.receive(IDS[1], Ping(1), 1.0) == []
