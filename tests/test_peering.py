"""The peering state machine, fed events directly (no trio, no sockets)."""

import random

from p2pcompute.node.identity import Identity
from p2pcompute.node.peering import Dial, Exchange, Notice, Peering, PeeringConfig


def pid(i):
    return Identity.from_seed(bytes([i]) * 32).peer_id


SELF = pid(0)


def machine(**kw):
    return Peering(SELF, random.Random(1), PeeringConfig(**kw))


def test_bootstrap_peers_are_dialled_first_and_success_exchanges():
    p = machine()
    p.add(pid(2), ["/ip4/10.0.0.2/tcp/1"], 0.0)
    p.add(pid(1), ["/ip4/10.0.0.1/tcp/1"], 0.0, bootstrap=True)
    cmds = p.tick(0.0)
    assert cmds[0] == Dial(pid(1), ("/ip4/10.0.0.1/tcp/1",))
    assert p.tick(0.0) == []  # already dialling: no duplicate dials
    assert p.connected(pid(1), 0.5) == [Exchange(pid(1))]
    assert p.connected(pid(1), 0.6) == []  # a second report of the same connection


def test_failed_dials_back_off_exponentially_with_jitter():
    p = machine(base=1.0, cap=60.0)
    p.add(pid(1), ["/a"], 0.0, bootstrap=True)
    delays, now = [], 0.0
    for _ in range(8):
        assert p.tick(now) == [Dial(pid(1), ("/a",))]
        p.dial_failed(pid(1), "refused", now)
        due = p.next_wakeup()
        delays.append(due - now)
        assert p.tick(now) == []  # not due yet
        now = due
    for i, d in enumerate(delays):
        nominal = min(60.0, 2.0**i)
        assert 0.8 * nominal <= d <= 1.2 * nominal


def test_notice_once_when_every_bootstrap_peer_failed():
    p = machine()
    for i in (1, 2):
        p.add(pid(i), ["/x"], 0.0, bootstrap=True)
    p.tick(0.0)
    assert p.dial_failed(pid(1), "refused", 0.1) == []  # peer 2 still being dialled
    (notice,) = p.dial_failed(pid(2), "timeout", 0.2)
    assert isinstance(notice, Notice) and "none of the 2 bootstrap peers answered" in notice.text
    assert "refused" in notice.text and "timeout" in notice.text
    p.tick(10.0)
    assert p.dial_failed(pid(1), "refused", 10.0) == []  # said once


def test_bootstrap_peers_are_never_forgotten_others_are():
    p = machine(max_failures=3)
    p.add(pid(1), ["/b"], 0.0, bootstrap=True)
    p.add(pid(2), ["/o"], 0.0)
    now = 0.0
    for _ in range(3):
        p.tick(now)
        p.dial_failed(pid(1), "x", now)
        p.dial_failed(pid(2), "x", now)
        now += 100
    assert pid(1) in p.known and pid(2) not in p.known


def test_target_bounds_dials_and_learned_peers_fill_up_to_it():
    p = machine(target=3)
    for i in range(1, 10):
        p.add(pid(i), [f"/{i}"], 0.0)
    first = p.tick(0.0)
    assert len(first) == 3
    p.connected(first[0].peer, 1.0)
    p.dial_failed(first[1].peer, "x", 1.0)
    assert len(p.learned(pid(20), ["/20"], 1.0)) == 1  # one slot freed
    assert p.tick(1.0) == []


def test_self_is_never_a_candidate_and_table_orders_connected_first():
    p = machine()
    p.add(SELF, ["/me"], 0.0)
    assert SELF not in p.known
    p.add(pid(1), ["/1"], 0.0)
    p.add(pid(2), ["/2"], 0.0)
    p.connected(pid(2), 0.0)
    assert [k.peer for k in p.table()][0] == pid(2)
    p.disconnected(pid(2), 5.0)
    assert not p.known[pid(2)].connected and p.known[pid(2)].next_dial > 5.0


def test_known_peers_are_bounded():
    p = machine(max_known=10)
    for i in range(1, 40):
        p.add(pid(i), ["/x"], float(i))
    assert len(p.known) == 10


def test_no_wakeup_when_at_target_so_the_driver_cannot_spin():
    p = machine(target=2)
    for i in range(1, 6):
        p.add(pid(i), [f"/{i}"], 0.0)
    for cmd in p.tick(0.0):
        p.connected(cmd.peer, 0.1)
    assert p.tick(0.1) == [] and p.next_wakeup() is None
    p.disconnected(p.table()[0].peer, 0.2)  # a slot opens: a dial becomes due
    assert p.next_wakeup() is not None
