"""Without a network: who may cancel a job, the jobs a peer remembers it submitted (submitted.py), the plan's
``submitter`` on the wire, and the bounds of JobCancel / JobList / JobListing (417-419)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pcompute.node import wire
from p2pcompute.scheduler.job_lookup import may_cancel
from p2pcompute.scheduler.messages import JobCancel, JobList, JobListing
from p2pcompute.scheduler.model import JobPlan, PlanError
from p2pcompute.scheduler.submitted import MAX_KEPT, MAX_LOOKUPS, Submitted, listed
from sm_harness import chain_plan


def test_the_submitting_peer_and_the_coordinator_may_cancel_nobody_else():
    assert may_cancel("A", "A", "B")            # through the peer it was submitted through, after a takeover
    assert may_cancel("A", "B", "B")            # the coordinator's own control API
    assert not may_cancel("A", "C", "B")
    assert not may_cancel("", "C", "B") and not may_cancel("", "", "B")   # an old plan: its coordinator only
    assert may_cancel("", "B", "B")


def test_a_plans_submitter_travels_with_it_and_is_bounded():
    plan = chain_plan(2)
    from dataclasses import replace

    signed = replace(plan, submitter="12D3KooWpeer")
    assert JobPlan.from_wire(signed.to_wire()).submitter == "12D3KooWpeer"
    old = plan.to_wire()
    del old["submitter"]
    assert JobPlan.from_wire(old).submitter == ""          # a record from before: no submitter
    with pytest.raises(PlanError, match="submitter"):
        JobPlan.from_wire(replace(plan, submitter="x" * 129).to_wire())


def _summary(i, state="running", coordinator="A"):
    return {"job_id": f"j{i}", "name": "n", "coordinator": coordinator, "state": state, "reason": "",
            "progress": {"done": 0}, "epoch": 0, "outputs": [], "tasks": [{"task": "t"}], "stats": {"x": 1}}


def test_submitted_jobs_are_bounded_oldest_forgotten_and_kept_without_their_tasks():
    s = Submitted()
    for i in range(MAX_KEPT + 5):
        s.add(_summary(i))
    assert len(s.jobs) == MAX_KEPT and "j0" not in s.jobs and f"j{MAX_KEPT + 4}" in s.jobs
    assert "tasks" not in s.jobs["j10"] and "stats" not in s.jobs["j10"]


def test_moved_jobs_newest_first_and_only_the_unfinished_newest_are_looked_up():
    s = Submitted()
    for i in range(MAX_LOOKUPS + 10):
        s.add(_summary(i, "done" if i % 2 else "running"))
    here = {"j0", "j2"}                                      # still coordinated here
    moved = s.moved(here)
    assert moved[0] == f"j{MAX_LOOKUPS + 9}" and "j0" not in moved and len(moved) == MAX_LOOKUPS + 8
    asked = s.to_look_up(here)
    assert len(asked) == min(MAX_LOOKUPS, (MAX_LOOKUPS + 10) // 2 - 2)
    assert all(s.jobs[j]["state"] == "running" for j in asked) and asked == [j for j in moved if j in asked]
    s.seen(_summary(4, "cancelled", "B"))                    # a newer summary: kept, its place too
    assert s.jobs["j4"]["state"] == "cancelled" and s.jobs["j4"]["coordinator"] == "B"
    assert "j4" not in s.to_look_up(here)
    s.seen(_summary(99999))                                  # not submitted here: not kept
    assert "j99999" not in s.jobs
    row = listed(s.jobs["j4"], moved=True, stale=True)
    assert row["moved"] and row["stale"] and row["submitted_here"] and row["state"] == "cancelled"


def test_submitted_jobs_survive_a_restart_and_a_bad_file_is_ignored(tmp_path):
    path = tmp_path / "submitted.json"
    s = Submitted(path)
    s.add(_summary(1))
    s.add(_summary(2, "done"))
    s.save()
    again = Submitted(path)
    again.load()
    assert list(again.jobs) == ["j1", "j2"] and again.jobs["j2"]["state"] == "done"
    path.write_text(json.dumps({"jobs": [{"job_id": 7}, "x", {"job_id": "ok", "state": "running"}]}))
    odd = Submitted(path)
    odd.load()
    assert list(odd.jobs) == ["ok"]
    path.write_text("{not json")
    broken = Submitted(path)
    broken.load()
    assert broken.jobs == {}
    Submitted(tmp_path / "none.json").load()                  # no file: nothing, no error


@given(st.text(max_size=600), st.text(min_size=1, max_size=140))
def test_job_cancel_checks_its_fields(reason, job_id):
    ok = len(reason) <= 512 and len(job_id) <= 128
    if ok:
        msg = JobCancel(job_id, reason)
        assert wire.decode(wire.encode(msg)).message == msg
    else:
        with pytest.raises(ValueError):
            JobCancel(job_id, reason)


def test_job_list_and_listing_check_their_fields():
    assert wire.decode(wire.encode(JobList("running", 100))).message == JobList("running", 100)
    assert wire.decode(wire.encode(JobListing(b"\x80", 3))).message == JobListing(b"\x80", 3)
    for bad in (dict(state="lost"), dict(limit=0), dict(limit=1001), dict(limit=True)):
        with pytest.raises(ValueError):
            JobList(**bad)
    with pytest.raises(ValueError):
        JobListing(b"", -1)


def test_results_that_cannot_be_fetched_say_which_and_why(tmp_path):
    from types import SimpleNamespace

    from p2pcompute.client import Job
    from p2pcompute.errors import P2PComputeError
    from p2pcompute.node.client import ApiError

    def call(method, path, body=None, **kw):
        raise ApiError("bafkreigone not found within 60 s (no provider in the DHT)")

    job = Job(SimpleNamespace(data_dir=tmp_path, api=SimpleNamespace(_call=call)), "j1")
    summary = {"job_id": "j1", "state": "done",
               "outputs": [["t", "out", "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"]]}
    with pytest.raises(P2PComputeError, match=r"result out of task t \(bafkrei.*\) of job j1 cannot be fetched: "
                                              r"bafkreigone not found.*successor runs the task again"):
        list(job.result_bytes(summary))
