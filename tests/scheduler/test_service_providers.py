"""Data locality from the DHT, on real libp2p peers: a task runs where its input was added.

Three in-process peers with the DHT, storage, bitswap, membership, compute and the scheduler. Inputs are
added and pinned on B and C (so announced in the DHT); a job over them as ``ipfs://`` CIDs is submitted
to A, which holds none of them and has no holder in its own hints: it asks the DHT, and every task runs
on the peer that holds its input. Then a job over a CID nobody holds fails with "input not found" after
a bounded search (the executors' fetch timeout, on two peers), not a hang. Waits are on conditions.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import trio

from p2pcompute.dht.service import DhtService
from p2pcompute.gossip.service import MembershipService
from p2pcompute.node.identity import Identity
from p2pcompute.node.libp2p_transport import Libp2pTransport
from p2pcompute.node.messages import Resources
from p2pcompute.node.node import Node
from p2pcompute.ops.service import ComputeService
from p2pcompute.scheduler.events import JobConfig
from p2pcompute.scheduler.service import SchedulerConfig, SchedulerService
from p2pcompute.storage.bitswap_service import BitswapService
from p2pcompute.storage.blockstore import Blockstore
from p2pcompute.storage.cid import Cid
from p2pcompute.storage.importer import import_path
from p2pcompute.storage.service import StorageService

GRAPH = {"opset": 1, "inputs": {"x": {}}, "nodes": [{"name": "s", "op": "reduce_sum", "inputs": ["x"]}],
         "outputs": ["s"]}
FETCH_TIMEOUT = 4.0


def config() -> SchedulerConfig:
    return SchedulerConfig(job=JobConfig(lease_s=6.0, offer_timeout_s=20.0, placement_retry_s=0.5),
                           heartbeat_s=1.5, accept_timeout_s=5.0, request_timeout_s=8.0,
                           fetch_timeout_s=FETCH_TIMEOUT)


def make_peer(i: int, root: Path, bootstrap=()) -> Node:
    t = Libp2pTransport(Identity.generate(), ["/ip4/127.0.0.1/tcp/0"], dial_timeout=3.0)
    services = [MembershipService(rng=random.Random(100 + i)), DhtService(rng=random.Random(300 + i)),
                StorageService(Blockstore(root / f"blocks{i}"), announce_every=3600.0), BitswapService(),
                ComputeService(cpus=1), SchedulerService(config(), rng=random.Random(200 + i))]
    return Node(t, resources=Resources(1.0, 1 << 30, {}), bootstrap=list(bootstrap), rng=random.Random(i),
                services=services)


async def wait_for(cond, timeout=60.0):
    with trio.fail_after(timeout):
        while not cond():
            await trio.sleep(0.1)


async def start_peers(nursery, root: Path, n: int = 3) -> list[Node]:
    nodes = []
    for i in range(n):
        boot = [(nodes[0].peer_id, [nodes[0].transport.listen_addresses()[0].split("/p2p/")[0]])] if nodes else []
        node = make_peer(i, root, boot)
        await nursery.start(node.run)
        nodes.append(node)
    await wait_for(lambda: all(len(x.services["scheduler"].candidates()) == n for x in nodes), 60)
    await wait_for(lambda: all(len(x.services["dht"].table) >= n - 1 for x in nodes), 60)
    for node in nodes:
        await node.services["compute"].executor.wait_ready()
    return nodes


async def add_on(node: Node, path: Path) -> str:
    """Add and pin ``path`` on ``node``: the storage service announces it in the DHT."""
    storage = node.services["storage"]
    result = await trio.to_thread.run_sync(import_path, path, storage.blockstore.put)
    await storage.pin(result.cid)
    return str(result.cid)


def job(inputs: list[str]) -> str:
    return json.dumps({"name": "where-the-data-is", "inputs": {"x": [f"ipfs://{c}" for c in inputs]},
                       "stages": [{"name": "sum", "map": {"over": "inputs.x"}, "ops": GRAPH}]})


async def submit(node: Node, text: str, base: Path) -> str:
    status, _, body = await node.services["scheduler"]._api_submit(
        json.dumps({"job": text, "base": str(base)}).encode(), {})
    assert status == 200, body
    return json.loads(body)["job_id"]


def ran_on(svc: SchedulerService, job_id: str) -> dict[str, str]:
    """task -> the peer whose attempt succeeded."""
    return {name: next(a["peer"] for a in t.attempts if a["outcome"] == "ok")
            for name, t in svc.jobs[job_id].js.tasks.items()}


async def test_each_task_runs_on_the_peer_where_its_input_was_added(tmp_path):
    async with trio.open_nursery() as nursery:
        a, b, c = await start_peers(nursery, tmp_path)
        holders = [b, c]           # one input each: a holder with a free slot gets its task (a busy one may not)
        cids = []
        for i, node in enumerate(holders):
            np.save(tmp_path / f"x{i}.npy", np.full((64, 64), float(i)))
            cids.append(await add_on(node, tmp_path / f"x{i}.npy"))
        svc = a.services["scheduler"]
        assert not any(cid in svc._providers for cid in cids)          # nothing known here but the DHT
        assert all(not a.services["storage"].blockstore.has(Cid.parse(cid)) for cid in cids)
        job_id = await submit(a, job(cids), tmp_path)
        with trio.fail_after(120):
            report = await svc.wait(job_id)
        assert report.kind == "done", report.reason
        where = ran_on(svc, job_id)
        assert where == {f"sum/{i:05d}": str(node.peer_id) for i, node in enumerate(holders)}, where
        assert svc.lookups.stats["found"] >= len(cids) and svc.lookups.stats["lookups"] <= len(cids)
        assert svc.status()["provider_lookups"]["cached"] >= len(cids)
        # no input was moved to run a task: the holders fetched nothing, A only the outputs
        for node in (b, c):
            assert node.services["scheduler"].stats["tasks_run"] == 1
        nursery.cancel_scope.cancel()


async def test_an_input_nobody_holds_fails_the_job_with_input_not_found_in_bounded_time(tmp_path):
    """The DHT knows no provider and no connected peer serves its root block: the coordinator fails the task at
    once (about the lookup and the probe: 12 s with the defaults), no executor spends its fetch timeout on it;
    a second job over it fails at once (the verdict is cached). An input held by a peer that did not announce
    it (no DHT record) is served when asked, and its job runs."""
    np.save(tmp_path / "gone.npy", np.zeros((4, 4)))
    store = Blockstore(tmp_path / "elsewhere")         # its CID exists, but no peer of the network holds it
    missing = str(import_path(tmp_path / "gone.npy", store.put).cid)
    async with trio.open_nursery() as nursery:
        a, b, _ = await start_peers(nursery, tmp_path)
        svc = a.services["scheduler"]
        started = trio.current_time()
        job_id = await submit(a, job([missing]), tmp_path)
        with trio.fail_after(60):
            report = await svc.wait(job_id)
        took = trio.current_time() - started
        assert report.kind == "failed"
        assert "input_not_found" in report.reason and missing in report.reason, report.reason
        assert "no peer served it" in report.reason, report.reason
        assert svc.jobs[job_id].js.tasks["sum/00000"].attempts == []      # no executor was asked
        assert svc.lookups.stats["empty"] >= 1 and svc.lookups.stats["absent"] == 1
        again = await submit(a, job([missing]), tmp_path)
        with trio.fail_after(60):
            assert (await svc.wait(again)).kind == "failed"
        assert svc.lookups.stats["probes"] == 1                            # cached: no second probe
        print(f"failed after {took:.1f} s: {report.reason}")
        # held on B, never announced: the DHT knows nobody, but B serves the root block when asked
        np.save(tmp_path / "quiet.npy", np.ones((4, 4)))
        quiet = str((await trio.to_thread.run_sync(import_path, tmp_path / "quiet.npy",
                                                   b.services["storage"].blockstore.put)).cid)
        b.services["storage"].blockstore.pin(Cid.parse(quiet))
        held = await submit(a, job([quiet]), tmp_path)
        with trio.fail_after(60):
            report = await svc.wait(held)
        assert report.kind == "done", report.reason
        assert svc.lookups.stats["probes"] == 2 and svc.lookups.stats["absent"] == 1
        nursery.cancel_scope.cancel()


def test_an_input_missing_on_two_peers_gives_one_message_whatever_each_peer_asked(tmp_path):
    """The failure text must not depend on the executor (its connected peers), else the same missing input on
    two peers would not be recognised as the same failure and the task would run its every retry."""
    from types import SimpleNamespace

    from p2pcompute.errors import RequestTimeout
    from p2pcompute.scheduler.runner import missing_input

    np.save(tmp_path / "gone.npy", np.zeros(3))
    cid = import_path(tmp_path / "gone.npy", Blockstore(tmp_path / "b").put).cid
    messages = []
    for connected in (2, 9):
        storage = StorageService()
        storage.node = SimpleNamespace(transport=SimpleNamespace(connected_peers=lambda n=connected: [None] * n))
        exc = storage._explain(cid, RequestTimeout("idle"), 60.0, None, {"providers": [], "done": True})
        assert f"{connected} connected peer(s) asked" in str(exc)
        messages.append(missing_input("x/00000", str(cid), exc))
    assert messages[0] == messages[1]
    assert messages[0] == f"input x/00000 ({cid}): {cid} not found within 60 s (no provider in the DHT)"
