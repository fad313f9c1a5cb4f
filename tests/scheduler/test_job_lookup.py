"""job_lookup.py without a network: a summary from a replica's record, and JobQuery's answers and bounds.
(Through real daemons: test_failover_daemons.py; through a fenced coordinator: test_service_fencing.py.)"""

from __future__ import annotations

import cbor2

from p2pcompute.node.identity import Identity
from p2pcompute.scheduler.job_lookup import MAX_SUMMARY_BYTES, best_answer, record_summary
from p2pcompute.scheduler.messages import JobQuery
from p2pcompute.scheduler.replication import _Replica
from p2pcompute.scheduler.service import SchedulerService
from sm_harness import Coord, chain_plan


def _record(n=3, done=1):
    c = Coord(chain_plan(n))
    for i in range(done):
        c.run(f"t{i}", "p1")
    return cbor2.loads(cbor2.dumps(c.js.to_record())), c


def test_a_summary_from_a_replicas_record_says_what_the_coordinators_would():
    record, c = _record(3, 3)
    s = record_summary(record, "coord", ("r1", "r2"))
    assert s["state"] == "done" and s["coordinator"] == "coord" and s["source"] == "replica"
    assert s["progress"] == {"done": 3, "running": 0, "queued": 0, "failed": 0, "skipped": 0, "cancelled": 0,
                             "total": 3}
    assert s["outputs"] == [list(o) for o in c.js.outputs()] == [["t2", "out", "cid-t2"]]
    assert [t["state"] for t in s["tasks"]] == ["done"] * 3 and s["replicas"] == ["r1", "r2"]
    record, _ = _record(3, 1)
    s = record_summary(record, "coord", tasks=False)
    assert s["state"] == "running" and s["progress"]["done"] == 1 and s["progress"]["queued"] == 2
    assert s["outputs"] == [["t2", "out", None]] and "tasks" not in s


async def test_a_job_query_is_answered_from_a_held_record_and_unknown_jobs_are_not_found():
    svc = SchedulerService()
    coord = Identity.generate().peer_id
    record, _ = _record(3, 2)
    svc.held["job1"] = _Replica(record, coord, ())
    asker = Identity.generate().peer_id
    reply = await svc._on_job_query(asker, JobQuery("job1"))
    assert reply.found and reply.source == "replica"
    got = cbor2.loads(reply.summary)
    assert got["coordinator"] == str(coord) and got["progress"]["done"] == 2 and len(got["tasks"]) == 3
    assert not (await svc._on_job_query(asker, JobQuery("nope"))).found


async def test_a_summary_too_large_for_a_message_leaves_out_its_tasks_then_its_outputs():
    svc = SchedulerService()
    record, _ = _record(2, 2)
    for t in record["tasks"]:
        t["attempts"][0]["message"] = "x" * (MAX_SUMMARY_BYTES // 2)     # a huge task list
    svc.held["job1"] = _Replica(record, Identity.generate().peer_id, ())
    reply = await svc._on_job_query(Identity.generate().peer_id, JobQuery("job1"))
    got = cbor2.loads(reply.summary)
    assert reply.found and "tasks" not in got and got["left_out"] == ["tasks", "stats"] and got["outputs"]
    assert len(reply.summary) <= MAX_SUMMARY_BYTES


def test_the_coordinators_answer_wins_else_the_newest_replica_copy():
    old, new = {"epoch": 0, "version": 9}, {"epoch": 1, "version": 2}
    forged = {"epoch": "9", "version": 10**6}          # not integers: counts as the oldest
    assert best_answer([]) is None
    assert best_answer([("replica", old), ("replica", new), ("replica", forged)]) == ("replica", new)
    assert best_answer([("replica", new), ("coordinator", old)]) == ("coordinator", old)
