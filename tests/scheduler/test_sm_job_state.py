"""JobState unit tests: the DAG, late binding, leases, retries with backoff, fail-fast, cancel, hostile input."""

from __future__ import annotations

import pytest

import random

from p2pcompute.scheduler import events as ev
from p2pcompute.scheduler.events import JobConfig
from p2pcompute.scheduler.job_state import JobState
from p2pcompute.scheduler.model import Condition, InputRef
from sm_harness import Coord, chain_plan, of, plan, task


def test_chain_runs_in_order_with_resolved_inputs_and_reports_outputs():
    c = Coord(chain_plan(3))
    assert c.dispatched(c.log) == ["t0"]
    out = c.run("t0")
    d = of(out, ev.Dispatch)
    assert [x.task for x in d] == ["t1"] and d[0].inputs == (("in", "cid-t0", None),)
    c.run("t1")
    out = c.run("t2")
    report = of(out, ev.Report)[-1]
    assert report.kind == "done" and report.outputs == (("t2", "out", "cid-t2"),)
    assert report.progress.done == 3 and c.js.state == "done"
    # replicate comes before the report of the same step (the driver relies on the order)
    assert out.index(of(out, ev.Replicate)[-1]) < out.index(report)


def test_late_binding_first_accept_wins_and_the_other_offers_are_revoked():
    c = Coord(plan(task("a")))
    c.feed(ev.Placed("a", ("p1", "p2", "p3")))
    offers = c.offers("a")
    assert set(offers) == {"p1", "p2", "p3"} and len(set(offers.values())) == 3
    out = c.feed(ev.OfferAccepted("a", "p2", offers["p2"]))
    assert of(out, ev.GrantLease)[0].peer == "p2"
    assert {(r.peer, r.lease_id) for r in of(out, ev.Revoke)} == {("p1", offers["p1"]), ("p3", offers["p3"])}
    late = c.feed(ev.OfferAccepted("a", "p1", offers["p1"]))
    assert of(late, ev.Revoke)[0].peer == "p1" and not of(late, ev.GrantLease)
    assert c.state("a") == "running" and c.js.stats["late_accepts"] == 1


def test_lease_expires_without_heartbeat_and_heartbeats_keep_it():
    c = Coord(plan(task("a"), backoff=4.0), config=JobConfig(lease_s=10.0))
    lease = c.grant("a", "p1")
    for t in (8.0, 16.0, 24.0):                     # heartbeats every 8 s keep a 10 s lease
        c.feed(ev.Heartbeat("a", "p1", lease), t)
        c.tick(t + 0.5)
    assert c.state("a") == "running"
    out = c.tick(34.0)                              # 10 s after the last heartbeat
    assert [(r.peer, r.lease_id, r.reason) for r in of(out, ev.Revoke)] == [("p1", lease, "lease expired")]
    t = c.js.tasks["a"]
    assert c.state("a") == "ready" and 34.0 + 2.0 <= t.not_before <= 34.0 + 4.0
    assert t.attempts[-1]["outcome"] == ev.EXPIRED and t.failures == 1
    assert not c.dispatched(c.tick(t.not_before - 0.01))
    out = c.tick(t.not_before)
    assert of(out, ev.Dispatch)[0].avoid == frozenset({"p1"})


def test_backoff_doubles_per_failure_and_is_capped():
    c = Coord(plan(task("a"), retries=10, same=99, backoff=1.0, backoff_max=5.0))
    waits = []
    for i in range(6):
        lease = c.grant("a", f"p{i}")
        c.feed(ev.TaskFailed("a", f"p{i}", lease, ev.CRASH, f"crash {i}"))
        waits.append(c.js.tasks["a"].not_before - c.now)
        c.tick(c.js.tasks["a"].not_before)
    caps = [1, 2, 4, 5, 5, 5]
    assert all(cap / 2 <= w <= cap for w, cap in zip(waits, caps)), waits


def test_past_the_retry_limit_the_task_and_job_fail_with_every_reason():
    c = Coord(plan(task("a"), task("b"), retries=2, same=5))
    reasons = ["segfault", "oom-killed", "disk full"]
    for i, r in enumerate(reasons):
        lease = c.grant("a", f"p{i}")
        out = c.feed(ev.TaskFailed("a", f"p{i}", lease, ev.CRASH, r))
        c.tick(c.js.tasks["a"].not_before)
    assert c.state("a") == "failed" and c.js.state == "failed"
    report = of(out, ev.Report)[-1]
    assert report.kind == "failed" and all(r in report.reason for r in reasons)
    assert c.state("b") in ("cancelled",)


