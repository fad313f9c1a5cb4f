"""A result held only by a coordinator that died: after the takeover, ``ResultLost`` runs its task again and
what reads it waits for the new run, instead of failing the job (pure JobState)."""

from __future__ import annotations

from p2pcompute.scheduler import events as ev
from p2pcompute.scheduler.model import InputRef
from sm_harness import Coord, chain_plan, of, plan, task
from test_sm_failover import _replica


def test_a_lost_result_runs_its_task_again_and_its_running_reader_waits_for_it():
    c = Coord(chain_plan(3))
    c.run("t0", "p1")
    l1 = c.grant("t1", "p2")
    r = _replica(c, now=20.0)                  # the coordinator died; t1's lease is revoked and t1 queued again
    assert r.state("t0") == "done" and r.state("t1") == "placing"
    out = r.feed(ev.ResultLost("t0", "not found"))
    assert r.state("t0") == "placing" and r.state("t1") == "waiting"   # t1 waits for t0 again
    assert r.dispatched(out) == ["t0"]
    assert r.js.stats["results_lost"] == 1
    assert [a["outcome"] for a in r.js.tasks["t0"].attempts] == ["lost"]
    assert r.js.tasks["t0"].failures == 0                  # not charged
    # t1's old placing answer is stale; t0 runs again elsewhere, then t1, then t2
    r.feed(ev.Placed("t1", ("p3",)))
    assert r.state("t1") == "waiting"
    r.run("t0", "p3", outputs={"out": "cid-t0-again"})
    assert r.state("t1") == "placing"
    assert r.js._resolve_inputs(r.js.tasks["t1"]) == (("in", "cid-t0-again", None),)
    r.run("t1", "p3")
    out = r.run("t2", "p3")
    assert r.js.state == "done" and of(out, ev.Report)[-1].kind == "done"
    assert [a["outcome"] for a in r.js.tasks["t0"].attempts] == ["lost", "ok"]
    # the old lease of t1 at p2 reports late: not taken
    r.feed(ev.ResultReady("t1", "p2", l1, {"out": "old"}, {}))
    assert r.js.tasks["t1"].outputs == {"out": "cid-t1"}


def test_a_running_reader_of_a_lost_result_is_revoked_and_a_finished_one_is_left_alone():
    p = plan(task("a"), task("b", inputs=[InputRef("x", task="a", output="out")]),
             task("c", inputs=[InputRef("x", task="a", output="out")]), outputs=(("b", "out"), ("c", "out")))
    c = Coord(p)
    c.run("a", "p1")
    c.run("b", "p2")
    lc = c.grant("c", "p3")
    out = c.feed(ev.ResultLost("a", "gone"))
    assert [(v.task, v.peer, v.lease_id) for v in of(out, ev.Revoke)] == [("c", "p3", lc)]
    assert c.state("b") == "done" and c.state("c") == "waiting" and c.state("a") == "placing"
    assert c.js.tasks["c"].attempts[-1]["outcome"] == ev.REVOKED
    c.run("a", "p4")
    c.run("c", "p4")
    assert c.js.state == "done" and c.state("b") == "done"


def test_a_loss_of_a_task_not_done_or_of_a_failed_or_cancelled_job_changes_nothing():
    c = Coord(chain_plan(2))
    c.feed(ev.ResultLost("t0", "x"))
    assert c.js.stats["stale_losses"] == 1 and c.state("t0") == "placing"
    c.run("t0")
    c.feed(ev.Cancel("stop"))
    assert c.js.state == "cancelled"
    out = c.feed(ev.ResultLost("t0", "x"))
    assert c.js.state == "cancelled" and c.state("t0") == "done" and not of(out, ev.Dispatch)
    out = c.feed(ev.ResultLost("nope", "x"))
    assert of(out, ev.Refused)


def test_a_done_job_whose_output_is_lost_reopens_runs_the_tasks_that_made_it_and_ends_done_again():
    """The successor of a dead coordinator finds a finished job's output nowhere (ResultLost for the output
    task, then for the lost input it read): the job runs again, only those tasks, and reports done anew."""
    c = Coord(chain_plan(3))
    for tid in ("t0", "t1", "t2"):
        c.run(tid, "p1")
    assert c.js.state == "done"
    r = _replica(c, now=30.0)                    # a finished job's record, taken over
    assert r.js.state == "done" and not of(r.last, ev.Dispatch) and not of(r.last, ev.Report)
    out = r.feed(ev.ResultLost("t2", "not found"))          # the job output, top-down: then what it read
    assert r.js.state == "running" and r.js.reason == "" and r.dispatched(out) == ["t2"]
    assert of(out, ev.Report)[-1].kind == "progress" and r.js.stats["reopened"] == 1
    out = r.feed(ev.ResultLost("t1", "not found"))
    assert r.state("t2") == "waiting" and r.state("t1") == "placing" and r.state("t0") == "done"
    r.run("t1", "p2", outputs={"out": "cid-t1-again"})
    assert r.js._resolve_inputs(r.js.tasks["t2"]) == (("in", "cid-t1-again", None),)
    out = r.run("t2", "p2", outputs={"out": "cid-t2-again"})
    assert r.js.state == "done" and of(out, ev.Report)[-1].kind == "done"
    assert of(out, ev.Report)[-1].outputs == (("t2", "out", "cid-t2-again"),)
    assert [a["outcome"] for a in r.js.tasks["t2"].attempts] == ["lost", "ok"]
    assert r.js.stats["reopened"] == 1 and r.js.stats["results_lost"] == 2
    assert [a["outcome"] for a in r.js.tasks["t0"].attempts] == ["ok"]       # t0's result was not lost


def test_after_a_takeover_that_holds_results_the_job_ends_only_once_each_is_found_again_or_run_again():
    c = Coord(plan(task("a"), task("b"), outputs=(("a", "out"), ("b", "out"))))
    c.run("a", "p1")
    la = c.js.tasks["a"].accepted
    lb = c.grant("b", "p2")
    r = _replica(c, now=10.0)
    assert r.js.hold_results() == ["a"]
    r.run("b", "p3")
    assert r.js.state == "running" and r.state("a") == r.state("b") == "done"   # a's outputs not yet found
    r.feed(ev.Fetched("a", lb))                                  # not a's accepted lease: changes nothing
    assert r.js.state == "running"
    out = r.feed(ev.Fetched("a", la))
    assert r.js.state == "done" and of(out, ev.Report)[-1].kind == "done"
    # the other way: a's result is lost, it runs again, then the job ends
    r = _replica(c, now=10.0)
    r.js.hold_results()
    r.run("b", "p3")
    r.feed(ev.ResultLost("a", "gone"))
    assert r.js.state == "running" and r.state("a") == "placing"
    r.run("a", "p3")
    assert r.js.state == "done"
    # a driver that does not hold results (the simulations) sees the job end as before
    r = _replica(c, now=10.0)
    r.run("b", "p3")
    assert r.js.state == "done"
