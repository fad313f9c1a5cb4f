"""The scheduler service on real libp2p: three in-process peers, each with storage, bitswap, membership,
compute (a sandboxed executor) and the scheduler.

A job.yaml mapping a small graph over six .npy files is submitted to peer A (POST /v1/jobs' handler):
the six tasks run across the peers, inputs and outputs travel by CID over bitswap, and A ends up with
every output pinned, equal to running the graph locally. Then an executing peer is killed while it
runs a task: the task runs again elsewhere and the job completes. Deadlines are generous (a loaded
machine); the waits are on conditions, never on fixed sleeps.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import trio

from p2pcompute.gossip.service import MembershipService
from p2pcompute.node.identity import Identity
from p2pcompute.node.libp2p_transport import Libp2pTransport
from p2pcompute.node.messages import Resources
from p2pcompute.node.node import Node
from p2pcompute.ops import tensor_format
from p2pcompute.ops.graph import Graph
from p2pcompute.ops.service import ComputeService
from p2pcompute.scheduler.events import JobConfig
from p2pcompute.scheduler.service import SchedulerConfig, SchedulerService
from p2pcompute.storage.bitswap_service import BitswapService
from p2pcompute.storage.blockstore import Blockstore
from p2pcompute.storage.cid import Cid
from p2pcompute.storage.exporter import read_file
from p2pcompute.storage.service import StorageService

GRAPH = {"opset": 1, "inputs": {"x": {}}, "nodes": [
    {"name": "y", "op": "mul", "inputs": ["x", "x"]},
    {"name": "s", "op": "reduce_sum", "inputs": ["y"]}], "outputs": ["y", "s"]}

JOB = """
name: squares
inputs:
  x: x/*.npy
stages:
  - name: sq
    map: {over: inputs.x}
    ops: %s
""" % json.dumps(GRAPH)


def config() -> SchedulerConfig:
    return SchedulerConfig(job=JobConfig(lease_s=6.0, offer_timeout_s=20.0, placement_retry_s=0.5),
                           heartbeat_s=1.5, accept_timeout_s=5.0, request_timeout_s=8.0, fetch_timeout_s=30.0,
                           record_stream_over=0)    # every full record over the record stream (memnet: as requests)


def make_peer(i: int, root: Path, bootstrap=()) -> Node:
    t = Libp2pTransport(Identity.generate(), ["/ip4/127.0.0.1/tcp/0"], dial_timeout=3.0)
    services = [MembershipService(rng=random.Random(100 + i)),
                StorageService(Blockstore(root / f"blocks{i}"), announce_every=3600.0), BitswapService(),
                ComputeService(cpus=1), SchedulerService(config(), rng=random.Random(200 + i))]
    return Node(t, resources=Resources(1.0, 1 << 30, {}), bootstrap=list(bootstrap), rng=random.Random(i),
                services=services)


async def wait_for(cond, timeout=60.0, what=""):
    with trio.fail_after(timeout):
        while not cond():
            await trio.sleep(0.1)


async def start_peers(nursery, root: Path, n: int = 3) -> tuple[list[Node], list[trio.CancelScope]]:
    nodes, scopes = [], []
    for i in range(n):
        boot = [(nodes[0].peer_id, [nodes[0].transport.listen_addresses()[0].split("/p2p/")[0]])] if nodes else []
        node = make_peer(i, root, boot)
        scope = trio.CancelScope()

        async def run(node=node, scope=scope, task_status=trio.TASK_STATUS_IGNORED):
            with scope:
                await node.run(task_status=task_status)

        await nursery.start(run)
        nodes.append(node)
        scopes.append(scope)

    def everyone_alive():
        return all(len(n.services["scheduler"].candidates()) == len(nodes) for n in nodes)

    await wait_for(everyone_alive, 60)
    for node in nodes:   # the executors' warm workers
        await node.services["compute"].executor.wait_ready()
    return nodes, scopes


def workspace(root: Path, n: int = 6) -> list[np.ndarray]:
    (root / "x").mkdir(parents=True, exist_ok=True)
    arrays = [np.arange(12, dtype=np.float32).reshape(3, 4) + i for i in range(n)]
    for i, a in enumerate(arrays):
        np.save(root / "x" / f"x{i}.npy", a)
    return arrays


async def submit(node: Node, root: Path) -> str:
    svc = node.services["scheduler"]
    status, _, body = await svc._api_submit(json.dumps({"job": JOB, "base": str(root)}).encode(), {})
    assert status == 200, body
    answer = json.loads(body)
    assert answer["tasks"] == 6
    return answer["job_id"]


def check_results(node: Node, report, arrays: list[np.ndarray]) -> None:
    """Every output is pinned on ``node`` and equals the graph run here."""
    store: Blockstore = node.services["storage"].blockstore
    outputs = {(task, out): cid for task, out, cid in report.outputs}
    assert len(outputs) == 12          # y and s of six items
    graph = Graph.from_dict(GRAPH)
    for i, a in enumerate(arrays):
        label = f"{i:05d}"
        local = graph.run({"x": a})
        for name in ("y", "s"):
            cid = Cid.parse(outputs[(f"sq/{label}", f"{name}/{label}")])
            assert cid in store.pins
            got = tensor_format.decode(read_file(store.get, cid))
            np.testing.assert_array_equal(got, local[name])


async def test_a_map_job_submitted_to_a_runs_across_three_peers_and_its_results_land_on_a(tmp_path):
    arrays = workspace(tmp_path)
    async with trio.open_nursery() as nursery:
        nodes, _ = await start_peers(nursery, tmp_path)
        a = nodes[0]
        job_id = await submit(a, tmp_path)
        svc = a.services["scheduler"]
        with trio.fail_after(120):
            report = await svc.wait(job_id)
        assert report.kind == "done", report.reason
        assert report.progress.done == 6
        check_results(a, report, arrays)
        ran = sum(n.services["scheduler"].stats["tasks_run"] for n in nodes)
        assert ran >= 6
        assert sum(1 for n in nodes if n.services["scheduler"].stats["tasks_run"]) >= 2   # spread out
        # the record is replicated on the two others, which hold it done
        for other in nodes[1:]:
            held = other.services["scheduler"].held
            await wait_for(lambda held=held: job_id in held and held[job_id].record["state"] == "done", 30)
        # GET /v1/jobs/{id} describes it
        status, _, body = await svc._api_describe(b"", {"id": job_id})
        described = json.loads(body)
        assert status == 200 and described["state"] == "done" and len(described["tasks"]) == 6
        nursery.cancel_scope.cancel()


async def test_an_executing_peer_killed_mid_task_its_task_runs_elsewhere_and_the_job_completes(tmp_path):
    arrays = workspace(tmp_path)
    async with trio.open_nursery() as nursery:
        nodes, scopes = await start_peers(nursery, tmp_path)
        a, victim = nodes[0], nodes[2]
        # the victim's executor hangs on every task, so that it is surely killed mid-task
        compute = victim.services["compute"]
        compute.executor = _Hanging(compute.executor)
        started = compute.executor.started
        job_id = await submit(a, tmp_path)
        with trio.fail_after(90):
            await started.wait()
        async def silently():
            pass

        victim._say_goodbye = silently          # it goes away without a word: no goodbye, no leave;
        victim.services["membership"]._leave = silently   # the others' failure detector finds it dead
        scopes[2].cancel()
        svc = a.services["scheduler"]
        with trio.fail_after(150):
            report = await svc.wait(job_id)
        assert report.kind == "done", report.reason
        check_results(a, report, arrays)
        victim_id = str(victim.peer_id)
        attempts = [x for t in svc.jobs[job_id].js.tasks.values() for x in t.attempts]
        lost = [x for x in attempts if x["peer"] == victim_id]
        assert lost and all(x["outcome"] != "ok" for x in lost)       # it never finished there
        assert all(t.state == "done" for t in svc.jobs[job_id].js.tasks.values())
        nursery.cancel_scope.cancel()


async def test_the_coordinator_dies_mid_job_and_the_closest_replica_takes_it_over(tmp_path):
    arrays = workspace(tmp_path)
    async with trio.open_nursery() as nursery:
        nodes, scopes = await start_peers(nursery, tmp_path)
        a = nodes[0]
        for node in nodes[1:]:      # the inputs are on every peer (A's copy goes with it)
            store = node.services["storage"].blockstore
            from p2pcompute.storage.importer import import_path
            for f in sorted((tmp_path / "x").iterdir()):
                store.pin(import_path(f, store.put).cid)
        for node in nodes[1:]:      # every task takes a second, so that A dies with the job half done
            compute = node.services["compute"]
            real = compute.executor

            class Slow:
                async def run(self, task, out_dir=None, real=real):
                    await trio.sleep(1.0)
                    return await real.run(task, out_dir)

                def __getattr__(self, name, real=real):
                    return getattr(real, name)

            compute.executor = Slow()
        a.services["compute"].executor = _Hanging(a.services["compute"].executor)   # A only coordinates:
        job_id = await submit(a, tmp_path)           # a result held by A alone would be lost with it

        def some_done_replicated():
            held = [n.services["scheduler"].held.get(job_id) for n in nodes[1:]]
            return any(h and sum(t["state"] == "done" for t in h.record["tasks"]) >= 1 for h in held)

        await wait_for(some_done_replicated, 90)
        scopes[0].cancel()                                  # the coordinator goes away
        await wait_for(lambda: any(job_id in n.services["scheduler"].jobs for n in nodes[1:]), 60)
        heir = next(n for n in nodes[1:] if job_id in n.services["scheduler"].jobs)
        svc = heir.services["scheduler"]
        assert svc.stats["takeovers"] == 1 and svc.jobs[job_id].js.epoch == 1
        with trio.fail_after(150):
            report = await svc.wait(job_id)
        assert report.kind == "done", report.reason
        pins = heir.services["storage"].blockstore
        await wait_for(lambda: all(Cid.parse(cid) in pins.pins for _, _, cid in report.outputs), 60)  # pulled
        check_results(heir, report, arrays)
        nursery.cancel_scope.cancel()


async def test_bad_messages_from_a_peer_are_refused_with_a_reason_and_the_service_goes_on(tmp_path):
    from p2pcompute.errors import RequestTimeout
    from p2pcompute.scheduler.messages import JobRecordDelta, JobRecordFull, TaskAccept, TaskDone, TaskOffer

    arrays = workspace(tmp_path)
    async with trio.open_nursery() as nursery:
        nodes, _ = await start_peers(nursery, tmp_path)
        a, b = nodes[0], nodes[1]
        job_id = await submit(a, tmp_path)
        ask = b.transport.request
        reply = await ask(a.peer_id, TaskDone("no-such-job", "t", "0.0.1", {"y": "x"}), 10)
        assert not reply.ok and "no job no-such-job" in reply.reason
        reply = await ask(a.peer_id, TaskDone(job_id, "sq/00000", "forged", {}), 10)   # a lease never issued
        assert not reply.ok and "it does not hold" in reply.reason
        reply = await ask(a.peer_id, TaskAccept(job_id, "no/such/task", "0.0.1"), 10)
        assert not reply.ok and "has no task" in reply.reason
        reply = await ask(a.peer_id, JobRecordFull("j1", b"\xff\x00garbage"), 10)
        assert not reply.ok and "bad job record" in reply.reason
        reply = await ask(a.peer_id, JobRecordDelta("j2", b"\xa0"), 10)
        assert not reply.ok and "gap" in reply.reason
        # a message that breaks its type's bounds does not even decode: the transport drops it, logged
        rejected = sum(a.transport.stats.rejected.values())
        with pytest.raises(RequestTimeout):
            await ask(a.peer_id, _unchecked(TaskOffer, job_id=job_id, task="t", lease_id="l", valid_s=-5.0), 3)
        assert sum(a.transport.stats.rejected.values()) == rejected + 1
        svc = a.services["scheduler"]
        with trio.fail_after(120):
            report = await svc.wait(job_id)
        assert report.kind == "done", report.reason
        check_results(a, report, arrays)
        assert svc.stats["errors"] == 0
        nursery.cancel_scope.cancel()


def _unchecked(cls, **fields):
    """A message built without its checks, as a hostile peer could encode it."""
    msg = object.__new__(cls)
    for k, v in fields.items():
        object.__setattr__(msg, k, v)
    return msg


class _Hanging:
    """An executor whose runs never end (``started`` is set by the first)."""

    def __init__(self, real):
        self.real = real
        self.started = trio.Event()

    async def run(self, task, out_dir=None):
        self.started.set()
        await trio.sleep_forever()

    def __getattr__(self, name):
        return getattr(self.real, name)


async def test_a_cancelled_job_stops_its_running_tasks_on_every_peer(tmp_path):
    workspace(tmp_path)
    async with trio.open_nursery() as nursery:
        nodes, _ = await start_peers(nursery, tmp_path)
        hanging = []
        for node in nodes:
            compute = node.services["compute"]
            compute.executor = _Hanging(compute.executor)
            hanging.append(compute.executor)
        a = nodes[0]
        job_id = await submit(a, tmp_path)
        svc = a.services["scheduler"]
        await wait_for(lambda: sum(h.started.is_set() for h in hanging) >= 2, 60)
        status, _, body = await svc._api_cancel(json.dumps({"reason": "enough"}).encode(), {"id": job_id})
        assert status == 200
        with trio.fail_after(60):
            report = await svc.wait(job_id)
        assert report.kind == "cancelled" and report.reason == "enough"
        # every run was revoked: no slot stays busy, no run goes on
        await wait_for(lambda: all(not n.services["scheduler"]._runs and n.services["scheduler"].leases.busy() == 0
                                   for n in nodes), 30)
        nursery.cancel_scope.cancel()


async def test_a_two_stage_pipeline_with_a_condition_runs_over_the_network(tmp_path):
    """Stage 2 reads stage 1's outputs by CID and runs only where stage 1's scalar (carried inline) > 0.5."""
    import yaml
    from jobspec_helpers import pipeline

    (tmp_path / "x").mkdir()
    xs = [np.full((4, 4), i, dtype=np.float32) for i in range(3)]          # means 0, 1, 2
    for i, x in enumerate(xs):
        np.save(tmp_path / "x" / f"x{i}.npy", x)
    async with trio.open_nursery() as nursery:
        nodes, _ = await start_peers(nursery, tmp_path)
        svc = nodes[1].services["scheduler"]
        body = json.dumps({"job": yaml.safe_dump(pipeline()), "base": str(tmp_path)}).encode()
        status, _, answer = await svc._api_submit(body, {})
        assert status == 200, answer
        job_id = json.loads(answer)["job_id"]
        with trio.fail_after(120):
            report = await svc.wait(job_id)
        assert report.kind == "done", report.reason
        states = {tid: t.state for tid, t in svc.jobs[job_id].js.tasks.items()}
        assert states == {"stats/00000": "done", "stats/00001": "done", "stats/00002": "done",
                          "scaled/00000": "skipped", "scaled/00001": "done", "scaled/00002": "done"}
        result = {(t, o): cid for t, o, cid in report.outputs}
        assert result[("scaled/00000", "y/00000")] is None
        # placement's provider hints: each stage-1 output is held by the peer that made it and by the coordinator
        for i in range(3):
            t = svc.jobs[job_id].js.tasks[f"stats/0000{i}"]
            made_by = next(a["peer"] for a in t.attempts if a["outcome"] == "ok")
            assert svc._providers[t.outputs[f"m/0000{i}"]] == {made_by, str(nodes[1].peer_id)}
        store = nodes[1].services["storage"].blockstore
        for i in (1, 2):
            got = tensor_format.decode(read_file(store.get, Cid.parse(result[(f"scaled/0000{i}", f"y/0000{i}")])))
            np.testing.assert_allclose(got, xs[i] * xs[i].mean())
        nursery.cancel_scope.cancel()