def test_the_same_failure_on_two_peers_fails_fast_but_not_on_one_peer_twice():
    c = Coord(plan(task("a"), retries=5, same=2))
    for _ in range(2):                              # the same peer twice: maybe a bad peer, retry
        lease = c.grant("a", "p1")
        c.feed(ev.TaskFailed("a", "p1", lease, ev.FAILED, "ZeroDivisionError"))
        c.tick(c.js.tasks["a"].not_before)
    assert c.state("a") in ("placing", "ready")
    lease = c.grant("a", "p2")
    out = c.feed(ev.TaskFailed("a", "p2", lease, ev.FAILED, "ZeroDivisionError"))
    assert c.state("a") == "failed" and c.js.tasks["a"].failures == 3
    assert "same way on 2 peers" in of(out, ev.Report)[-1].reason


def test_expiry_and_death_never_count_as_the_same_failure():
    c = Coord(plan(task("a"), retries=5, same=1), config=JobConfig(lease_s=5.0))
    c.grant("a", "p1")
    c.feed(ev.MemberDied("p1"))
    assert c.state("a") == "placing" and c.js.tasks["a"].attempts[-1]["outcome"] == ev.DIED
    c.grant("a", "p2")
    c.tick(c.now + 5.0)
    assert c.state("a") == "ready" and c.js.tasks["a"].failures == 1 and c.js.tasks["a"].lost == 1


def test_an_executors_death_is_not_charged_to_retries_but_is_bounded_apart():
    c = Coord(plan(task("a"), task("b"), retries=0, same=5), config=JobConfig(max_lost=3))
    for i in range(3):                                # three executors die under it: placed again at once
        c.grant("a", f"p{i}")
        out = c.feed(ev.MemberDied(f"p{i}"))
        assert c.state("a") == "placing" and "a" in c.dispatched(out)
        assert f"p{i}" in c.js.tasks["a"].failed_peers
    assert c.js.tasks["a"].failures == 0 and c.js.tasks["a"].lost == 3 and c.js.state == "running"
    c.grant("a", "p3")
    out = c.feed(ev.MemberDied("p3"))                 # the fourth: past max_lost, the task and the job fail
    assert c.state("a") == "failed" and c.js.state == "failed"
    assert "lost with its executor 4 times" in of(out, ev.Report)[-1].reason


def test_lost_runs_survive_the_record():
    c = Coord(plan(task("a")), config=JobConfig(max_lost=3))
    c.grant("a", "p1")
    c.feed(ev.MemberDied("p1"))
    record = c.js.to_record()
    assert record["tasks"][0]["lost"] == 1
    del record["tasks"][0]["lost"]                   # a record from a peer of an older version
    assert JobState.from_record(record, c.now, random.Random(1)).tasks["a"].lost == 0


def test_member_death_withdraws_its_offers_and_requeues_a_task_left_without_any():
    c = Coord(plan(task("a"), task("b")))
    c.feed(ev.Placed("a", ("p1", "p2")))
    c.feed(ev.Placed("b", ("p1",)))
    out = c.feed(ev.MemberDied("p1"))
    assert c.state("a") == "offered" and list(c.js.tasks["a"].offers.values()) == ["p2"]
    assert c.dispatched(out) == ["b"] and c.js.tasks["b"].failures == 0


def test_condition_false_skips_the_stage_and_what_depends_on_it():
    cond = Condition("score", "cloud", ">", 0.2)
    p = plan(task("score"), task("detect", deps=["score"], cond=cond,
                                 inputs=[InputRef("img", task="score", output="out")]),
             task("png", inputs=[InputRef("m", task="detect", output="out")]), task("other"),
             outputs=(("png", "out"), ("other", "out")))
    c = Coord(p)
    c.run("other")
    out = c.run("score", inline={"cloud": 0.1})
    assert [c.state(t) for t in ("detect", "png")] == ["skipped", "skipped"]
    report = of(out, ev.Report)[-1]
    assert report.kind == "done" and report.outputs == (("png", "out", None), ("other", "out", "cid-other"))
    assert "condition score.cloud > 0.2 is false" in c.js.tasks["detect"].reason
    assert "depends on skipped detect" in c.js.tasks["png"].reason


def test_condition_true_runs_the_stage_and_a_non_number_fails_the_job():
    cond = Condition("score", "cloud", ">", 0.2)
    c = Coord(plan(task("score"), task("detect", deps=["score"], cond=cond)))
    out = c.run("score", inline={"cloud": 0.5})
    assert c.dispatched(out) == ["detect"]
    c = Coord(plan(task("score"), task("detect", deps=["score"], cond=cond)))
    out = c.run("score", inline={"cloud": "cloudy"})
    assert c.state("detect") == "failed" and "not a finite number" in of(out, ev.Report)[-1].reason


def test_a_result_lacking_a_needed_output_is_refused_and_charged():
    c = Coord(chain_plan(2, same=2))
    lease = c.grant("t0", "p1")
    out = c.feed(ev.ResultReady("t0", "p1", lease, {"other": "cidx"}, {}))
    assert "lacks output out" in of(out, ev.Refused)[0].reason
    assert c.state("t0") == "ready" and c.js.tasks["t0"].failures == 1


