"""The discrete-event engine, the cluster's link model, and the simulate command's parsers."""

from __future__ import annotations

import pytest

from p2pcompute.cli.simulate_cmd import parse_churn, parse_duration, parse_fraction, parse_latency
from p2pcompute.dht import pb
from p2pcompute.errors import UserError
from p2pcompute.gossip.messages import Gossip
from p2pcompute.simulations.cluster import Cluster, ClusterConfig
from p2pcompute.simulations.des import Engine


def test_engine_runs_entries_in_time_then_scheduling_order():
    eng = Engine(1)
    seen = []
    eng.at(2.0, lambda a, b: seen.append((eng.now, a)), "late")
    eng.at(1.0, lambda a, b: seen.append((eng.now, a)), "first")
    eng.at(1.0, lambda a, b: seen.append((eng.now, a)), "second")
    eng.at(1.0, lambda a, b: eng.after(0.5, lambda x, y: seen.append((eng.now, x)), "chained"))
    eng.run_until(1.9)
    assert seen == [(1.0, "first"), (1.0, "second"), (1.5, "chained")]
    assert eng.now == 1.9 and len(eng) == 1
    eng.run_until(5.0)
    assert seen[-1] == (2.0, "late") and eng.events == 5


def test_engine_never_schedules_into_the_past_and_quantises_timers():
    eng = Engine(1, quantum=0.01)
    eng.run_until(3.0)
    times = []
    eng.at(1.0, lambda a, b: times.append(eng.now))
    used = eng.timer(3.0012, lambda a, b: times.append(eng.now))
    assert used == pytest.approx(3.01)
    eng.run_until(4.0)
    assert times[0] == 3.0 and times[1] == pytest.approx(3.01)
    with pytest.raises(ValueError):
        Engine(1, quantum=-1)


def _pair(loss: float, latency=(0.02, 0.12)) -> tuple[Cluster, list]:
    cluster = Cluster(3, latency=latency, loss=loss, config=ClusterConfig())
    a, b = cluster.new_peer(), cluster.new_peer()
    cluster.live[a.id], cluster.live[b.id] = a, b
    got = []
    return cluster, [a, b, got]


def test_link_is_fifo_and_membership_frames_are_lost_at_the_loss_rate():
    cluster, (a, b, got) = _pair(loss=0.2)
    eng = cluster.engine
    deliver = lambda dst, payload: got.append((eng.now, payload[1].updates))  # noqa: E731
    for i in range(2000):
        eng.at(i * 0.001, lambda x, y: cluster._send(a, b.id, Gossip(updates=()), deliver, None))
    eng.run_until(10.0)
    times = [t for t, _ in got]
    assert times == sorted(times)  # FIFO on the directed link
    assert 0.75 < len(got) / 2000 < 0.85
    assert cluster.dropped["loss"] == 2000 - len(got)
    assert cluster.sent["Gossip"] == 2000


def test_kademlia_messages_ride_a_stream_late_but_never_lost():
    cluster, (a, b, got) = _pair(loss=0.5, latency=(0.05, 0.05))
    eng = cluster.engine
    deliver = lambda dst, payload: got.append(eng.now - payload[2] * 1.0)  # noqa: E731
    for i in range(200):
        eng.at(float(i), lambda rid, y: cluster._send(a, b.id, pb.request(pb.MessageType.PING), deliver, rid), i)
    eng.run_until(500.0)
    assert len(got) == 200
    delays = sorted(round(d, 6) for d in got)
    assert set(delays) == {0.05, 0.25}  # one latency, or one retransmission timeout more
    assert cluster.retransmits == delays.count(0.25) > 0
    assert cluster.mean_size("KadPING") == len(pb.frame(pb.request(pb.MessageType.PING)))


def test_crashed_destination_drops_in_flight_and_new_messages():
    cluster, (a, b, got) = _pair(loss=0.0)
    deliver = cluster._deliver_gossip
    cluster._send(a, b.id, Gossip(), deliver, None)
    cluster.crash(b)
    cluster._send(a, b.id, Gossip(), deliver, None)
    cluster.engine.run_until(1.0)
    assert cluster.dropped["crash"] == 2


@pytest.mark.parametrize("text, seconds", [("30s", 30), ("10min", 600), ("1h", 3600), ("250ms", 0.25),
                                           ("90", 90), ("1.5h", 5400)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "ten", "5 weeks", "-3s", "0s", "1hh"])
def test_parse_duration_refuses_nonsense(bad):
    with pytest.raises(UserError, match="duration"):
        parse_duration(bad)


