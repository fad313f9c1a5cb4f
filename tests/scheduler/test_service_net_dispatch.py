"""Dispatch on real libp2p (three in-process peers, as in test_service_net.py): small inputs and outputs
carried in the grant and the result instead of bitswap round trips, and a grant the executor does not take
given back at once."""

from __future__ import annotations

import dataclasses

import trio

from p2pcompute.scheduler.messages import SchedAck, TaskGrant
from test_service_net import check_results, start_peers, submit, wait_for, workspace


def bitswap_bytes(nodes) -> int:
    return sum(n.services["bitswap"].stats["bytes_received"] for n in nodes)


async def test_small_inputs_and_outputs_travel_in_the_grant_and_the_result_not_by_bitswap(tmp_path):
    arrays = workspace(tmp_path)
    async with trio.open_nursery() as nursery:
        nodes, _ = await start_peers(nursery, tmp_path)
        a = nodes[0]
        before = bitswap_bytes(nodes)
        job_id = await submit(a, tmp_path)
        # the submit added and pinned the six inputs on A (announced in the background)
        plan = a.services["scheduler"].jobs[job_id].js.plan
        pins = {str(p) for p in a.services["storage"].blockstore.pins}
        assert len({i.cid for t in plan.tasks for i in t.inputs} & pins) == 6
        with trio.fail_after(120):
            report = await a.services["scheduler"].wait(job_id)
        assert report.kind == "done", report.reason
        check_results(a, report, arrays)                       # every output pinned on A, and right
        remote = sum(n.services["scheduler"].stats["tasks_run"] for n in nodes[1:])
        assert remote >= 1                                      # some ran elsewhere: their bytes moved...
        assert bitswap_bytes(nodes) == before                   # ...inside the grant and the result
        nursery.cancel_scope.cancel()


async def test_a_grant_the_executor_refuses_is_given_back_at_once_as_rejected_not_left_to_lapse(tmp_path):
    arrays = workspace(tmp_path)
    async with trio.open_nursery() as nursery:
        nodes, _ = await start_peers(nursery, tmp_path)
        a, b, c = nodes
        from p2pcompute.scheduler import leases as lx
        for n in (a, c):                  # only B has a slot: every task's accept comes from B
            n.services["scheduler"]._exec(lx.SetSlots(0))
        refused = []

        async def refuse(peer, msg):      # B accepts offers, then refuses the grant
            refused.append(msg.lease_id)
            return SchedAck(False, "refused for the test")

        real = b.transport._request_handlers[TaskGrant]
        b.transport._request_handlers[TaskGrant] = refuse
        # B's lease machine never hears of the refusals: each holds its slot until its accept times out
        # (5 s here); 1.5 s while the grants are refused makes the three refusals come sooner
        leases = b.services["scheduler"].leases
        normal = leases.config
        leases.config = dataclasses.replace(normal, accept_timeout_s=1.5)
        job_id = await submit(a, tmp_path)
        svc = a.services["scheduler"]
        await wait_for(lambda: len(refused) >= 3, 60)
        b.transport._request_handlers[TaskGrant] = real
        leases.config = normal
        for n in (a, c):
            n.services["scheduler"]._exec(lx.SetSlots(1))
        with trio.fail_after(120):
            report = await svc.wait(job_id)
        assert report.kind == "done", report.reason
        check_results(a, report, arrays)
        attempts = [x for t in svc.jobs[job_id].js.tasks.values() for x in t.attempts]
        given_back = [x for x in attempts if x["lease"] in refused]
        assert len(given_back) >= 3
        # each refused grant ended as 'rejected' with B's reason (not 'expired' a lease later), uncharged
        assert all(x["outcome"] == "rejected" and "grant not taken" in x["message"]
                   and "refused for the test" in x["message"] for x in given_back)
        assert not any(x["outcome"] == "expired" for x in attempts)
        assert all(t.failures == 0 for t in svc.jobs[job_id].js.tasks.values())
        nursery.cancel_scope.cancel()


async def test_a_cid_pinned_on_a_tasks_path_is_announced_once_in_the_background_not_again_job_after_job():
    from p2pcompute.scheduler.service import REANNOUNCE_S, SchedulerService

    svc = SchedulerService()
    svc._announce_soon("cid-x")
    svc._announce_soon("cid-x")                   # the same input submitted again, the same output made
    svc._announce_soon("cid-y")
    assert list(svc._to_announce) == ["cid-x", "cid-y"] and svc._announce_wake.is_set()
    svc._to_announce.clear()                      # announced
    svc._announce_soon("cid-x")
    assert not svc._to_announce                   # within REANNOUNCE_S: not again
    svc._announced["cid-x"] -= REANNOUNCE_S       # as if that long ago
    svc._announce_soon("cid-x")
    assert list(svc._to_announce) == ["cid-x"]