def test_cancel_revokes_every_offer_and_lease():
    c = Coord(plan(task("a"), task("b"), task("c")))
    la = c.grant("a", "p1")
    c.feed(ev.Placed("b", ("p2", "p3")))
    ob = c.offers("b")
    out = c.feed(ev.Cancel())
    assert {(r.task, r.peer, r.lease_id) for r in of(out, ev.Revoke)} == {
        ("a", "p1", la), ("b", "p2", ob["p2"]), ("b", "p3", ob["p3"])}
    assert of(out, ev.Report)[-1].kind == "cancelled"
    assert {c.state(t) for t in "abc"} == {"cancelled"}
    late = c.feed(ev.ResultReady("a", "p1", la, {}, {}))
    assert c.state("a") == "cancelled" and c.js.stats["stale_results"] == 1 and not of(late, ev.Report)


def test_duplicate_and_stale_results_are_counted_never_taken():
    c = Coord(plan(task("a"), task("b")), config=JobConfig(lease_s=5.0))
    l1 = c.grant("a", "p1")
    c.tick(5.0)                                      # p1 lost its lease
    c.tick(c.js.tasks["a"].not_before)
    l2 = c.grant("a", "p2")
    c.feed(ev.ResultReady("a", "p1", l1, {"out": "cid-old"}, {}))
    assert c.js.stats["stale_results"] == 1 and c.state("a") == "running"
    c.finish("a", "p2", l2)
    c.feed(ev.ResultReady("a", "p2", l2, {"out": "cid-again"}, {}))
    assert c.js.stats["duplicate_results"] == 1 and c.js.stats["results_accepted"] == 1
    assert c.js.tasks["a"].outputs == {"out": "cid-a"}


def test_hostile_messages_are_refused_with_a_reason_never_raised():
    c = Coord(plan(task("a")))
    lease = c.grant("a", "p1")
    cases = [ev.ResultReady("zzz", "p9", lease, {}, {}), ev.ResultReady(["a"], "p9", lease),
             ev.ResultReady("a", "p9", lease, {"out": "c"}, {}), ev.Heartbeat("a", "p9", lease),
             ev.OfferAccepted("a", "p9", "9.9"), ev.TaskFailed("a", "p1", lease, "explode", ""),
             ev.Heartbeat("a", "p1", ["0.1"]), ev.Heartbeat("a", ["p1"], lease), ev.ResultReady("a", "p1", "x" * 100)]
    for e in cases:
        out = c.feed(e)
        assert of(out, ev.Refused), e
    assert c.state("a") == "running" and c.js.stats["refused"] == len(cases)
    out = c.feed(ev.ResultReady("a", "p1", lease, {"out": 5}, {"x": [1, 2]}))
    assert "not a CID" in of(out, ev.Refused)[0].reason and c.state("a") == "ready"


def test_offers_lapse_and_refusals_requeue_without_charging_the_task():
    c = Coord(plan(task("a")), config=JobConfig(offer_timeout_s=20.0, placement_retry_s=1.0))
    c.feed(ev.Placed("a", ("p1", "p2")))
    offers = c.offers("a")
    c.feed(ev.TaskFailed("a", "p1", offers["p1"], ev.REJECTED, "busy"))
    assert c.state("a") == "offered"
    out = c.tick(20.0)
    assert of(out, ev.Revoke)[0].reason == "offer lapsed" and c.state("a") == "ready"
    assert c.js.tasks["a"].failures == 0 and c.js.tasks["a"].declines == 2
    assert c.dispatched(c.tick(21.0)) == ["a"]


def test_a_task_no_peer_can_run_fails_after_the_placement_timeout_with_the_reason():
    c = Coord(plan(task("a")), config=JobConfig(placement_retry_s=10.0, placement_timeout_s=30.0))
    why = "no peer offers arch=arm64: 12 peers known"
    for t in range(0, 40, 10):
        c.feed(ev.Placed("a", (), why), float(t))
        c.tick(t + 10.0)
    assert c.state("a") == "failed" and why in c.js.reason


def test_fetch_failure_is_a_charged_failure_and_the_task_runs_again():
    c = Coord(plan(task("a")))
    lease = c.grant("a", "p1")
    c.feed(ev.ResultReady("a", "p1", lease, {"out": "cid1"}, {}))
    c.feed(ev.FetchFailed("a", lease, "no provider"))
    t = c.js.tasks["a"]
    assert c.state("a") == "ready" and t.attempts[-1]["outcome"] == ev.FETCH and t.accepted is None
    c.tick(t.not_before)
    c.run("a", "p2")
    assert c.js.state == "done" and c.js.stats["results_accepted"] == 1