def test_parse_churn_loss_latency():
    assert parse_churn("10%/10min") == pytest.approx((0.1, 600.0))
    assert parse_churn("0.05/30s") == pytest.approx((0.05, 30.0))
    assert parse_churn("0")[0] == 0.0
    assert parse_fraction("1%", "loss") == pytest.approx(0.01)
    assert parse_fraction("0.2", "loss") == pytest.approx(0.2)
    assert parse_latency("20-120ms") == pytest.approx((0.02, 0.12))
    assert parse_latency("50ms") == pytest.approx((0.05, 0.05))
    assert parse_latency("0.01-0.02s") == pytest.approx((0.01, 0.02))
    for bad, call in [("10%", parse_churn), ("150%/1h", parse_churn), ("2", lambda t: parse_fraction(t, "loss")),
                      ("120-20ms", parse_latency), ("fast", parse_latency), ("20-120", parse_latency)]:
        if bad == "20-120":
            assert parse_latency(bad) == pytest.approx((0.02, 0.12))  # default unit: ms
            continue
        with pytest.raises(UserError):
            call(bad)


def test_a_converged_start_fills_every_table_as_a_settled_network_would():
    from p2pcompute.dht.keys import common_prefix_len, peer_key
    from p2pcompute.gossip.messages import ALIVE

    cluster = Cluster(3, config=ClusterConfig(k=8))
    peers = [cluster.new_peer() for _ in range(60)]
    cluster.start_converged(peers)
    for peer in peers:
        m = peer.membership
        assert m.joined and len(m.table.members) == 59 and len(m.alive_members()) == 59
        assert all(x.state == ALIVE and x.record is not None and x.record.version == 1
                   for x in m.table.members.values())
        # each bucket holds min(k, everyone who belongs there), and only those
        own = peer_key(peer.id)
        belongs: dict[int, set] = {}
        for other in peers:
            if other is not peer:
                belongs.setdefault(common_prefix_len(own, peer_key(other.id)), set()).add(other.id)
        for index, members in belongs.items():
            held = set(peer.table.bucket(index))
            assert held <= members and len(held) == min(8, len(members))
        assert set(peer.table.bucket_indices()) == set(belongs)
    # and the protocols run from there: a crash is detected by everyone
    victim = peers[7]
    cluster.crash(victim)
    cluster.engine.run_until(30.0)
    assert all(p.membership.state_of(victim.id) not in (None, ALIVE) for p in peers if p is not victim)


def test_a_timer_already_due_fires_at_once_in_the_cluster_driver():
    """A confirmation can pull a suspicion deadline into the past: the driver must fire it now.

    (It used to be scheduled at ``now`` but recorded at the past time, so the
    entry looked stale and the suspicion never expired at that peer.)
    """
    from p2pcompute.gossip import events as ev
    from p2pcompute.gossip.messages import DEAD, SUSPECT, Gossip, Update
    from p2pcompute.simulations.cluster import Cluster

    cluster = Cluster(3)
    peers = [cluster.new_peer() for _ in range(6)]
    cluster.start_converged(peers)
    cluster.engine.run_until(5.0)
    observer, victim, *others = peers
    cluster.crash(victim)
    # a suspicion that started 1 s ago, then (at 5 s) enough confirmations to shrink it below 1 s
    lone = Update(victim.id, SUSPECT, 0, (others[0].id,))
    cluster._commands(observer, observer.membership.handle(ev.Received(others[0].id, Gossip((lone,))), 4.0))
    cluster.engine.run_until(4.0 + 0.5)
    assert observer.membership.state_of(victim.id) == SUSPECT
    low = observer.membership.suspicion_timeout(99)
    cluster.engine.run_until(4.0 + low + 0.2)  # past the shortest timeout, not past the lone one
    confirmed = Update(victim.id, SUSPECT, 0, tuple(sorted(p.id for p in others)))
    assert 4.0 + low < cluster.now < 4.0 + observer.membership.suspicion_timeout(0)
    cluster._commands(observer, observer.membership.handle(ev.Received(others[1].id, Gossip((confirmed,))), cluster.now))
    cluster.engine.run_until(cluster.now + 0.01)
    assert observer.membership.state_of(victim.id) == DEAD


def test_gc_helpers_restore_the_collector_as_they_found_it():
    import gc

    from p2pcompute.simulations.des import paused_gc, quiet_gc, settle_gc

    thresholds, enabled = gc.get_threshold(), gc.isenabled()
    with quiet_gc(young=50_000):
        assert gc.get_threshold()[0] == max(50_000, thresholds[0])
        junk = [[i] for i in range(100)]
        settle_gc()
        assert gc.get_freeze_count() >= len(junk)
        with paused_gc():
            assert not gc.isenabled()
        assert gc.isenabled() == enabled
    assert gc.get_threshold() == thresholds and gc.get_freeze_count() == 0
