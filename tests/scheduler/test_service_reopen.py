"""A job that ended done whose results only its coordinator held, on real libp2p peers (in-process, loopback):
the coordinator dies, its closest live replica finds the outputs nowhere, reopens the job, runs the tasks that
made them again, and the job ends done again with its results pinned there."""

from __future__ import annotations

import trio

from p2pcompute.storage.cid import Cid
from p2pcompute.storage.importer import import_path
from test_service_net import check_results, start_peers, submit, wait_for, workspace


async def test_a_done_jobs_results_lost_with_its_coordinator_are_made_again_by_its_successor(tmp_path):
    arrays = workspace(tmp_path)
    async with trio.open_nursery() as nursery:
        nodes, scopes = await start_peers(nursery, tmp_path)
        a = nodes[0]
        for node in nodes[1:]:
            store = node.services["storage"].blockstore
            for f in sorted((tmp_path / "x").iterdir()):
                store.pin(import_path(f, store.put).cid)
            node.services["scheduler"].config.fetch_timeout_s = 5.0      # a lost output is given up on sooner
        sa = a.services["scheduler"]
        job_id = await submit(a, tmp_path)
        with trio.fail_after(120):
            first = await sa.wait(job_id)
        assert first.kind == "done", first.reason
        await wait_for(lambda: all((h := n.services["scheduler"].held.get(job_id)) and h.record["state"] == "done"
                                   for n in nodes[1:]), 120)
        # B and C lose the outputs they made: A alone holds every output (those it made, those it fetched)
        for node in nodes[1:]:
            store = node.services["storage"].blockstore
            for _, _, cid in first.outputs:
                store.unpin(Cid.parse(cid))
            store.gc()
            assert not any(store.has(Cid.parse(cid)) for _, _, cid in first.outputs)
        scopes[0].cancel()                                       # then A dies
        await wait_for(lambda: any(job_id in n.services["scheduler"].jobs for n in nodes[1:]), 240)
        heir = next(n for n in nodes[1:] if job_id in n.services["scheduler"].jobs)
        svc = heir.services["scheduler"]
        with trio.fail_after(120):
            report = await svc.wait(job_id)
        assert report.kind == "done", report.reason
        js = svc.jobs[job_id].js
        assert svc.stats["reopened"] == 1 and js.stats["reopened"] == 1 and js.epoch == 1
        assert js.stats["results_lost"] == len(first.outputs) // 2        # each task made y and s: run once more
        assert sorted(report.outputs) == sorted(first.outputs)           # the same results, made again
        for t in js.tasks.values():     # the first result lost, then made again once (a loaded machine may
            outcomes = [a_["outcome"] for a_ in t.attempts]      # add an expired or revoked attempt between)
            assert outcomes[0] == "lost" and outcomes[-1] == "ok" and outcomes.count("ok") == 1, t.attempts
        check_results(heir, report, arrays)
        nursery.cancel_scope.cancel()
