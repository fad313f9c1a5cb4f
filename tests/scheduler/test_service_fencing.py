"""Fencing two coordinators of one job, on real libp2p peers (in-process, loopback TCP).

Peer B takes job J over while its coordinator A is alive and believes it leads (B sees A as dead: a
partition, or a failure detector wrong for a while). B's epoch is 1; A's leases are of epoch 0. B revokes A's
running leases (the executors take a revoke of a newer epoch from a peer other than the one that granted:
leases.py), C holds B's line of the record and answers A's next replication ``fenced``, so A steps down,
carrying out no report of its own; executors refuse A's offers of the older epoch. The job completes under B
with every result taken once, and a describe through A finds it at B.
"""

from __future__ import annotations

import json

import trio

from p2pcompute.storage.cid import Cid
from p2pcompute.storage.importer import import_path
from test_service_net import check_results, start_peers, submit, wait_for, workspace


class Slow:
    """An executor whose every run takes ``delay`` seconds first."""

    def __init__(self, real, delay):
        self.real, self.delay = real, delay

    async def run(self, task, out_dir=None):
        await trio.sleep(self.delay)
        return await self.real.run(task, out_dir)

    def __getattr__(self, name):
        return getattr(self.real, name)


async def test_a_coordinator_replaced_while_alive_is_fenced_off_steps_down_and_the_job_completes_once(tmp_path):
    arrays = workspace(tmp_path)
    async with trio.open_nursery() as nursery:
        nodes, _ = await start_peers(nursery, tmp_path)
        a, b, c = nodes
        for node in nodes:
            store = node.services["storage"].blockstore
            for f in sorted((tmp_path / "x").iterdir()):
                store.pin(import_path(f, store.put).cid)
            node.services["compute"].executor = Slow(node.services["compute"].executor, 3.0)
        sa, sb, sc = (n.services["scheduler"] for n in nodes)
        job_id = await submit(a, tmp_path)

        def running_replicated():
            held = [s.held.get(job_id) for s in (sb, sc)]
            return all(h and any(t["state"] == "running" for t in h.record["tasks"]) for h in held)

        await wait_for(running_replicated, 60)
        live = sb._live
        sb._live = lambda: live() - {a.peer_id}          # B's view: A is gone (A's own view is unchanged)
        await sb._take_over(job_id)
        assert sb.jobs[job_id].js.epoch == 1 and sb.stats["takeovers"] == 1
        # B's revokes of A's running leases (epoch 0) are taken, though A granted them and is alive to them
        await wait_for(lambda: sum(s.leases.stats["successor_revokes"] for s in (sa, sb, sc)) >= 1, 30)
        # A learns it was replaced (a replica's 'fenced' answer) and steps down
        await wait_for(lambda: job_id not in sa.jobs, 60)
        assert sa.stats["stepped_down"] == 1 and not sa.jobs.get(job_id)
        with trio.fail_after(120):
            report = await sb.wait(job_id)
        assert report.kind == "done", report.reason
        js = sb.jobs[job_id].js
        for t in js.tasks.values():                      # every result taken once in the line that won
            assert t.state == "done" and sum(x["outcome"] == "ok" for x in t.attempts) == 1, t.attempts
        assert js.stats.get("duplicate_results", 0) == 0
        pins = b.services["storage"].blockstore
        await wait_for(lambda: all(Cid.parse(cid) in pins.pins for _, _, cid in report.outputs), 60)  # pulled
        check_results(b, report, arrays)
        # C holds B's line; a describe through A (which no longer coordinates it) finds the job at B
        assert sc.held[job_id].record["epoch"] == 1 and sc.held[job_id].coordinator == b.peer_id
        status, _, body = await sa._api_describe(b"", {"id": job_id})
        described = json.loads(body)
        assert status == 200 and described["coordinator"] == str(b.peer_id) and described["epoch"] == 1
        assert described["state"] == "done" and described["source"] == "coordinator"
        nursery.cancel_scope.cancel()


# --- the replica's rule, without a network: of two lines (epoch, nonce) the higher wins ---------------------


def _lines():
    import random

    import cbor2

    from p2pcompute.scheduler.job_state import JobState
    from sm_harness import Coord, plan, task

    old = Coord(plan(task("a"), task("b")), seed=1)
    old.grant("a", "p1")
    rec0 = cbor2.loads(cbor2.dumps(old.js.to_record()))
    heir = JobState.from_record(rec0, 5.0, random.Random(2))
    heir.start(5.0)
    sibling = JobState.from_record(rec0, 5.0, random.Random(3))
    sibling.start(5.0)
    return old, heir, sibling


async def test_a_replica_holding_a_newer_line_answers_an_older_coordinators_records_and_deltas_fenced():
    import cbor2

    from p2pcompute.node.identity import Identity
    from p2pcompute.scheduler.messages import JobRecordDelta, JobRecordFull
    from p2pcompute.scheduler.service import SchedulerService

    old, heir, sibling = _lines()
    coord0, coord1 = (Identity.generate().peer_id for _ in range(2))
    svc = SchedulerService()
    full = lambda js: JobRecordFull("job1", cbor2.dumps(js.to_record()))   # noqa: E731
    assert (await svc._on_record(coord0, full(old.js))).ok
    assert (await svc._on_record(coord1, full(heir))).ok                    # a newer epoch replaces it
    reply = await svc._on_record(coord0, full(old.js))
    assert not reply.ok and reply.reason.startswith("fenced:") and svc.held["job1"].record["epoch"] == 1
    old.run("b", "p2")
    reply = await svc._on_delta(coord0, JobRecordDelta("job1", cbor2.dumps(old.js.delta())))
    assert not reply.ok and reply.reason.startswith("fenced:")
    # two replicas that both took over (one epoch, two nonces): the higher nonce wins, the other is fenced
    low, high = sorted((heir, sibling), key=lambda js: js.nonce)
    svc.held.clear()
    assert (await svc._on_record(coord1, full(high))).ok
    assert (await svc._on_record(coord0, full(low))).reason.startswith("fenced:")


async def test_a_coordinator_that_receives_a_newer_line_of_its_own_job_steps_down_and_fences_an_older_one():
    import cbor2

    from p2pcompute.node.identity import Identity
    from p2pcompute.scheduler.messages import JobRecordFull
    from p2pcompute.scheduler.service import SchedulerService

    old, heir, _ = _lines()
    svc = SchedulerService()
    svc.jobs["job1"] = svc._new_job(heir, 5.0)                 # this peer coordinates epoch 1
    reply = await svc._on_record(Identity.generate().peer_id, JobRecordFull("job1", cbor2.dumps(old.js.to_record())))
    assert not reply.ok and "coordinates the job at epoch 1" in reply.reason and "job1" in svc.jobs
    svc.jobs["job1"] = svc._new_job(old.js, 0.0)               # this peer coordinates epoch 0: replaced
    sender = Identity.generate().peer_id
    assert (await svc._on_record(sender, JobRecordFull("job1", cbor2.dumps(heir.to_record())))).ok
    assert "job1" not in svc.jobs and svc.stats["stepped_down"] == 1 and svc.held["job1"].coordinator == sender
