"""The scheduler service on the in-memory network (memnet, real time): six peers, a peer crashed mid-task.

The executor here is an in-process stand-in (the graph run by ``Graph.run``, outputs written as the
sandboxed worker writes them): memnet's peers are many in one process, and the real executor's worker
processes would make the test slow, not different. Storage and bitswap are the real services over
memnet streams. A crash is memnet's: the peer goes deaf and mute (its run goes on, unheard), the
others' failure detectors find it dead, its task runs again elsewhere.
"""

from __future__ import annotations

import random
from pathlib import Path

import cbor2
import numpy as np
import trio

from p2pcompute.gossip.events import MembershipConfig
from p2pcompute.gossip.messages import ALIVE, SUSPECT
from p2pcompute.gossip.service import MembershipService
from p2pcompute.node.identity import Identity
from p2pcompute.node.messages import Resources
from p2pcompute.node.node import Node
from p2pcompute.ops import tensor_format
from p2pcompute.ops.graph import Graph
from p2pcompute.ops.loaders import describe, load_array, write_output
from p2pcompute.ops.tasks import TaskResult
from p2pcompute.scheduler.events import JobConfig
from p2pcompute.scheduler.model import JobPlan, RetryPolicy
from p2pcompute.scheduler.plan import Resolved, plan_job
from p2pcompute.scheduler.service import SchedulerConfig, SchedulerService
from p2pcompute.scheduler.spec import check
from p2pcompute.simulations.memnet import MemNetwork
from p2pcompute.storage.bitswap_service import BitswapService
from p2pcompute.storage.blockstore import Blockstore
from p2pcompute.storage.cid import Cid
from p2pcompute.storage.exporter import read_file
from p2pcompute.storage.importer import import_path
from p2pcompute.storage.service import StorageService

GRAPH = {"opset": 1, "inputs": {"x": {}}, "nodes": [{"name": "y", "op": "add", "inputs": ["x", "x"]}],
         "outputs": ["y"]}


