"""Parameter sharding and gradient spot checks of the network driver on real libp2p peers (in-process nodes,
the sandboxed executor): a tiny linear model trained for a few sync rounds with ``param_shards: 2``, each
round's parts aggregated by tasks pinned to the part's owner (the live peer XOR-closest to the part's key in
the DHT keyspace); the parameters are the unsharded in-process run's. (slow: the owner of a part stopped
mid-training, its part goes to the next closest peer, and the result is the same.) With ``spot_check: 1.0`` a peer whose
executor sends sign-flipped gradients is caught by the trust layer's spot check (the coordinator's own peer
recomputes the task), banned, and the run still ends with the in-process run's parameters."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import trio

from p2pcompute.training import data
from p2pcompute.training.driver import NetworkTrainer
from p2pcompute.training.inprocess import run as run_inprocess
from p2pcompute.training.sharding import distinct_owners, network_key
from p2pcompute.training.spec import parse

sys.path.insert(0, str(Path(__file__).parents[1] / "scheduler"))
from test_service_net import start_peers  # noqa: E402

SPEC = """
name: tiny-sharded
dataset: synthetic
synthetic: {examples: 400, features: 30, classes: 4, informative: 8}
seed: 3
model: linear
mode: sync
peers: 3
shards: 3
rounds: 3
batch: 16
optimizer: {lr: 0.2, momentum: 0.9}
task_timeout: 60
"""


async def train(node, text: str, run_id: str) -> NetworkTrainer:
    trainer = NetworkTrainer(node.services["scheduler"], node.services["storage"], parse(text), run_id,
                             start_timeout=60)
    with trio.fail_after(240):
        await trainer.run()
    return trainer


def expected_params(text: str) -> dict:
    spec = parse(text)
    unsharded = parse(text.replace("param_shards: 2", "param_shards: 1").replace("peer_memory: 4000", "peer_memory: 0"))
    assert unsharded.param_shards == 1
    return run_inprocess(unsharded.run_config(), data.load(spec)).params


async def test_parts_are_aggregated_on_their_owners_and_the_result_is_the_inprocess_runs(tmp_path):
    text = SPEC + "param_shards: 2\npeer_memory: 4000\n"
    async with trio.open_nursery() as nursery:
        nodes, _ = await start_peers(nursery, tmp_path, n=3)
        live = [str(n.peer_id) for n in nodes]
        expected_owners = list(distinct_owners("run-parts", 2, live, network_key))
        assert len(set(expected_owners)) == 2
        trainer = await train(nodes[0], text, "run-parts")
        st = trainer.status()
        assert st["state"] == "done", st["error"]
        assert st["aggregate_jobs"] == 3 and st["param_shards"] == 2
        assert st["owners"] == expected_owners                   # who ran each part's task, last round
        assert set(st["part_owners"]) == set(expected_owners)
        assert all(v["parts"] == 3 for v in st["part_owners"].values())
        sched = nodes[0].services["scheduler"]
        for job_id, job in sched.jobs.items():                  # every attempt of part i: on its owner
            if job_id.endswith("-aggregate"):
                for tid, task in job.js.tasks.items():
                    assert {a["peer"] for a in task.attempts} == {expected_owners[int(tid[-1])]}
        want = expected_params(text)
        for name, value in trainer.updater.params.items():
            np.testing.assert_allclose(value, want[name], rtol=0, atol=1e-12)
        nursery.cancel_scope.cancel()


def flip_gradients(store):
    """A liar's result hook: every gradient part (or gradient) output replaced by -4x itself, added to its own
    blockstore and claimed as its result."""
    import dataclasses

    from p2pcompute.ops import tensor_format
    from p2pcompute.storage.cid import Cid
    from p2pcompute.storage.exporter import read_file
    from p2pcompute.storage.importer import import_bytes

    def hook(job_id, task, outcome):
        lie = dict(outcome.outputs)
        for name, cid in outcome.outputs.items():
            if name.startswith(("grad.", "part.")):
                value = tensor_format.decode(read_file(store.get, Cid.parse(cid)))
                with store.session():
                    result = import_bytes(tensor_format.encode(-4.0 * np.asarray(value)), store.put)
                    store.pin(result.cid)
                lie[name] = str(result.cid)
        return dataclasses.replace(outcome, outputs=lie)

    return hook


async def test_a_peer_sending_wrong_gradients_is_caught_by_spot_checks_and_banned(tmp_path):
    # two peers: every task the liar runs is checked by the other (the coordinator's, trusted) peer
    text = SPEC.replace("peers: 3", "peers: 2").replace("rounds: 3", "rounds: 4") + "spot_check: 1.0\n"
    async with trio.open_nursery() as nursery:
        nodes, _ = await start_peers(nursery, tmp_path, n=2)
        liar = nodes[1]
        liar.services["scheduler"].result_hook = flip_gradients(liar.services["storage"].blockstore)
        trainer = await train(nodes[0], text, "run-spot")
        st = trainer.status()
        assert st["state"] == "done", st["error"]
        assert st["verification"].startswith("spot-check(1.0")
        sched = nodes[0].services["scheduler"]
        ran = [a["peer"] for job in sched.jobs.values() for t in job.js.tasks.values() for a in t.attempts]
        assert str(liar.peer_id) in ran                          # the liar did run gradient tasks
        want = expected_params(text)
        for name, value in trainer.updater.params.items():
            np.testing.assert_allclose(value, want[name], rtol=0, atol=1e-12)
        assert sched.verify_env().ledger.banned(str(liar.peer_id))
        assert not sched.verify_env().ledger.banned(str(nodes[0].peer_id))
        nursery.cancel_scope.cancel()




@pytest.mark.slow
async def test_a_dead_part_owner_hands_its_part_to_the_next_closest_peer(tmp_path):
    text = SPEC.replace("peers: 3", "peers: 4").replace("rounds: 3", "rounds: 4").replace("task_timeout: 60",
                                                                                          "task_timeout: 20")
    text += "param_shards: 2\npeer_memory: 4000\n"
    async with trio.open_nursery() as nursery:
        nodes, scopes = await start_peers(nursery, tmp_path, n=4)
        live = [str(n.peer_id) for n in nodes]
        # a run name whose part 0 is owned by a peer other than the coordinator's (which must survive)
        run_id = next(f"run-{k}" for k in range(100)
                      if distinct_owners(f"run-{k}", 2, live, network_key)[0] != live[0])
        victim = live.index(distinct_owners(run_id, 2, live, network_key)[0])
        trainer = NetworkTrainer(nodes[0].services["scheduler"], nodes[0].services["storage"], parse(text), run_id,
                                 start_timeout=60)
        nursery.start_soon(trainer.run)
        with trio.fail_after(120):
            while trainer.coord.round < 1:
                await trio.sleep(0.05)
        scopes[victim].cancel()                               # the owner of part 0 stops, mid-training
        with trio.fail_after(300):
            await trainer.done.wait()
        st = trainer.status()
        assert st["state"] == "done", st["error"]
        survivors = [p for i, p in enumerate(live) if i != victim]
        assert st["owners"] == list(distinct_owners(run_id, 2, survivors, network_key))
        assert live[victim] not in st["owners"]
        want = expected_params(text)
        for name, value in trainer.updater.params.items():
            np.testing.assert_allclose(value, want[name], rtol=0, atol=1e-12)
        nursery.cancel_scope.cancel()
