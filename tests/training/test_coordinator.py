"""The training coordinator state machine: each mode, faults, hostile updates, and the invariant that
every shard of a closed round is counted exactly once (hypothesis over event sequences)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings, target
from hypothesis import strategies as st

from p2pcompute.training.coordinator import (
    Aggregate, Apply, Assign, Checkpoint, Coordinator, Finished, PeerJoined, PeerLost, Refused, Tick,
    TrainConfig, UpdateArrived,
)


def start(peers=3, **kw) -> tuple[Coordinator, list]:
    coord = Coordinator(TrainConfig(min_peers=peers, **kw), random.Random(0))
    out = []
    for i in range(peers):
        out += coord.handle(PeerJoined(f"p{i}"), 0.0)
    return coord, out


def of(kind, cmds):
    return [c for c in cmds if isinstance(c, kind)]


def answer(coord, assign: Assign, now=1.0, payload=None):
    return coord.handle(UpdateArrived(assign.peer, assign.round, assign.shard,
                                      payload if payload is not None else (assign.round, assign.shard), 8), now)


def test_sync_rounds_assign_every_shard_then_aggregate_in_shard_order_and_checkpoint():
    coord, out = start(peers=2, mode="sync", shards=4, rounds=3, checkpoint_every=2, param_bytes=100)
    assigns = of(Assign, out)
    assert sorted(a.shard for a in assigns) == [0, 1, 2, 3]
    assert {a.peer for a in assigns} == {"p0", "p1"} and all(a.kind == "gradient" and a.version == 0 for a in assigns)
    closed = []
    for rnd in range(3):
        nxt = []
        for a in reversed(assigns):
            res = answer(coord, a)
            nxt += of(Assign, res)
            closed += res
        agg = of(Aggregate, closed)[-1]
        assert agg.round == rnd and [c.shard for c in agg.contributions] == [0, 1, 2, 3]
        assert [c.payload for c in agg.contributions] == [(rnd, s) for s in range(4)]
        assigns = nxt
        assert all(a.version == rnd + 1 for a in assigns)
    assert of(Checkpoint, closed) == [Checkpoint(2, 2)]
    assert of(Finished, closed) == [Finished(3, 3)] and not assigns
    assert coord.stats["bytes_down"] == 12 * 100 and coord.stats["bytes_up"] == 12 * 8


def test_local_mode_asks_for_h_steps_and_collects_deltas_per_round():
    coord, out = start(peers=4, mode="local", shards=4, rounds=1, local_steps=25)
    assigns = of(Assign, out)
    assert all(a.kind == "local" and a.steps == 25 for a in assigns) and len({a.peer for a in assigns}) == 4
    res = []
    for a in assigns:
        res += answer(coord, a, payload={"delta": a.shard})
    assert [c.payload for c in of(Aggregate, res)[0].contributions] == [{"delta": s} for s in range(4)]
    assert of(Finished, res)


def test_a_lost_peers_shard_is_reassigned_and_its_late_answer_refused():
    coord, out = start(peers=3, mode="sync", shards=3, rounds=1)
    by_peer = {a.peer: a for a in of(Assign, out)}
    answer(coord, by_peer["p0"])
    re = coord.handle(PeerLost("p1"), 2.0)
    moved = of(Assign, re)
    assert len(moved) == 1 and moved[0].shard == by_peer["p1"].shard and moved[0].peer != "p1"
    refused = of(Refused, answer(coord, by_peer["p1"]))
    assert refused and "not a live peer" in refused[0].reason
    res = answer(coord, moved[0]) + answer(coord, by_peer["p2"])
    agg = of(Aggregate, res)[0]
    assert [c.shard for c in agg.contributions] == [0, 1, 2]
    assert dict((c.shard, c.peer) for c in agg.contributions)[moved[0].shard] == moved[0].peer


def test_with_no_live_peer_shards_wait_for_a_join():
    coord, out = start(peers=1, mode="sync", shards=2, rounds=1)
    assert len(of(Assign, out)) == 2
    assert len(of(Assign, coord.handle(PeerLost("p0"), 1.0))) == 0
    again = of(Assign, coord.handle(PeerJoined("q"), 2.0))
    assert sorted(a.shard for a in again) == [0, 1] and {a.peer for a in again} == {"q"}


def test_a_timed_out_shard_gets_a_backup_and_the_first_answer_wins():
    coord, out = start(peers=2, mode="sync", shards=1, rounds=1, task_timeout=10.0)
    (first,) = of(Assign, out)
    assert of(Assign, coord.handle(Tick(), 5.0)) == []
    (backup,) = of(Assign, coord.handle(Tick(), 10.0))
    assert backup.peer != first.peer and backup.shard == first.shard
    res = answer(coord, first, now=11.0)
    assert of(Aggregate, res) and of(Finished, res)
    assert of(Refused, answer(coord, backup, now=12.0))


@pytest.mark.parametrize("event, reason", [
    (UpdateArrived("stranger", 0, 0), "not a live peer"),
    (UpdateArrived("p0", 5, 0), "not the current round"),
    (UpdateArrived("p0", 0, 99), "not in 0..1"),
    (UpdateArrived("p0", 0, "0"), "not in 0..1"),
    (UpdateArrived("p0", True, 0), "not the current round"),
])
def test_updates_that_match_no_assignment_are_refused_with_a_reason(event, reason):
    coord, out = start(peers=2, mode="sync", shards=2, rounds=1)
    refused = of(Refused, coord.handle(event, 1.0))
    assert len(refused) == 1 and reason in refused[0].reason


def test_an_update_for_a_shard_held_by_another_peer_is_refused():
    coord, out = start(peers=2, mode="sync", shards=2, rounds=1)
    a = of(Assign, out)[0]
    other = "p1" if a.peer == "p0" else "p0"
    assert "not assigned to this peer" in of(Refused, coord.handle(UpdateArrived(other, 0, a.shard), 1.0))[0].reason


def test_async_applies_at_once_weights_stale_updates_down_and_drops_past_the_bound():
    coord, out = start(peers=3, mode="async", shards=6, rounds=2, staleness_bound=1)
    held = {a.peer: a for a in of(Assign, out)}
    assert len(held) == 3  # one assignment per peer at a time
    res = answer(coord, held["p0"])
    (apply,) = of(Apply, res)
    assert apply.contribution.weight == 1.0 and coord.version == 1
    held["p0"] = of(Assign, res)[0]
    assert held["p0"].version == 1
    res = answer(coord, held["p1"])  # given version 0, now 1: staleness 1
    assert of(Apply, res)[0].contribution.staleness == 1 and of(Apply, res)[0].contribution.weight == 0.5
    res = answer(coord, held["p2"])  # given version 0, now 2: past the bound
    refused = of(Refused, res)
    assert refused and "stale" in refused[0].reason and not of(Apply, res)
    (again,) = of(Assign, res)  # the shard goes out again, at the current version
    assert again.shard == held["p2"].shard and again.version == 2
    assert coord.stats["stale_dropped"] == 1


class Model:
    """Drive a coordinator with random events and check the invariants after each step."""

    def __init__(self, mode: str, seed: int) -> None:
        self.cfg = TrainConfig(mode=mode, shards=4, rounds=3, staleness_bound=2, task_timeout=5.0,
                               local_steps=2)
        self.coord = Coordinator(self.cfg, random.Random(seed))
        self.live: set[str] = set()
        self.sent: list[Assign] = []
        self.counted: dict[int, list[int]] = {}   # round -> shards counted
        self.now = 0.0

    def step(self, action: tuple) -> None:
        kind, a, b = action
        self.now += 1.0
        if kind == "join":
            ev = PeerJoined(f"p{a % 5}")
            self.live.add(ev.peer)
        elif kind == "lose":
            ev = PeerLost(f"p{a % 5}")
            self.live.discard(ev.peer)
        elif kind == "answer" and self.sent:
            t = self.sent[a % len(self.sent)]
            ev = UpdateArrived(t.peer, t.round, t.shard, (t.round, t.shard))
        elif kind == "takeover":  # a successor rebuilds from the record; membership re-announces peers
            self.coord = Coordinator.from_record(self.coord.to_record(), random.Random(a))
            for peer in sorted(self.live):
                self.absorb(self.coord.handle(PeerJoined(peer), self.now))
            self.check()
            return
        elif kind == "forge":
            ev = UpdateArrived(f"p{a % 6}", b % 4, a % 5, (b % 4, a % 5))  # maybe held, maybe not
        else:
            ev = Tick()
        self.absorb(self.coord.handle(ev, self.now))
        self.check()

    def absorb(self, out: list) -> None:
        for cmd in out:
            if isinstance(cmd, Assign):
                assert cmd.peer in self.live
                self.sent.append(cmd)
            elif isinstance(cmd, Aggregate):
                self.counted.setdefault(cmd.round, []).extend(c.shard for c in cmd.contributions)
                assert all(c.payload == (cmd.round, c.shard) for c in cmd.contributions)
            elif isinstance(cmd, Apply):
                self.counted.setdefault(cmd.round, []).append(cmd.contribution.shard)

    def check(self) -> None:
        c = self.coord
        for rnd, shards in self.counted.items():  # counted at most once, and exactly once when closed
            assert len(shards) == len(set(shards))
            if rnd < c.round:
                assert sorted(shards) == list(range(self.cfg.shards))
        for peer, held in c.peers.items():
            assert peer in self.live
            for shard in held:
                assert peer in c.slots[shard].holders
        if not c.finished and self.live:  # every open shard is held by some live peer (async: if one is free)
            for shard, slot in enumerate(c.slots):
                if slot.done is None and not slot.holders:
                    assert c.config.mode == "async" and all(len(h) >= 1 for h in c.peers.values())
            for slot in c.slots:
                assert set(slot.holders) <= self.live


ACTIONS = st.tuples(st.sampled_from(["join", "lose", "answer", "answer", "answer", "forge", "tick", "takeover"]),
                    st.integers(0, 50), st.integers(0, 5))


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["sync", "local", "async"]), st.integers(0, 1000), st.lists(ACTIONS, max_size=80))
def test_every_shard_of_a_closed_round_is_counted_exactly_once(mode, seed, actions):
    m = Model(mode, seed)
    for action in actions:
        m.step(action)
    target(float(m.coord.round), label="rounds closed")  # steer towards runs that close rounds


def test_training_completes_with_a_peer_lost_in_every_round():
    coord, out = start(peers=4, mode="sync", shards=4, rounds=10)
    pending = of(Assign, out)
    rng = random.Random(5)
    rounds_done, peers = 0, 4
    while not coord.finished:
        victim = rng.choice(sorted(coord.peers))
        pending = [a for a in pending if a.peer != victim]
        res = answer(coord, pending.pop(0)) if pending else []
        res += coord.handle(PeerLost(victim), 1.0)
        res += coord.handle(PeerJoined(f"new{peers}"), 1.0)
        peers += 1
        while pending or of(Assign, res):
            pending += of(Assign, res)
            rounds_done += len(of(Aggregate, res))
            if coord.finished:
                break
            res = answer(coord, pending.pop(0))
            if of(Aggregate, res):
                rounds_done += 1
                pending = of(Assign, res)
                break
    assert rounds_done == 10 and coord.version == 10


def test_nothing_is_assigned_before_min_peers_have_joined():
    coord = Coordinator(TrainConfig(shards=4, min_peers=3), random.Random(0))
    assert coord.handle(PeerJoined("a"), 0.0) == [] and coord.handle(PeerJoined("b"), 0.0) == []
    assigns = of(Assign, coord.handle(PeerJoined("c"), 0.0))
    assert len(assigns) == 4 and {a.peer for a in assigns} == {"a", "b", "c"}
    with pytest.raises(ValueError):
        TrainConfig(mode="gossip")


@pytest.mark.parametrize("mode", ["sync", "local", "async"])
def test_a_rebuilt_coordinator_keeps_counted_shards_and_hands_out_the_rest(mode):
    import cbor2

    coord, out = start(peers=2, mode=mode, shards=4, rounds=2, checkpoint_every=1)
    first = of(Assign, out)[0]
    answer(coord, first, payload=f"cid-{first.shard}")
    record = cbor2.loads(cbor2.dumps(coord.to_record()))  # plain data
    again = Coordinator.from_record(record, random.Random(1))
    assert (again.round, again.version, again.stats) == (coord.round, coord.version, coord.stats)
    pending = of(Assign, again.handle(PeerJoined("q"), 5.0))
    assert {a.shard for a in pending} <= {0, 1, 2, 3} - {first.shard}
    assert len(pending) == (1 if mode == "async" else 3)  # async: one shard per peer at a time
    res: list = []
    while again.round == 0:
        a = pending.pop(0)
        step = answer(again, a, payload=f"cid-{a.shard}")
        res += step
        pending += of(Assign, step)
    counted = [c.shard for c in of(Aggregate, res)[0].contributions] if mode != "async" else \
        [first.shard] + [a.contribution.shard for a in of(Apply, res)]
    assert sorted(counted) == [0, 1, 2, 3] and of(Checkpoint, res)


@pytest.mark.parametrize("mutate", [
    lambda r: r.pop("round"),
    lambda r: r.update(round=-1),
    lambda r: r.update(done=[None]),
    lambda r: r["config"].update(mode="gossip"),
    lambda r: r.update(done=[[3, "p", None, 1.0, 0], None, None, None]),
    lambda r: r.update(stats="lots"),
])
def test_a_malformed_record_is_refused_with_a_reason(mutate):
    coord, _ = start(peers=1, shards=4)
    record = coord.to_record()
    mutate(record)
    with pytest.raises(ValueError):
        Coordinator.from_record(record, random.Random(0))
