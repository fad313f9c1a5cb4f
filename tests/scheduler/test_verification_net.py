"""Verification on real libp2p peers: five peers, one of them lying about its results.

A job mapping a small graph over six .npy files, under ``replicate(3, agree=2, rtol=1e-5)``, is submitted to
peer A. Peer E's executor swaps its outputs' CIDs (a test-only hook) but signs them as its own. Each task
runs on three peers the coordinator picks; where E takes part its result disagrees, A (the submitter's own
peer) re-executes the task, E is proven wrong and banned, and its accusation reaches the other peers, which
check it and keep E out of their replicas. The job ends with the right results, every task with evidence
signed by A that A's own check accepts (replicas are picked at random, so E misses about one job in
seven: the job is submitted again, at most ``MAX_JOBS`` times, until E took part); a tampered result is refused by that check.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import trio

from p2pcompute.ops import tensor_format
from p2pcompute.ops.graph import Graph
from p2pcompute.storage.cid import Cid
from p2pcompute.storage.exporter import read_file

from test_service_net import GRAPH, start_peers, wait_for, workspace

JOB = """
name: squares
verification: "replicate(3, agree=2, rtol=1e-5)"
inputs:
  x: x/*.npy
stages:
  - name: sq
    map: {over: inputs.x}
    ops: %s
""" % json.dumps(GRAPH)


MAX_JOBS = 8        # the coordinator picks each task's replicas at random: the liar may miss a job (1e-6 all 8)


def swap_outputs(job_id, task, outcome):
    """A liar: the two outputs' CIDs swapped (each a real CID it holds), claimed as its own result."""
    names = sorted(outcome.outputs)
    lie = dict(zip(names, reversed([outcome.outputs[n] for n in names])))
    return dataclasses.replace(outcome, outputs=lie)


async def submit_and_wait(svc, job: str, base) -> tuple:
    """Submit ``job`` to ``svc`` through its API route and wait for its final report: (job id, report)."""
    status, _, body = await svc._api_submit(json.dumps({"job": job, "base": str(base)}).encode(), {})
    assert status == 200, body
    job_id = json.loads(body)["job_id"]
    with trio.fail_after(240):
        return job_id, await svc.wait(job_id)


async def test_a_lying_executor_is_caught_banned_and_the_job_still_returns_the_right_result(tmp_path):
    arrays = workspace(tmp_path)
    async with trio.open_nursery() as nursery:
        nodes, _ = await start_peers(nursery, tmp_path, n=5)
        a, liar = nodes[0], nodes[4]
        liar.services["scheduler"].result_hook = swap_outputs
        svc = a.services["scheduler"]
        for _ in range(MAX_JOBS):        # until the liar took part (each job: about 15% of runs it does not)
            job_id, report = await submit_and_wait(svc, JOB, tmp_path)
            assert report.kind == "done", report.reason
            js = svc.jobs[job_id].js
            if any(a_["peer"] == str(liar.peer_id) for t in js.tasks.values() for a_ in t.attempts):
                break

        # the right results, pinned at A
        store = a.services["storage"].blockstore
        outputs = {(task, out): cid for task, out, cid in report.outputs}
        graph = Graph.from_dict(GRAPH)
        for i, x in enumerate(arrays):
            label = f"{i:05d}"
            local = graph.run({"x": x})
            for name in ("y", "s"):
                got = tensor_format.decode(read_file(store.get, Cid.parse(outputs[(f"sq/{label}", f"{name}/{label}")])))
                np.testing.assert_array_equal(got, local[name])

        # the liar took part, was proven wrong and banned by A; no honest peer was
        js = svc.jobs[job_id].js
        ran_by_liar = [tid for tid, t in js.tasks.items() if any(a_["peer"] == str(liar.peer_id) for a_ in t.attempts)]
        assert ran_by_liar, f"the coordinator never picked the liar in {MAX_JOBS} jobs"
        ledger = svc.verify_env().ledger
        assert ledger.banned(str(liar.peer_id))
        assert not any(ledger.banned(str(n.peer_id)) for n in nodes[:4])
        for tid in ran_by_liar:
            accepted = js.tasks[tid].verified
            assert str(liar.peer_id) not in accepted["peers"]

        # the accusation reached the others, who checked it and keep the liar out of replicas
        others = [n.services["scheduler"] for n in nodes[1:4]]
        bad = str(liar.peer_id)
        await wait_for(lambda: all(bad in s.suspects or s.verify_env().ledger.banned(bad)
                                   for s in others if s.verify_env() is not None), 60)

        # describe shows each task's evidence; A's check of it holds, and refuses a tampered result
        status, _, body = await svc._api_describe(b"", {"id": job_id})
        tasks = json.loads(body)["tasks"]
        assert all(t["verification"]["accepted"]["evidence"] for t in tasks)
        assert all(len(t["verification"]["accepted"]["peers"]) >= 1 for t in tasks)
        assert svc.evidence_problem(svc.jobs[job_id]) is None
        t0 = js.tasks[tasks[0]["task"]]
        real = dict(t0.outputs)
        t0.outputs = dict(zip(sorted(real), reversed([real[k] for k in sorted(real)])))   # a replica's lie
        assert "evidence for other inputs or outputs" in svc.evidence_problem(svc.jobs[job_id])
        t0.outputs = real

        # a forged accusation is refused by its receiver, with nobody suspected
        from p2pcompute.scheduler.verifying import AccusationNotice
        target = nodes[2].services["scheduler"]
        before = dict(target.suspects)
        await nodes[1].transport.send(nodes[2].peer_id, AccusationNotice(b"\x00not an accusation"))
        await wait_for(lambda: target.stats.get("accusations_refused", 0) >= 1, 30)
        assert target.suspects == before
        nursery.cancel_scope.cancel()


def vetted_all_but(ledger, nodes, liar) -> bool:
    """Every honest peer but the submitter vetted (threshold 2): from now on they get every task first."""
    return all(ledger.is_trusted(str(n.peer_id), 2) for n in nodes[1:] if n is not liar)


ADAPTIVE_JOB = JOB.replace('"replicate(3, agree=2, rtol=1e-5)"', '"adaptive(threshold=2, rate=0, rtol=1e-5)"')


async def test_adaptive_on_real_peers_anchors_unvetted_results_then_takes_vetted_peers_alone(tmp_path):
    """Anchored: each unvetted peer's result is re-executed at the submitter's peer A (a lie is proven, its
    peer banned); peers that matched A twice are vetted, get the next job's tasks first (A's crew) and are
    taken alone; A's evidence check accepts their single signatures because A vetted them itself."""
    arrays = workspace(tmp_path)
    async with trio.open_nursery() as nursery:
        nodes, _ = await start_peers(nursery, tmp_path, n=5)
        a, liar = nodes[0], nodes[4]
        liar.services["scheduler"].result_hook = swap_outputs
        svc = a.services["scheduler"]
        ledger = svc.verify_env().ledger
        solo, liar_ran = 0, False
        for _ in range(MAX_JOBS):
            job_id, report = await submit_and_wait(svc, ADAPTIVE_JOB, tmp_path)
            assert report.kind == "done", report.reason
            assert svc.evidence_problem(svc.jobs[job_id]) is None
            js = svc.jobs[job_id].js
            for t in js.tasks.values():
                assert str(liar.peer_id) not in t.verified["peers"]
                solo += t.verified["how"].startswith("vetted peer, not replicated")
                liar_ran |= any(a_["peer"] == str(liar.peer_id) for a_ in t.attempts)
            if solo and (ledger.banned(str(liar.peer_id)) or vetted_all_but(ledger, nodes, liar)):
                break
        assert solo, "no task was taken alone from a vetted peer"
        # A liar that ran a task was proven wrong and banned. Whether it ran one is placement's draw: once the
        # honest peers are vetted, anchored placement gives them every task first, so a liar that a loaded
        # machine kept out of the first jobs never gets one (it is never vetted either: nothing of it accepted)
        assert ledger.banned(str(liar.peer_id)) == liar_ran, liar_ran
        assert not ledger.is_trusted(str(liar.peer_id), 2)
        assert not any(ledger.banned(str(n.peer_id)) for n in nodes[:4])
        store = a.services["storage"].blockstore
        outputs = {(task, out): cid for task, out, cid in report.outputs}
        graph = Graph.from_dict(GRAPH)
        for i, x in enumerate(arrays):
            got = tensor_format.decode(read_file(store.get, Cid.parse(outputs[(f"sq/{i:05d}", f"y/{i:05d}")])))
            np.testing.assert_array_equal(got, graph.run({"x": x})["y"])
        nursery.cancel_scope.cancel()
