"""The job record and fail-over: a replica's JobState.from_record continues and the job completes."""

from __future__ import annotations

import random

import cbor2
import pytest

from p2pcompute.scheduler import events as ev
from p2pcompute.scheduler.job_record import RecordGap, apply_delta
from p2pcompute.scheduler.job_state import JobState
from p2pcompute.scheduler.model import InputRef, PlanError
from sm_harness import Coord, of, plan, task


def _diamond():
    return plan(task("a"), task("b"), task("x"),
                task("c", inputs=[InputRef("l", task="a", output="out"), InputRef("r", task="b", output="out")]),
                outputs=(("c", "out"),))


def _replica(c: Coord, now: float, seed=7) -> Coord:
    record = cbor2.loads(cbor2.dumps(c.js.to_record()))      # what a replica holds, through the wire format
    js = JobState.from_record(record, now, random.Random(seed))
    r = Coord(None, js=js, now=now)
    r.last = r.feed_start()
    return r


def test_a_replica_takes_over_revokes_running_leases_and_the_job_completes():
    c = Coord(_diamond())
    c.run("a", "p1")
    lb = c.grant("b", "p2")
    lx = c.grant("x", "p4")
    c.feed(ev.ResultReady("x", "p4", lx, {"out": "cid-x"}, {}))      # x is being fetched
    assert c.state("x") == "fetching"
    replicated = c.js.version
    r = _replica(c, now=50.0)
    assert r.js.version == replicated + 1 and of(r.last, ev.Replicate)[-1].version == replicated + 1
    # the old coordinator goes on alone (unreplicated): its acceptance is lost with it
    c.finish("b", "p2", lb)
    start = r.last
    assert [(v.task, v.peer, v.lease_id) for v in of(start, ev.Revoke)] == [("b", "p2", lb)]
    assert [f.task for f in of(start, ev.FetchResult)] == ["x"]
    assert r.dispatched(start) == ["b"] and r.js.epoch == 1
    assert r.state("a") == "done" and r.js.tasks["b"].failures == 0
    # the executor of the revoked lease answers the new coordinator: counted, not taken
    r.feed(ev.ResultReady("b", "p2", lb, {"out": "cid-b-old"}, {}))
    assert r.js.stats["stale_results"] == 1 and r.state("b") == "placing"
    r.feed(ev.Fetched("x", lx))
    lb2 = r.grant("b", "p3")
    assert lb2.startswith("1.") and lb2 != lb
    r.finish("b", "p3", lb2)
    out = r.run("c", "p1")
    assert of(out, ev.Report)[-1].kind == "done" and r.js.state == "done"
    assert r.js.tasks["b"].outputs == {"out": "cid-b"}
    assert r.js.stats["results_accepted"] == 4       # a (before), x, b, c: each once


def test_a_chain_of_takeovers_keeps_lease_ids_unique_and_the_story_says_so():
    c = Coord(_diamond())
    leases = {c.grant("a", "p1")}
    for n in range(1, 4):
        c = _replica(c, now=10.0 * n)
        assert c.js.epoch == n
        leases.add(c.grant("a", f"p{n}"))
    assert len(leases) == 4
    assert any("takeover by epoch 3" in s[1] for s in c.js.tasks["a"].story)


def test_a_replica_of_a_finished_job_stays_finished():
    c = Coord(plan(task("a")))
    c.run("a")
    r = _replica(c, now=5.0)
    assert r.js.state == "done" and not of(r.last, ev.Dispatch) and r.js.outputs() == ()
    out = r.feed(ev.ResultReady("a", "p1", c.js.tasks["a"].accepted, {"out": "again"}, {}))
    assert r.js.stats["duplicate_results"] == 1 and not of(out, ev.Report)


def test_backoff_survives_the_takeover():
    c = Coord(plan(task("a"), backoff=8.0))
    lease = c.grant("a", "p1")
    c.feed(ev.TaskFailed("a", "p1", lease, ev.CRASH, "boom"))
    not_before = c.js.tasks["a"].not_before
    r = _replica(c, now=c.now + 0.1)
    assert not r.dispatched(r.last) and r.js.tasks["a"].failed_peers == {"p1"}
    assert r.dispatched(r.tick(not_before)) == ["a"]


@pytest.mark.parametrize("damage", [
    lambda r: r.pop("plan"), lambda r: r.update(format=99), lambda r: r["tasks"].pop(),
    lambda r: r["tasks"][0].update(state="exploded"), lambda r: r["tasks"][0].update(failures="many"),
    lambda r: r.update(tasks=None),
])
def test_a_damaged_record_is_refused_with_a_plan_error(damage):
    c = Coord(_diamond())
    c.grant("a", "p1")
    record = cbor2.loads(cbor2.dumps(c.js.to_record()))
    damage(record)
    with pytest.raises(PlanError):
        JobState.from_record(record, 1.0, random.Random(0))


def _wire(x):
    return cbor2.loads(cbor2.dumps(x))


def test_deltas_keep_a_replica_equal_to_the_full_record():
    c = Coord(_diamond())
    held = _wire(c.js.to_record())
    c.js.delta()                                     # the stream starts with the full record
    steps = [lambda: c.run("a", "p1"), lambda: c.grant("b", "p2"), lambda: c.feed(ev.MemberDied("p2")),
             lambda: c.tick(c.js.tasks["b"].not_before), lambda: c.run("b", "p3"), lambda: c.run("x", "p1")]
    for step in steps:
        step()
        d = _wire(c.js.delta())
        assert len(d["tasks"]) < len(c.js.tasks) or step is steps[0]
        held = apply_delta(held, d)
        assert held == _wire(c.js.to_record())
    assert apply_delta(held, d) is held              # a repeated delta changes nothing


def test_a_missed_delta_or_a_new_epoch_asks_for_the_full_record_and_an_old_epoch_is_fenced():
    c = Coord(_diamond())
    held = _wire(c.js.to_record())
    c.js.delta()
    c.grant("a", "p1")
    c.js.delta()                                     # lost on the way
    c.grant("b", "p2")
    with pytest.raises(RecordGap):
        apply_delta(held, _wire(c.js.delta()))
    r = _replica(c, now=1.0)
    newer = _wire(r.js.to_record())
    with pytest.raises(RecordGap):
        apply_delta(held, _wire(r.js.delta()))       # epoch 1 to a replica still at epoch 0
    c.grant("x", "p3")                               # the replaced coordinator goes on
    assert apply_delta(newer, _wire(c.js.delta())) is newer


def test_leases_the_old_coordinator_issued_after_the_last_record_are_stale_and_revoked_not_refused():
    c = Coord(_diamond())
    r = _replica(c, now=1.0)
    c.feed(ev.Placed("a", ("p1",)))                  # after the record the replica holds
    unknown = c.offers("a")["p1"]
    out = r.feed(ev.OfferAccepted("a", "p1", unknown))
    assert [(v.peer, v.lease_id) for v in of(out, ev.Revoke)] == [("p1", unknown)] and not of(out, ev.Refused)
    out = r.feed(ev.Heartbeat("a", "p1", unknown))
    assert of(out, ev.Revoke) and not of(out, ev.Refused)
    r.feed(ev.ResultReady("a", "p1", unknown, {"out": "cid"}, {}))
    assert r.js.stats["stale_results"] == 1 and r.js.stats["refused"] == 0 and r.state("a") != "done"
    out = r.feed(ev.ResultReady("a", "p1", "1.999", {"out": "cid"}, {}))    # this epoch, never issued
    assert of(out, ev.Refused)
