"""The service's line question before a takeover, on memnet (real services, in-memory network, real time).

Six peers: X sends job records (the protocol's ``JobRecordFull``) to R, the replica about to take over, and to
the record's other holders; then R takes each job over (``_take_over``, as when X dies). For one job the
holders answer with garbage (a reply of another type, another job's newer line, a frame that breaks
``LineAnswer``'s bounds) or with R's own line: every hostile answer is no answer, counted, and R takes the job
over and runs it to its end. For another job one holder knows a newer line: R drops and fences its copy
without taking it over, and an older record sent again is fenced off.
"""

from __future__ import annotations

import random
from dataclasses import replace

import cbor2
import trio

from p2pcompute.scheduler.job_state import JobState
from p2pcompute.scheduler.messages import JobRecordFull, LineAnswer, LineQuery, SchedAck
from p2pcompute.simulations.memnet import MemNetwork
from test_service_memnet import CONFIG, add_inputs, plan_for, start_peers


def _forged_answer(job_id: str) -> LineAnswer:
    """A LineAnswer whose epoch breaks the type's bounds (a hostile peer's encoder does not check)."""
    msg = object.__new__(LineAnswer)
    for name, value in (("job_id", job_id), ("epoch", 1 << 40), ("nonce", 0)):
        object.__setattr__(msg, name, value)
    return msg


async def test_hostile_line_answers_are_ignored_and_a_newer_line_averts_the_takeover(tmp_path):
    net = MemNetwork(11, latency=(0.001, 0.004))
    plan, _ = plan_for(tmp_path, 2)
    other = replace(plan, job_id="memjob-newer")
    async with trio.open_nursery() as nursery:
        nodes = await start_peers(nursery, net, tmp_path, 6, {})
        add_inputs(nodes, tmp_path)
        x, r, wrong_type, wrong_job, undecodable, honest = nodes
        sx, sr = x.services["scheduler"], r.services["scheduler"]
        holders = tuple(str(n.peer_id) for n in nodes[1:])

        async def as_wrong_type(peer, msg):
            return SchedAck(True, "")

        async def as_wrong_job(peer, msg):
            return LineAnswer("memjob-elsewhere", 99, 0)

        async def as_undecodable(peer, msg):
            return _forged_answer(msg.job_id)

        wrong_type.transport.on_request(LineQuery, as_wrong_type)
        wrong_job.transport.on_request(LineQuery, as_wrong_job)
        undecodable.transport.on_request(LineQuery, as_undecodable)

        def records(p):
            js = JobState(p, trio.current_time(), random.Random(5), CONFIG.job)
            js.start(trio.current_time())
            old = cbor2.loads(cbor2.dumps(js.to_record()))
            heir = JobState.from_record(old, trio.current_time(), random.Random(6), CONFIG.job)
            heir.start(trio.current_time())
            return js, heir

        # job 1: every holder has R's line or answers garbage
        js1, _ = records(plan)
        rec = JobRecordFull(plan.job_id, cbor2.dumps(js1.to_record()), holders)
        for n in (r, honest):
            assert (await sx._ask(n.peer_id, rec)).ok
        # job 2: the honest holder already has the newer line of a heir (sent through the protocol too)
        js2, heir2 = records(other)
        stale = JobRecordFull(other.job_id, cbor2.dumps(js2.to_record()), holders)
        assert (await sx._ask(r.peer_id, stale)).ok
        assert (await sx._ask(honest.peer_id, JobRecordFull(other.job_id, cbor2.dumps(heir2.to_record()),
                                                            holders))).ok

        await sr._take_over(plan.job_id)
        assert sr.jobs[plan.job_id].js.epoch == 1 and sr.stats["takeovers"] == 1
        assert sr.stats["takeovers_averted"] == 0
        assert sr.stats["line_answers_ignored"] == 2     # the wrong type, and another job's (newer) line
        assert sr.stats["line_queries_unanswered"] == 1  # the frame that does not decode: dropped, a timeout
        assert sum(r.transport.stats.rejected.values()) >= 1
        await sr._take_over(other.job_id)
        assert other.job_id not in sr.jobs and other.job_id not in sr.held
        assert sr.stats["takeovers_averted"] == 1 and sr.stats["takeovers"] == 1   # job 1's, not this one
        assert sr.fences[other.job_id] == (1, heir2.nonce)
        reply = await sx._ask(r.peer_id, stale)          # the stale line is fenced off at R now
        assert not reply.ok and reply.reason.startswith("fenced:")

        with trio.fail_after(60):                        # the takeover is real: the job runs to its end at R
            report = await sr.wait(plan.job_id)
        assert report.kind == "done", report.reason
        nursery.cancel_scope.cancel()
