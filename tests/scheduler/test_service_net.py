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
                           heartbeat_s=1.5, accept_timeout_s=5.0, request_timeout_s=8.0, fetch_timeout_s=30.0)


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
            held = other.services["scheduler"].held[job_id]
            await wait_for(lambda held=held: held.record["state"] == "done", 30)
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
        started = trio.Event()
        compute = victim.services["compute"]
        real = compute.executor

        class Hanging:
            async def run(self, task, out_dir=None):
                started.set()
                await trio.sleep_forever()

            def __getattr__(self, name):
                return getattr(real, name)

        compute.executor = Hanging()
        job_id = await submit(a, tmp_path)
        with trio.fail_after(90):
            await started.wait()
        scopes[2].cancel()                      # the peer goes away with its task
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
