"""Parameter sharding (owners by XOR, memory refusal) and spot checks (a mismatch bans) in the pure coordinator."""

import random

import pytest

from p2pcompute.training import sharding
from p2pcompute.training.coordinator import Aggregate, Assign, Banned, Coordinator, PeerJoined, SpotCheck, \
    SpotChecked, TrainConfig, UpdateArrived


def test_too_large_parameters_are_refused_with_the_parts_needed():
    with pytest.raises(sharding.ShardingNeeded, match="param_shards: 2 or more"):
        TrainConfig(shards=20, param_bytes=5200, peer_memory=65536)
    TrainConfig(shards=20, param_bytes=5200, peer_memory=65536, param_shards=2)


def test_ranges_cover_and_owners_are_the_xor_closest():
    assert sharding.ranges(10, 3) == [(0, 4), (4, 7), (7, 10)]
    peers = [f"p{i}" for i in range(20)]
    owners = sharding.owners("run", 4, peers)
    for i, owner in enumerate(owners):
        key = sharding.part_key("run", i)
        assert all(sharding.peer_key(owner) ^ key <= sharding.peer_key(p) ^ key for p in peers)
    # the owner's loss hands its part to the next closest
    rest = [p for p in peers if p != owners[0]]
    assert sharding.owners("run", 4, rest)[0] != owners[0]


def _round(coord, now=0.0):
    out = []
    for p in ("a", "b", "c"):
        out += coord.handle(PeerJoined(p), now)
    return out


def test_a_failed_spot_check_bans_and_the_shard_is_redone_before_the_round_closes():
    coord = Coordinator(TrainConfig(shards=2, rounds=1, spot_check=1.0, param_shards=2), random.Random(1))
    assigns = [c for c in _round(coord) if isinstance(c, Assign)]
    out = []
    for a in assigns:
        out += coord.handle(UpdateArrived(a.peer, a.round, a.shard, "u"), 1.0)
    checks = [c for c in out if isinstance(c, SpotCheck)]
    assert len(checks) == 2 and not any(isinstance(c, Aggregate) for c in out)  # the round waits for its checks
    liar = checks[0]
    out = coord.handle(SpotChecked(liar.peer, liar.round, liar.shard, ok=False), 2.0)
    assert any(isinstance(c, Banned) and c.peer == liar.peer for c in out)
    redo = [c for c in out if isinstance(c, Assign)]
    assert redo and all(c.peer != liar.peer for c in redo)
    assert coord.handle(PeerJoined(liar.peer), 2.0) == [] and liar.peer not in coord.peers
    out = coord.handle(SpotChecked(checks[1].peer, 0, checks[1].shard, ok=True), 2.0)
    for a in redo:
        out += coord.handle(UpdateArrived(a.peer, a.round, a.shard, "v"), 3.0)
        out += [c for c in out if isinstance(c, SpotCheck)] and coord.handle(SpotChecked(a.peer, 0, a.shard, True), 3.0)
    agg = [c for c in out if isinstance(c, Aggregate)]
    assert len(agg) == 1 and len(agg[0].owners) == 2 and liar.peer not in agg[0].owners
    assert all(c.peer != liar.peer for c in agg[0].contributions)
