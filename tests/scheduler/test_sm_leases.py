"""ExecutorLeases: reservations wait for a slot, the first free slot accepts, heartbeats, revokes, bounds."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pcompute.scheduler.events import Refused, SetTimer
from p2pcompute.scheduler.leases import (Accept, CoordinatorDied, Decline, Ended, ExecutorConfig, ExecutorLeases,
                                         Grant, Offer, Revoked, Run, SendHeartbeat, SetSlots, Stop, Wake)


def of(cmds, cls):
    return [c for c in cmds if isinstance(c, cls)]


def offer(n, coord="c1", deadline=100.0):
    return Offer("job", f"t{n}", coord, f"0.{n}", deadline, spec=f"spec{n}")


def test_one_slot_accepts_the_oldest_reservation_and_the_next_when_it_ends():
    ex = ExecutorLeases(ExecutorConfig(slots=1, heartbeat_s=5.0))
    assert of(ex.handle(offer(1), 0.0), Accept)[0].lease_id == "0.1"
    assert not of(ex.handle(offer(2), 0.0), Accept) and ex.queued() == 1 and ex.free_slots() == 0
    out = ex.handle(Grant("job", "t1", "c1", "0.1", 30.0), 1.0)
    assert of(out, Run) == [Run("job", "t1", "c1", "0.1", "spec1")] and SetTimer(6.0) in out
    beats = [of(ex.handle(Wake(), t), SendHeartbeat) for t in (6.0, 11.0, 12.0)]
    assert [len(b) for b in beats] == [1, 1, 0]
    out = ex.handle(Ended("job", "0.1"), 12.5)
    assert of(out, Accept)[0].lease_id == "0.2"
    assert not of(ex.handle(Wake(), 16.0), SendHeartbeat)          # the ended lease beats no more


def test_a_revoked_accept_frees_the_slot_and_a_revoked_run_stops():
    ex = ExecutorLeases(ExecutorConfig(slots=1))
    ex.handle(offer(1), 0.0)
    ex.handle(offer(2), 0.0)
    out = ex.handle(Revoked("job", "c1", "0.1", "taken by another peer"), 0.5)
    assert of(out, Accept)[0].lease_id == "0.2" and not of(out, Stop)
    ex.handle(Grant("job", "t2", "c1", "0.2", 30.0), 1.0)
    out = ex.handle(Revoked("job", "c1", "0.2", "job cancelled"), 2.0)
    assert of(out, Stop) == [Stop("job", "t2", "0.2", "job cancelled")] and ex.free_slots() == 1


def test_a_full_queue_declines_and_lapsed_reservations_and_unanswered_accepts_go():
    ex = ExecutorLeases(ExecutorConfig(slots=1, max_queued=2, accept_timeout_s=10.0))
    ex.handle(offer(1, deadline=100.0), 0.0)                          # accepted at once
    ex.handle(offer(2, deadline=5.0), 0.0)
    ex.handle(offer(3, deadline=100.0), 0.0)
    out = ex.handle(offer(4), 0.0)
    assert of(out, Decline)[0].lease_id == "0.4" and ex.stats["declined"] == 1
    ex.handle(Wake(), 6.0)                                            # offer 2 lapsed while queued
    assert ex.queued() == 1 and ex.stats["lapsed"] == 1
    out = ex.handle(Wake(), 10.0)                                     # accept of 1 never answered
    assert ex.stats["accept_timeouts"] == 1 and of(out, Accept)[0].lease_id == "0.3"


def test_grants_and_offers_from_the_wrong_peer_are_refused():
    ex = ExecutorLeases(ExecutorConfig(slots=2))
    ex.handle(offer(1), 0.0)
    assert of(ex.handle(Grant("job", "t1", "mallory", "0.1", 30.0), 0.0), Refused)
    out = ex.handle(Grant("job", "t9", "c1", "0.9", 30.0), 0.0)   # never accepted (or forgotten): given back
    assert of(out, Decline)[0].lease_id == "0.9" and not of(out, Run)
    assert of(ex.handle(offer(1), 0.0), Refused)
    ex.handle(Revoked("job", "mallory", "0.1"), 0.0)
    assert ex.busy() == 1 and ex.stats["stale_revokes"] == 1 and ex.stats["refused"] == 2
    for bad in (Offer("job", "t", "c1", ["0.5"], 10.0), Offer("job", "t", ["c1"], "0.5", 10.0),
                Offer("job", "t", "c1", "0.5", float("nan")), Grant(b"job", "t1", "c1", "0.1", 1.0)):
        assert of(ex.handle(bad, 0.0), Refused)
    assert ex.busy() == 1 and ex.queued() == 0


def test_a_dead_coordinator_takes_its_reservations_but_running_tasks_go_on():
    ex = ExecutorLeases(ExecutorConfig(slots=2))
    ex.handle(offer(1, "c1"), 0.0)
    ex.handle(Grant("job", "t1", "c1", "0.1", 30.0), 0.0)
    ex.handle(offer(2, "c1"), 0.0)                                    # accepting
    ex.handle(offer(3, "c1"), 0.0)                                    # queued
    out = ex.handle(CoordinatorDied("c1"), 1.0)
    assert ex.running() == [("job", "0.1")] and ex.queued() == 0 and ex.busy() == 1 and not of(out, Stop)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 9), st.floats(0, 20)), max_size=60),
       st.integers(1, 3))
def test_accepts_only_fill_free_slots(steps, slots):
    ex = ExecutorLeases(ExecutorConfig(slots=slots, max_queued=3, heartbeat_s=2.0, accept_timeout_s=5.0))
    now, runs, most = 0.0, set(), slots
    for kind, n, dt in steps:
        now += dt
        e = [offer(n, deadline=now + 10.0), Grant("job", f"t{n}", "c1", f"0.{n}", now + 30.0), Revoked("job", "c1", f"0.{n}"),
             Ended("job", f"0.{n}"), CoordinatorDied("c1"), SetSlots(n % 4), Wake()][kind]
        out = ex.handle(e, now)
        most = max(most, ex.slots)
        runs |= {c.lease_id for c in of(out, Run)}
        # slots taken away let the runs finish; an accept only ever fills a free slot
        assert ex.busy() <= most and (not of(out, Accept) or ex.busy() <= ex.slots)
        assert {k[1] for k in ex.running()} <= runs
        assert ex.free_slots() == max(0, ex.slots - ex.busy())


# --- fencing: the epoch a lease id begins with ------------------------------------------------------


def test_a_revoke_from_the_jobs_successor_of_a_newer_epoch_stops_the_run_and_an_equal_epoch_does_not():
    ex = ExecutorLeases(ExecutorConfig(slots=1))
    ex.handle(Offer("job", "t1", "c1", "0.ab.1", 100.0, spec="s"), 0.0)
    ex.handle(Grant("job", "t1", "c1", "0.ab.1", 30.0), 1.0)
    out = ex.handle(Revoked("job", "c2", "0.ab.1", "coordinator changed", epoch=0), 2.0)   # not newer: a stranger
    assert not of(out, Stop) and ex.stats["stale_revokes"] == 1 and ex.running() == [("job", "0.ab.1")]
    out = ex.handle(Revoked("job", "c2", "0.ab.1", "coordinator changed"), 2.5)            # no epoch said
    assert not of(out, Stop) and ex.stats["stale_revokes"] == 2
    out = ex.handle(Revoked("job", "c2", "0.ab.1", "coordinator changed", epoch=1), 3.0)   # the successor
    assert of(out, Stop) == [Stop("job", "t1", "0.ab.1", "coordinator changed")] and ex.free_slots() == 1
    assert ex.stats["successor_revokes"] == 1


def test_offers_and_grants_of_an_older_epoch_are_refused_as_fenced_and_a_newer_epoch_drops_the_old_ones():
    ex = ExecutorLeases(ExecutorConfig(slots=1))
    ex.handle(Offer("job", "t1", "c1", "0.ab.1", 100.0), 0.0)          # accepted: holds the slot
    ex.handle(Offer("job", "t2", "c1", "0.ab.2", 100.0), 0.0)          # queued
    ex.handle(Offer("other", "t1", "c1", "0.ab.3", 100.0), 0.0)        # another job: untouched by fencing
    out = ex.handle(Offer("job", "t2", "c2", "1.cd.1", 100.0), 1.0)    # the new coordinator, epoch 1
    assert [k for k in ex._leases] == [("other", "0.ab.3"), ("job", "1.cd.1")]
    assert of(out, Accept)[0].lease_id == "0.ab.3" and ex.stats["fenced"] == 2
    out = ex.handle(Grant("job", "t1", "c1", "0.ab.1", 30.0), 2.0)     # the old one grants its accept: fenced
    assert not of(out, Run) and of(out, Refused)[0].reason.startswith("fenced: job job is at epoch 1")
    out = ex.handle(Offer("job", "t3", "c1", "0.ab.4", 100.0), 2.0)
    assert of(out, Refused)[0].reason.startswith("fenced:") and ("job", "0.ab.4") not in ex._leases
    # lease ids without an epoch (another scheme) are not fenced
    assert not of(ex.handle(Offer("job", "t4", "c3", "x.9", 100.0), 2.0), Refused)


def test_a_running_lease_of_the_old_epoch_runs_on_until_the_new_coordinator_revokes_it():
    ex = ExecutorLeases(ExecutorConfig(slots=2))
    ex.handle(Offer("job", "t1", "c1", "0.ab.1", 100.0), 0.0)
    ex.handle(Grant("job", "t1", "c1", "0.ab.1", 30.0), 0.5)
    ex.handle(Offer("job", "t2", "c2", "1.cd.1", 100.0), 1.0)
    assert ex.running() == [("job", "0.ab.1")]
    out = ex.handle(Revoked("job", "c2", "0.ab.1", "coordinator changed", epoch=1), 2.0)
    assert of(out, Stop) and ex.running() == []


def test_epochs_are_remembered_for_a_bounded_number_of_jobs():
    from p2pcompute.scheduler.leases import MAX_JOBS_SEEN

    ex = ExecutorLeases(ExecutorConfig(slots=0, max_queued=1))
    for i in range(MAX_JOBS_SEEN + 10):
        ex.handle(Offer(f"j{i}", "t", "c", "3.ab.1", 100.0), 0.0)
    assert len(ex._epochs) == MAX_JOBS_SEEN and "j0" not in ex._epochs


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2), st.integers(0, 5), st.integers(0, 2),
                          st.floats(0, 5)), max_size=80))
def test_no_run_starts_for_an_epoch_older_than_one_seen_and_only_coordinators_or_successors_stop_runs(steps):
    """Coordinators c0..c2 of one job at epochs 0..2 (coordinator i leads epoch i); random offers, grants
    and revokes. A Run is never of an epoch older than the newest this peer has seen for the job; a Stop
    comes only from the lease's own coordinator or from one of a newer epoch."""
    ex = ExecutorLeases(ExecutorConfig(slots=2, max_queued=4))
    now, newest = 0.0, -1
    for kind, who, n, epoch_of_revoke, dt in steps:
        now += dt
        lease = f"{who}.ab.{n}"
        granter = {k[1]: x.offer.coordinator for k, x in ex._leases.items()}
        e = [Offer("job", f"t{n}", f"c{who}", lease, now + 10.0), Grant("job", f"t{n}", f"c{who}", lease, now + 30.0),
             Revoked("job", f"c{epoch_of_revoke}", lease, "r", epoch_of_revoke), Ended("job", lease)][kind]
        out = ex.handle(e, now)
        for r in of(out, Run):
            assert int(r.lease_id.split(".")[0]) >= newest
        for s in of(out, Stop):
            assert granter[s.lease_id] == e.coordinator or e.epoch > int(s.lease_id.split(".")[0])
        if not of(out, Refused) and kind in (0, 1):
            newest = max(newest, who)
        if of(out, Stop):
            newest = max(newest, e.epoch)
        assert ex.busy() <= ex.slots
