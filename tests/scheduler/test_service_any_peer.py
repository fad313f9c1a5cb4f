"""A job handled through any peer, on real libp2p peers (in-process, loopback TCP): ``logs`` and ``cancel``
through a peer that does not coordinate it, who may cancel, and ``jobs`` on the submitting peer after its
job moved to another coordinator (a takeover while the submitter is alive, as in test_service_fencing.py),
and ``jobs --all``.
"""

from __future__ import annotations

import json

import pytest
import trio

from p2pcompute.node.api import HttpError
from p2pcompute.storage.importer import import_path
from test_service_fencing import Slow
from test_service_net import start_peers, submit, wait_for, workspace


async def test_cancel_logs_and_jobs_through_peers_that_do_not_coordinate_the_job(tmp_path):
    workspace(tmp_path)
    async with trio.open_nursery() as nursery:
        nodes, _ = await start_peers(nursery, tmp_path)
        a, b, c = nodes
        for node in nodes:
            store = node.services["storage"].blockstore
            for f in sorted((tmp_path / "x").iterdir()):
                store.pin(import_path(f, store.put).cid)
            node.services["compute"].executor = Slow(node.services["compute"].executor, 30.0)  # runs outlast the test
        sa, sb, sc = (n.services["scheduler"] for n in nodes)
        job_id = await submit(a, tmp_path)
        assert sa.jobs[job_id].js.plan.submitter == str(a.peer_id)

        def running_replicated():
            held = [s.held.get(job_id) for s in (sb, sc)]
            return all(h and any(t["state"] == "running" for t in h.record["tasks"]) for h in held)

        await wait_for(running_replicated, 60)

        # logs through C: the attempts of the tasks that ran, as A has them
        status, _, body = await sc._api_logs(b"", {"id": job_id})
        got = json.loads(body)
        ran = {tid for tid, t in sa.jobs[job_id].js.tasks.items() if t.attempts}
        assert status == 200 and {t["task"] for t in got["tasks"]} <= ran and got["tasks"]
        assert all(a_["peer"] and a_["attempt"] >= 1 for t in got["tasks"] for a_ in t["attempts"])
        with pytest.raises(HttpError) as no_task:
            await sc._api_logs(b"", {"id": job_id, "task": "nope"})
        assert no_task.value.status == 404

        # cancel through C, which neither submitted nor coordinates it: refused by A, and the job goes on
        with pytest.raises(HttpError) as refused:
            await sc._api_cancel(b"{}", {"id": job_id})
        assert refused.value.status == 403 and "submitted through" in str(refused.value)
        assert sa.jobs[job_id].js.state == "running"

        # B takes the job over while A lives; A steps down: its `jobs` still lists it, at B, running
        live = sb._live
        sb._live = lambda: live() - {a.peer_id}
        await sb._take_over(job_id)
        await wait_for(lambda: job_id not in sa.jobs, 60)
        status, _, body = await sa._api_list(b"", {})
        listed = {j["job_id"]: j for j in json.loads(body)["jobs"]}
        assert listed[job_id]["moved"] and listed[job_id]["coordinator"] == str(b.peer_id)
        assert listed[job_id]["state"] == "running" and listed[job_id]["epoch"] == 1

        # `jobs --all` through C finds it at B
        status, _, body = await sc._api_list(b"", {"all": "1"})
        everything = json.loads(body)
        assert everything["peers_asked"] == 2 and everything["peers_answered"] == 2
        assert [j["coordinator"] for j in everything["jobs"] if j["job_id"] == job_id] == [str(b.peer_id)]

        # A, the peer it was submitted through, cancels it at B over libp2p
        status, _, body = await sa._api_cancel(json.dumps({"reason": "enough"}).encode(), {"id": job_id})
        assert status == 200 and json.loads(body)["job_id"] == job_id
        with trio.fail_after(60):
            report = await sb.wait(job_id)
        assert report.kind == "cancelled" and report.reason == "enough"
        status, _, body = await sa._api_list(b"", {"state": "cancelled"})
        assert [j["job_id"] for j in json.loads(body)["jobs"]] == [job_id]
        nursery.cancel_scope.cancel()
