"""The training driver over real scheduler services on memnet (real time): three peers train the digits MLP
for a few sync rounds through one peer's TrainingService; every gradient is a one-task job placed by the
scheduler. The result is the in-process run's, bit for bit (same seed, same graphs, same aggregation);
a checkpoint resumes; a peer crashed mid-task has its shard run elsewhere and nothing changes.

The executor is an in-process stand-in (as in tests/scheduler/test_service_memnet.py): the graph run by
``Graph.run``, outputs written as the sandboxed worker writes them.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import trio

from p2pcompute.gossip.service import MembershipService
from p2pcompute.node.identity import Identity
from p2pcompute.node.messages import Resources
from p2pcompute.node.node import Node
from p2pcompute.ops.graph import Graph
from p2pcompute.ops.loaders import describe, load_array, write_output
from p2pcompute.ops.tasks import TaskResult
from p2pcompute.scheduler.events import JobConfig
from p2pcompute.scheduler.service import SchedulerConfig, SchedulerService
from p2pcompute.simulations.memnet import MemNetwork
from p2pcompute.storage.bitswap_service import BitswapService
from p2pcompute.storage.blockstore import Blockstore
from p2pcompute.storage.service import StorageService
from p2pcompute.training import data
from p2pcompute.training.inprocess import run as run_inprocess
from p2pcompute.training.service import TrainingService
from p2pcompute.training.spec import parse

SPEC = """
name: tiny
dataset: digits
seed: 5
model: {mlp: {hidden: [16]}}
mode: %s
peers: 3
shards: 3
rounds: %d
batch: 16
checkpoint_every: 2
task_timeout: 60
local: {steps: 3}
"""


class InProcessExecutor:
    def __init__(self, delay: float) -> None:
        self.delay, self.cpus, self.running = delay, 1, 0

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

    def attach(self, node) -> None:
        pass

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    def status(self) -> dict:
        return {}

    def api_routes(self) -> dict:
        return {}


CONFIG = SchedulerConfig(job=JobConfig(lease_s=4.0, offer_timeout_s=10.0, placement_retry_s=0.3),
                         heartbeat_s=1.0, accept_timeout_s=3.0, request_timeout_s=3.0, fetch_timeout_s=20.0)


async def start_peers(nursery, net: MemNetwork, root: Path, n: int, delay: float) -> list[Node]:
    idents = [Identity.from_seed(random.Random(170 + i).randbytes(32)) for i in range(n)]
    nodes = []
    await nursery.start(net.run)
    for i, ident in enumerate(idents):
        t = net.add_peer(ident, default_timeout=3.0)
        boot = [(idents[0].peer_id, [idents[0].peer_id.text])] if i else []
        services = [MembershipService(rng=random.Random(100 + i)),
                    StorageService(Blockstore(root / f"blocks{i}"), announce_every=3600.0), BitswapService(),
                    StandInCompute(delay), SchedulerService(CONFIG, rng=random.Random(200 + i))]
        if i == 0:
            services.append(TrainingService(start_timeout=60.0))
        node = Node(t, resources=Resources(1.0, 1 << 30, {}), bootstrap=boot, rng=random.Random(i),
                    services=services)
        nodes.append(node)
        await nursery.start(node.run)
    return nodes


async def api(svc: TrainingService, method: str, path_id: str = "", body: dict | None = None) -> dict:
    routes = svc.api_routes()
    if method == "start":
        status, _, out = await routes[("POST", "/v1/train")](json.dumps(body).encode(), {})
    else:
        status, _, out = await routes[("GET", "/v1/train/{id}")](b"", {"id": path_id})
    assert status == 200, out
    return json.loads(out)


async def train(svc: TrainingService, text: str, resume: str | None = None, timeout: float = 120.0) -> dict:
    started = await api(svc, "start", body={"spec": text, "resume": resume})
    with trio.fail_after(timeout):
        while (st := await api(svc, "get", started["id"]))["state"] in ("waiting for peers", "running"):
            await trio.sleep(0.1)
    return st


def same_params(trainer, expected) -> bool:
    return all(np.array_equal(trainer.updater.params[n], expected[n]) for n in expected)


async def test_sync_rounds_as_jobs_equal_the_inprocess_run_and_a_checkpoint_resumes(tmp_path):
    net = MemNetwork(11, latency=(0.001, 0.004))
    split = data.digits(5)
    async with trio.open_nursery() as nursery:
        nodes = await start_peers(nursery, net, tmp_path, 3, delay=0.05)
        svc = nodes[0].services["training"]
        st = await train(svc, SPEC % ("sync", 3))
        assert st["state"] == "done", st["error"]
        assert st["round"] == 3 and len(st["curve"]) == 3 and st["final"]
        assert st["jobs"] == 3 and st["peers_seen"] >= 2          # a job a round, its tasks over the peers
        assert [c[0] for c in st["checkpoints"]] == [2]
        assert (await api(svc, "get", st["id"]))["elapsed_s"] == st["elapsed_s"]   # frozen once it ended
        expected = run_inprocess(parse(SPEC % ("sync", 3)).run_config(), split)
        assert same_params(svc.runs[st["id"]], expected.params)
        assert [round(c[2], 9) for c in st["curve"]] == [round(c[2], 9) for c in expected.curve]
        assert st["bytes"] == expected.bytes_moved

        # resume from the round-2 checkpoint, to 4 rounds: the 4-round in-process run
        resumed = await train(svc, SPEC % ("sync", 4), resume=st["checkpoints"][0][1])
        assert resumed["state"] == "done", resumed["error"]
        assert resumed["round"] == 4 and resumed["jobs"] == 2
        assert same_params(svc.runs[resumed["id"]], run_inprocess(parse(SPEC % ("sync", 4)).run_config(),
                                                                  split).params)
        nursery.cancel_scope.cancel()


async def test_local_mode_and_a_peer_crashed_mid_task(tmp_path):
    net = MemNetwork(12, latency=(0.001, 0.004))
    split = data.digits(5)
    async with trio.open_nursery() as nursery:
        nodes = await start_peers(nursery, net, tmp_path, 4, delay=0.3)
        svc, victim = nodes[0].services["training"], nodes[2]
        started = await api(svc, "start", body={"spec": SPEC % ("local", 3)})
        with trio.fail_after(60):
            while not victim.services["compute"].executor.running:
                await trio.sleep(0.01)
        net.crash(victim.peer_id)                          # deaf and mute, mid-task
        with trio.fail_after(180):
            while (st := await api(svc, "get", started["id"]))["state"] in ("waiting for peers", "running"):
                await trio.sleep(0.1)
        assert st["state"] == "done", st["error"]
        expected = run_inprocess(parse(SPEC % ("local", 3)).run_config(), split)
        assert same_params(svc.runs[st["id"]], expected.params)   # the shard ran elsewhere: same numbers
        sched = nodes[0].services["scheduler"]
        lost = [x for j in sched.jobs.values() for t in j.js.tasks.values() for x in t.attempts
                if x["peer"] == str(victim.peer_id) and x["outcome"] != "ok"]
        assert lost                                        # the victim's task was retried elsewhere
        nursery.cancel_scope.cancel()


async def test_async_mode_applies_every_shard_once_per_epoch(tmp_path):
    net = MemNetwork(13, latency=(0.001, 0.004))
    async with trio.open_nursery() as nursery:
        nodes = await start_peers(nursery, net, tmp_path, 3, delay=0.05)
        svc = nodes[0].services["training"]
        st = await train(svc, (SPEC % ("async", 4)) + "async: {staleness_bound: 2}\n")
        assert st["state"] == "done", st["error"]
        assert st["round"] == 4 and len(st["curve"]) == 4
        assert st["stats"]["applied"] == 12 and st["version"] == 12   # 3 shards x 4 epochs, one version each
        assert st["stats"]["stale_dropped"] == st["stats"]["assigned"] - 12 - st["stats"]["reassigned"]
        nursery.cancel_scope.cancel()


async def test_cancelling_a_run_cancels_its_jobs(tmp_path):
    net = MemNetwork(14, latency=(0.001, 0.004))
    async with trio.open_nursery() as nursery:
        nodes = await start_peers(nursery, net, tmp_path, 3, delay=0.5)
        svc = nodes[0].services["training"]
        started = await api(svc, "start", body={"spec": SPEC % ("sync", 50)})
        sched = nodes[0].services["scheduler"]
        with trio.fail_after(60):
            while not any(j.js.state == "running" for j in sched.jobs.values()):
                await trio.sleep(0.02)
        status, _, _ = await svc.api_routes()[("POST", "/v1/train/cancel/{id}")](b"{}", {"id": started["id"]})
        assert status == 200
        with trio.fail_after(30):
            while (st := await api(svc, "get", started["id"]))["state"] != "cancelled":
                await trio.sleep(0.05)
            while not all(j.done.is_set() for j in sched.jobs.values()):
                await trio.sleep(0.05)
        assert st["round"] < 50
        assert any(j.report.kind == "cancelled" for j in sched.jobs.values())
        nursery.cancel_scope.cancel()
