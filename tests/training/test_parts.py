"""Parameter sharding's pure pieces on the network side: the gradient graph cut into parts, one part's
aggregate graph (the same numbers as the in-process Updater, bit for bit), owners in the DHT keyspace,
the pinned-peer label of placement, and train.yaml's param_shards / peer_memory / synthetic checks
(the refusal names the parts needed, also as the CLI's exit status)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pcompute.errors import UserError
from p2pcompute.node.identity import Identity
from p2pcompute.scheduler.model import Requirements
from p2pcompute.scheduler.placement import PEER_LABEL, Candidate, meets, unmet
from p2pcompute.training import aggregate, sharding
from p2pcompute.training.coordinator import TrainConfig
from p2pcompute.training.inprocess import RunConfig, Updater
from p2pcompute.training.model import Model, init_params, local_graph, step_graph
from p2pcompute.training.optim import flatten
from p2pcompute.training.parts import aggregate_graph, join, part_name, split_outputs
from p2pcompute.training.spec import parse

ROOT = Path(__file__).parents[2]


@settings(max_examples=15, deadline=None)
@given(features=st.integers(1, 12), hidden=st.lists(st.integers(1, 6), max_size=1), classes=st.integers(2, 5),
       parts=st.integers(2, 6), seed=st.integers(0, 1000))
def test_the_parts_of_a_gradient_graph_are_its_flattened_gradient_cut(features, hidden, classes, parts, seed):
    model = Model(features, tuple(hidden), classes)
    rng = np.random.default_rng(seed)
    params = init_params(model, rng)
    cut = sharding.ranges(model.param_count(), min(parts, model.param_count()))
    x, y = rng.standard_normal((5, features)), rng.integers(0, classes, 5)
    whole = step_graph(model, 5).run({"x": x, "y": y, **params})
    split = split_outputs(step_graph(model, 5), model, cut, "grad.")
    got = split.run({"x": x, "y": y, **params})
    assert list(split.outputs) == ["loss", "correct", *(part_name(i) for i in range(len(cut)))]
    grads = {n[len("grad."):]: v for n, v in whole.items() if n.startswith("grad.")}
    assert np.array_equal(np.concatenate([got[part_name(i)] for i in range(len(cut))]), flatten(grads))
    assert join([got[part_name(i)] for i in range(len(cut))], params).keys() == params.keys()


def test_a_local_steps_graph_is_cut_the_same_way():
    model = Model(4, (), 3)
    graph = split_outputs(local_graph(model, 2, 3, 0.1, 0.9), model, sharding.ranges(15, 2), "delta.")
    assert list(graph.outputs) == ["loss", "part.0", "part.1"]


@pytest.mark.parametrize("mode, momentum", [("sync", 0.9), ("sync", 0.0), ("local", 0.9), ("local", 0.0)])
def test_the_parts_aggregated_apart_give_the_in_process_updaters_numbers_exactly(mode, momentum):
    model = Model(7, (3,), 4)
    rng = np.random.default_rng(4)
    params = init_params(model, rng)
    cfg = RunConfig(TrainConfig(mode, shards=3), model=model, lr=0.1, momentum=momentum, outer_lr=0.7,
                    outer_momentum=momentum)
    whole = Updater(cfg, dict(params))
    updates = [{n: rng.standard_normal(v.shape) for n, v in params.items()} for _ in range(3)]
    cut = sharding.ranges(model.param_count(), 3)
    velocity = np.zeros(model.param_count())
    flat_p = flatten(params)
    for _ in range(3):                                   # three rounds: the velocity carries over
        whole.aggregate(updates)
        lr, mu = (0.1, momentum) if mode == "sync" else (0.7, momentum)
        new_p, new_v = [], []
        for lo, hi in cut:
            out = aggregate_graph(3, hi - lo, mode, lr, mu).run(
                {**{f"u{j}": flatten(u)[lo:hi] for j, u in enumerate(updates)}, "p": flat_p[lo:hi],
                 "v": velocity[lo:hi]})
            new_p.append(out["p_new"])
            new_v.append(out["v_new"])
        flat_p, velocity = np.concatenate(new_p), np.concatenate(new_v)
        assert np.array_equal(flat_p, flatten(whole.params))
        if momentum:
            assert np.array_equal(velocity, flatten(whole.velocity()))
        updates = updates[1:] + updates[:1]


def test_only_the_mean_equals_the_whole_and_the_graph_refuses_nonsense():
    rows = np.random.default_rng(0).standard_normal((5, 9))
    assert np.array_equal(aggregate.by_parts(aggregate.mean, rows, 3), aggregate.mean(rows))
    with pytest.raises(ValueError):
        aggregate_graph(0, 4, "sync", 0.1, 0.9)
    with pytest.raises(ValueError):
        aggregate_graph(2, 4, "async", 0.1, 0.9)


def test_owners_on_the_network_are_the_closest_peer_ids_in_the_dht_keyspace():
    from p2pcompute.node.identity import PeerId
    from p2pcompute.scheduler.replicas import peer_key

    peers = [str(Identity.generate().peer_id) for _ in range(8)]
    owners = sharding.owners("run", 3, peers, sharding.network_key)
    for i, owner in enumerate(owners):
        key = sharding.part_key("run", i)
        assert all(peer_key(PeerId.from_string(owner)) ^ key <= peer_key(PeerId.from_string(p)) ^ key for p in peers)
    rest = [p for p in peers if p != owners[0]]           # the owner gone: the next closest takes its part
    assert sharding.owners("run", 3, rest, sharding.network_key)[0] == \
        min(rest, key=lambda p: peer_key(PeerId.from_string(p)) ^ sharding.part_key("run", 0))


def test_the_peer_id_label_pins_a_task_to_one_peer():
    cands = [Candidate(f"p{i}", 1, 4.0, 1 << 33, "x86_64") for i in range(3)]
    req = Requirements(labels={PEER_LABEL: "p1"})
    assert [c.peer for c in cands if meets(c, req)] == ["p1"]
    assert unmet(Requirements(labels={PEER_LABEL: "gone"}), cands) == "no peer offers peer gone: 3 peers known"


SHARDED = """
dataset: synthetic
synthetic: {examples: 100, features: 50, classes: 4}
model: linear
shards: 4
peer_memory: 5000
"""


def test_train_yaml_refuses_parameters_that_do_not_fit_and_names_the_parts_needed():
    with pytest.raises(UserError, match=r"param_shards: 2 or more"):
        parse(SHARDED)                            # 204 parameters, 1632 bytes x 6 > 5000
    spec = parse(SHARDED + "param_shards: 2\n")
    assert spec.shape() == (50, 4) and spec.run_config().train.param_shards == 2


@pytest.mark.parametrize("extra, words", [
    ("param_shards: 2\nmode: async", ["param_shards: needs mode sync or local"]),
    ("param_shards: 2\naggregation: {rule: median}", ["by the mean only"]),
    ("param_shards: 0", ["param_shards"]),
    ("param_shards: 2\nspot_check: 2", ["spot_check"]),
    ("param_shards: 2\nsynthetic: {examples: 10}", ["synthetic.examples"]),
])
def test_sharding_problems_are_named(extra, words):
    with pytest.raises(UserError) as info:
        parse(SHARDED + extra)
    for w in words:
        assert w in str(info.value)


def test_synthetic_keys_need_the_synthetic_dataset():
    with pytest.raises(UserError, match="only with dataset: synthetic"):
        parse("dataset: digits\nsynthetic: {examples: 100}\n")


def test_the_cli_refuses_a_configuration_that_does_not_fit_before_it_connects(tmp_path):
    text = (ROOT / "examples" / "synthetic-linear.train.yaml").read_text().replace("param_shards: 2", "param_shards: 1")
    (tmp_path / "one.yaml").write_text(text)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "p2pcompute", "train", "one.yaml",
                          "--data-dir", str(tmp_path / "none")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "param_shards: 2 or more" in out.stderr and "524288" in out.stderr


def test_distinct_owners_give_each_part_its_own_peer_while_there_are_enough():
    peers = [f"p{i}" for i in range(5)]
    for run in ("a", "b", "c", "d"):
        owners = sharding.distinct_owners(run, 5, peers)
        assert sorted(owners) == peers
        assert owners[0] == sharding.owners(run, 1, peers)[0]          # the first part: its closest peer
        assert set(sharding.distinct_owners(run, 7, peers)[5:]) <= set(peers)
    assert sharding.distinct_owners("a", 2, []) == ()