class InProcessExecutor:
    """Runs a graph task as the worker would, in this process; every run takes ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.cpus = 1
        self.running = 0

    async def run(self, task, out_dir=None):
        self.running += 1
        try:
            await trio.sleep(self.delay)
            feeds = {name: load_array(f.path, f.band) for name, f in task.inputs.items()}
            out_dir = Path(out_dir)
            out_dir.mkdir(parents=True, exist_ok=True)
            outputs = {}
            for name, value in Graph.from_cbor(task.graph).run(feeds).items():
                path = write_output(out_dir, name, np.asarray(value), task.outputs.get(name, "tensor"))
                outputs[name] = describe(path, np.asarray(value)) | {"path": str(path)}
            return TaskResult("ok", outputs=outputs)
        finally:
            self.running -= 1


class StandInCompute:
    name = "compute"

    def __init__(self, delay: float) -> None:
        self.executor = InProcessExecutor(delay)
        self._cpus = 1

    def attach(self, node) -> None:
        pass

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    def status(self) -> dict:
        return {}

    def api_routes(self) -> dict:
        return {}


def plan_for(root: Path, n: int) -> tuple[JobPlan, list[np.ndarray]]:
    (root / "x").mkdir(parents=True, exist_ok=True)
    arrays = [np.full((3, 3), i, dtype=np.float32) for i in range(n)]
    for i, a in enumerate(arrays):
        np.save(root / "x" / f"x{i:02d}.npy", a)
    spec, problems = check({"name": "twice", "inputs": {"x": "x/*.npy"},
                            "stages": [{"name": "t", "map": {"over": "inputs.x"}, "ops": GRAPH}]}, root)
    assert problems == []
    resolved = []
    for f in sorted((root / "x").iterdir()):
        resolved.append(Resolved(str(import_path(f).cid), f.stat().st_size))
    plan = plan_job(spec, {"x": resolved}, "memjob")
    return JobPlan(plan.job_id, plan.name, plan.tasks, RetryPolicy(retries=5, backoff_s=0.2, backoff_max_s=1.0),
                   outputs=plan.outputs, templates=plan.templates), arrays


CONFIG = SchedulerConfig(job=JobConfig(lease_s=4.0, offer_timeout_s=10.0, placement_retry_s=0.3),
                         heartbeat_s=1.0, accept_timeout_s=3.0, request_timeout_s=3.0, fetch_timeout_s=20.0)


async def start_peers(nursery, net: MemNetwork, root: Path, n: int, delays: dict[int, float],
                      membership: MembershipConfig | None = None) -> list[Node]:
    idents = [Identity.from_seed(random.Random(70 + i).randbytes(32)) for i in range(n)]
    nodes = []
    await nursery.start(net.run)
    for i, ident in enumerate(idents):
        t = net.add_peer(ident, default_timeout=3.0)
        boot = [(idents[0].peer_id, [idents[0].peer_id.text])] if i else []
        storage = StorageService(Blockstore(root / f"blocks{i}"), announce_every=3600.0)
        node = Node(t, resources=Resources(1.0, 1 << 30, {}), bootstrap=boot, rng=random.Random(i),
                    services=[MembershipService(membership, rng=random.Random(100 + i)), storage, BitswapService(),
                              StandInCompute(delay=delays.get(i, 0.4)),
                              SchedulerService(CONFIG, rng=random.Random(200 + i))])
        nodes.append(node)
        await nursery.start(node.run)
    with trio.fail_after(60):
        while not all(len(x.services["scheduler"].candidates()) == n for x in nodes):
            await trio.sleep(0.1)
    return nodes


def add_inputs(nodes: list[Node], root: Path) -> None:
    for node in nodes:
        store = node.services["storage"].blockstore
        for f in sorted((root / "x").iterdir()):
            store.pin(import_path(f, store.put).cid)


def check_outputs(node: Node, report, arrays) -> None:
    store = node.services["storage"].blockstore
    outputs = {task: cid for task, _, cid in report.outputs}
    assert len(outputs) == len(arrays)
    for i, a in enumerate(arrays):
        got = tensor_format.decode(read_file(store.get, Cid.parse(outputs[f"t/{i:05d}"])))
        np.testing.assert_array_equal(got, a + a)


async def test_six_peers_on_memnet_one_crashed_mid_task_and_the_job_completes(tmp_path):
    net = MemNetwork(7, latency=(0.001, 0.004))
    plan, arrays = plan_for(tmp_path, 12)
    async with trio.open_nursery() as nursery:
        nodes = await start_peers(nursery, net, tmp_path, 6, {})
        coordinator, victim = nodes[0], nodes[3]
        add_inputs(nodes[:1], tmp_path)                       # the inputs are the coordinator's
        svc = coordinator.services["scheduler"]
        job_id = await svc.submit(plan)
        with trio.fail_after(60):
            while not victim.services["compute"].executor.running:
                await trio.sleep(0.01)
        net.crash(victim.peer_id)                             # deaf and mute, mid-task
        with trio.fail_after(120):
            report = await svc.wait(job_id)
        assert report.kind == "done", report.reason
        check_outputs(coordinator, report, arrays)
        js = svc.jobs[job_id].js
        victim_id = str(victim.peer_id)
        lost = [x for t in js.tasks.values() for x in t.attempts if x["peer"] == victim_id and x["outcome"] != "ok"]
        assert lost and {x["outcome"] for x in lost} <= {"died", "expired"}
        ran = {x["peer"] for t in js.tasks.values() for x in t.attempts if x["outcome"] == "ok"}
        assert len(ran) >= 3
        nursery.cancel_scope.cancel()


async def test_the_coordinator_crashes_on_memnet_and_the_closest_replica_finishes_the_job(tmp_path):
    net = MemNetwork(8, latency=(0.001, 0.004))
    plan, arrays = plan_for(tmp_path, 12)
    async with trio.open_nursery() as nursery:
        nodes = await start_peers(nursery, net, tmp_path, 5, {0: 1e6})   # the coordinator runs nothing itself
        coordinator = nodes[0]
        add_inputs(nodes, tmp_path)                           # the inputs are everywhere
        job_id = await coordinator.services["scheduler"].submit(plan)
        others = nodes[1:]

        def replicated_done(k):
            held = [x.services["scheduler"].held.get(job_id) for x in others]
            return any(h and sum(t["state"] == "done" for t in h.record["tasks"]) >= k for h in held)

        with trio.fail_after(60):
            while not replicated_done(2):
                await trio.sleep(0.01)
        net.crash(coordinator.peer_id)                        # no leave, no goodbye: found dead
        with trio.fail_after(60):
            while not any(job_id in x.services["scheduler"].jobs for x in others):
                await trio.sleep(0.05)
        heirs = [x for x in others if job_id in x.services["scheduler"].jobs]
        assert len(heirs) == 1                                # one replica takes over, not two
        svc = heirs[0].services["scheduler"]
        with trio.fail_after(120):
            report = await svc.wait(job_id)
        assert report.kind == "done", report.reason
        assert svc.jobs[job_id].js.epoch == 1
        store = heirs[0].services["storage"].blockstore
        with trio.fail_after(60):                             # the results taken before the crash are pulled
            while not all(Cid.parse(cid) in store.pins for _, _, cid in report.outputs):
                await trio.sleep(0.05)
        check_outputs(heirs[0], report, arrays)
        nursery.cancel_scope.cancel()


async def test_a_replica_that_stops_answering_is_passed_over_before_membership_declares_it_dead(tmp_path):
    """replication.py's passing over: a crashed replica times out once, and the next closest member gets the
    record at once, while the crashed peer is still only suspected (suspicion lasts 120 s here)."""
    net = MemNetwork(9, latency=(0.001, 0.004))
    plan, _ = plan_for(tmp_path, 12)
    slow = MembershipConfig(suspicion_floor=120.0)
    async with trio.open_nursery() as nursery:
        nodes = await start_peers(nursery, net, tmp_path, 6, {0: 1e6, **{i: 1.0 for i in range(1, 6)}}, slow)
        add_inputs(nodes, tmp_path)
        coordinator = nodes[0]
        svc = coordinator.services["scheduler"]
        job_id = await svc.submit(plan)
        job = svc.jobs[job_id]
        with trio.fail_after(30):
            while len(job.replicas) < 3 or not all(job_id in n.services["scheduler"].held for n in nodes
                                                   if n.peer_id in job.replicas):
                await trio.sleep(0.01)
        first = list(job.replicas)
        net.crash(first[0])
        with trio.fail_after(60):
            while first[0] in job.replicas or len(job.replicas) < 3:
                await trio.sleep(0.05)
        substitute = next(p for p in job.replicas if p not in first)
        sub_node = next(n for n in nodes if n.peer_id == substitute)
        with trio.fail_after(30):
            while job_id not in sub_node.services["scheduler"].held:
                await trio.sleep(0.05)
        state = coordinator.services["membership"].sm.state_of(first[0])
        assert state in (ALIVE, SUSPECT), "declared dead: the test shows nothing about passing over"
        assert svc.stats["replicas_passed_over"] >= 1
        assert sub_node.services["scheduler"].held[job_id].coordinator == coordinator.peer_id
        nursery.cancel_scope.cancel()      # the job's end under a crash: the tests above


async def test_a_record_or_delta_over_the_message_limit_reaches_the_replicas_over_a_stream(tmp_path):
    net = MemNetwork(9, latency=(0.001, 0.004))
    (tmp_path / "x").mkdir()
    np.save(tmp_path / "x" / "x0.npy", np.zeros(1, dtype=np.float32))
    spec, problems = check({"name": "big", "inputs": {"x": "x/*.npy"},
                            "stages": [{"name": "t", "map": {"over": "inputs.x"}, "ops": GRAPH}]}, tmp_path)
    assert problems == []
    cid = str(Cid.of(b"never fetched"))
    plan = plan_job(spec, {"x": [Resolved(cid, 4)] * 4000}, "bigjob")
    async with trio.open_nursery() as nursery:
        nodes = await start_peers(nursery, net, tmp_path, 3, {0: 1e6, 1: 1e6, 2: 1e6})
        svc = nodes[0].services["scheduler"]
        job_id = await svc.submit(plan)
        size = len(cbor2.dumps(svc.jobs[job_id].js.to_record()))
        assert size > (1 << 20)                               # more than one message may carry
        with trio.fail_after(60):
            while not all(job_id in x.services["scheduler"].held for x in nodes[1:]):
                await trio.sleep(0.05)
        held = nodes[1].services["scheduler"].held[job_id].record
        assert len(held["tasks"]) == 4000 and held["job_id"] == job_id
        # the cancel changes every task: its delta is over the message limit (here 512 KiB), and the full
        # record goes instead, over the stream
        nodes[0].transport.max_message = 512 << 10
        await svc.cancel(job_id)
        assert len(cbor2.dumps({"tasks": [t.to_record() for t in svc.jobs[job_id].js.tasks.values()]})) > 512 << 10
        with trio.fail_after(60):
            while not all(x.services["scheduler"].held[job_id].record["state"] == "cancelled" for x in nodes[1:]):
                await trio.sleep(0.05)
        assert svc.stats["oversized_deltas"] >= 1
        held = nodes[1].services["scheduler"].held[job_id].record
        assert {t["state"] for t in held["tasks"]} == {"cancelled"}
        nursery.cancel_scope.cancel()


async def test_a_flood_of_random_messages_is_refused_without_an_error_and_the_job_completes(tmp_path):
    from p2pcompute.scheduler.messages import (JobRecordDelta, JobRecordFull, TaskAccept, TaskDone, TaskFailure,
                                               TaskGrant, TaskHeartbeat, TaskOffer, TaskRevoke)

    net = MemNetwork(10, latency=(0.001, 0.004))
    plan, arrays = plan_for(tmp_path, 6)
    rng = random.Random(5)
    async with trio.open_nursery() as nursery:
        nodes = await start_peers(nursery, net, tmp_path, 4, {})
        coordinator, hostile = nodes[0], nodes[3]
        add_inputs(nodes[:1], tmp_path)
        svc = coordinator.services["scheduler"]
        job_id = await svc.submit(plan)
        tasks = [t.task_id for t in plan.tasks]

        def text():
            return rng.choice([job_id, "x", "0.0.1", "1.deadbeef.3", rng.choice(tasks), "é" * 100])

        def blob():
            return rng.choice([b"", b"\xff" * 7, rng.randbytes(rng.randrange(1, 300)), b"\xa1\x61a\x61b"])

        def message():
            kind = rng.randrange(9)
            if kind == 0:
                return TaskOffer(text(), text(), text(), rng.uniform(0, 100))
            if kind == 1:
                return TaskAccept(text(), text(), text())
            if kind == 2:
                return TaskGrant(text(), text(), text(), rng.uniform(0, 100), blob(), (("x", "QmNotACid"),))
            if kind == 3:
                return TaskRevoke(text(), text(), text(), "no")
            if kind == 4:
                return TaskDone(text(), text(), text(), {"y": text()}, {"y": rng.choice([1.5, "s", None])},
                                {"y": rng.randrange(-5, 5)})
            if kind == 5:
                return TaskFailure(text(), text(), text(), rng.choice(["crash", "bogus", "rejected"]), "m")
            if kind == 6:
                return JobRecordFull(text(), blob(), ())
            if kind == 7:
                return JobRecordDelta(text(), blob())
            return TaskHeartbeat(text(), text(), text())

        for _ in range(300):
            target = rng.choice(nodes[:3])
            msg = message()
            try:
                if isinstance(msg, TaskHeartbeat):
                    await hostile.transport.send(target.peer_id, msg)
                else:
                    await hostile.transport.request(target.peer_id, msg, 3.0)
            except Exception as exc:   # a refusal as an error reply is fine too; the service must not fail
                assert "internal" not in str(exc), exc
        with trio.fail_after(120):
            report = await svc.wait(job_id)
        assert report.kind == "done", report.reason
        check_outputs(coordinator, report, arrays)
        assert all(n.services["scheduler"].stats["errors"] == 0 for n in nodes)
        assert svc.stats["refused"] > 0
        nursery.cancel_scope.cancel()