def test_in_flight_dispatches_are_bounded():
    c = Coord(plan(*[task(f"t{i}") for i in range(10)]), config=JobConfig(max_in_flight=3))
    assert len(c.dispatched(c.log)) == 3
    c.feed(ev.Placed("t0", ("p1",)))
    assert not c.dispatched()                       # offered still counts as in flight
    out = c.feed(ev.OfferAccepted("t0", "p1", c.offers("t0")["p1"]))
    assert c.dispatched(out) == ["t3"]              # running does not


def test_story_and_version_follow_each_change():
    c = Coord(plan(task("a")))
    v0 = c.js.version
    c.run("a")
    assert c.js.version > v0
    steps = [(old, new) for _, _, old, new in c.js.tasks["a"].story]
    assert steps == [("waiting", "ready"), ("ready", "placing"), ("placing", "offered"), ("offered", "running"),
                     ("running", "fetching"), ("fetching", "done")]
    versions = [r.version for r in of(c.log, ev.Replicate)]
    assert versions == sorted(set(versions))


def test_handle_before_start_is_a_bug():
    import random
    from p2pcompute.scheduler.job_state import JobState
    js = JobState(plan(task("a")), 0.0, random.Random(0))
    with pytest.raises(RuntimeError):
        js.handle(ev.Tick(), 0.0)


def test_an_empty_job_is_done_at_once_and_describe_shows_attempts_and_story():
    c = Coord(plan())
    assert c.js.state == "done" and of(c.log, ev.Report)[-1].kind == "done"
    c = Coord(plan(task("a")))
    lease = c.grant("a", "p1")
    c.feed(ev.TaskFailed("a", "p1", lease, ev.TIMEOUT, "over 3600 s"))
    [a] = c.js.describe()
    assert a["state"] == "ready" and a["attempts"][0]["outcome"] == ev.TIMEOUT
    assert a["attempts"][0]["peer"] == "p1" and a["story"][-1][1].startswith("timeout on 'p1'")


def test_tasks_no_peer_had_room_for_are_placed_again_on_room_oldest_first_not_after_a_timer():
    c = Coord(plan(task("a"), task("b"), task("c")), config=JobConfig(placement_retry_s=5.0))
    assert c.dispatched(c.log) == ["a", "b", "c"]
    for tid in ("b", "a", "c"):                      # b found no room first, then a, then c
        c.feed(ev.Placed(tid, (), "all 2 peers that can run it are busy"), 1.0)
    assert [c.state(t) for t in "abc"] == ["ready"] * 3 and c.js.waiting_for_room() == 3
    assert not c.dispatched(c.tick(2.0))             # no timer has passed yet
    out = c.feed(ev.Room(2), 2.0)                    # offers answered: room for two
    assert c.dispatched(out) == ["b", "a"] and c.state("c") == "ready"
    assert c.js.tasks["a"].failures == 0 and c.js.tasks["a"].declines == 0      # not charged
    out = c.feed(ev.Room(5), 2.5)                    # room for more than wait: only c is left
    assert c.dispatched(out) == ["c"] and c.js.waiting_for_room() == 0
    c.feed(ev.Placed("c", (), "busy"), 3.0)          # c waits again: without Room, its timer places it
    assert c.dispatched(c.tick(7.99)) == [] and c.dispatched(c.tick(8.0)) == ["c"]
    assert not c.dispatched(c.feed(ev.Room(3), 8.5))  # c is placing already: a stale wait is skipped


def test_a_task_whose_offers_were_all_refused_waits_for_room_too():
    c = Coord(plan(task("a")), config=JobConfig(placement_retry_s=5.0))
    c.feed(ev.Placed("a", ("p1",)))
    lease = c.offers("a")["p1"]
    c.feed(ev.TaskFailed("a", "p1", lease, ev.REJECTED, "16 reservations queued, no free slot"), 1.0)
    assert c.state("a") == "ready" and c.js.waiting_for_room() == 1
    assert c.dispatched(c.feed(ev.Room(1), 1.5)) == ["a"]


def test_a_task_with_an_input_nobody_holds_fails_at_once_without_an_attempt():
    from sm_harness import Coord, chain_plan

    c = Coord(chain_plan(2))
    assert c.state("t0") == "placing"
    c.feed(ev.Placed("t0", (), "", "input_not_found: input in (cid-x) not found: nobody"))
    assert c.state("t0") == "failed" and c.js.tasks["t0"].attempts == []
    assert c.js.state == "failed" and "input_not_found: input in (cid-x) not found" in c.js.reason
    d = Coord(chain_plan(2))
    d.feed(ev.Placed("t0", ("p1",)))                     # offered already: a late verdict is stale
    d.feed(ev.Placed("t0", (), "", "input_not_found: late"))
    assert d.state("t0") == "offered" and d.js.stats["stale_placements"] == 1 and d.js.state == "running"
