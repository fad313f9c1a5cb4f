"""Placement: requirements and their reasons, slots, locality, batch sampling, lone peer, oracle and random."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pcompute.gossip.capability import CapabilityRecord
from p2pcompute.node.identity import Identity
from p2pcompute.scheduler.events import Dispatch
from p2pcompute.scheduler.model import Requirements
from p2pcompute.scheduler.placement import Candidate, Placement, PlacementConfig, meets, unmet, unmet_plan

GiB = 1 << 30


def peers(n, slots=2, **kw):
    return [Candidate(f"p{i}", slots, 4.0, 8 * GiB, "x86_64", **kw) for i in range(n)]


def dispatch(tid, req=None, inputs=(), avoid=(), wanted=2):
    return Dispatch("job", tid, wanted, req or Requirements(), tuple(inputs), frozenset(avoid))


@pytest.mark.parametrize("req, reason", [
    (Requirements(arch="arm64"), "no peer offers arch=arm64: 12 peers known"),
    (Requirements(labels={"gpu": "a100"}), "no peer offers label gpu=a100: 12 peers known"),
    (Requirements(opset=2), "no peer offers operator set ops/v2: 12 peers known"),
    (Requirements(cpus=64), "no peer offers cpus>=64: 12 peers known"),
    (Requirements(memory=64 * GiB), f"no peer offers memory>={64 * GiB}: 12 peers known"),
])
def test_a_requirement_no_peer_meets_is_named_with_the_peers_known(req, reason):
    cands = peers(12)
    assert unmet(req, cands) == reason
    placed = Placement(random.Random(0)).place([dispatch("t", req)], cands)
    assert placed[0].peers == () and placed[0].reason == reason


def test_requirements_met_only_together_and_wasm_and_the_singular():
    cands = [Candidate("arm", 1, 2, GiB, "arm64"), Candidate("big", 1, 32, 64 * GiB, "x86_64", wasm=False)]
    assert unmet(Requirements(arch="arm64", cpus=16), cands).startswith("no single peer offers arch=arm64, cpus>=16")
    assert unmet(Requirements(wasm=True), [cands[1]]) == "no peer offers wasm: 1 peer known"
    assert unmet(Requirements(arch="arm64", cpus=2, memory=GiB), cands) is None
    placed = Placement(random.Random(0)).place([dispatch("t", Requirements(cpus=16, memory=GiB))], cands)
    assert placed[0].peers == ("big",)


def test_only_peers_meeting_the_requirements_are_chosen():
    cands = peers(10) + [Candidate(f"g{i}", 2, 4, 8 * GiB, "x86_64", labels={"gpu": "1"}) for i in range(3)]
    req = Requirements(labels={"gpu": "1"})
    placed = Placement(random.Random(1)).place([dispatch(f"t{i}", req) for i in range(3)], cands)
    assert all(p.peers and all(x.startswith("g") for x in p.peers) for p in placed)
    assert all(meets(next(c for c in cands if c.peer == x), req) for p in placed for x in p.peers)


@pytest.mark.parametrize("mode", ["sparrow", "random", "oracle"])
def test_never_more_reservations_on_a_peer_than_its_free_slots_plus_its_queue(mode):
    cands = [Candidate(f"p{i}", i % 3, 4, 8 * GiB, "x86_64") for i in range(9)]     # 0, 1 or 2 free slots
    pl = Placement(random.Random(3), PlacementConfig(mode=mode, max_queued=0))
    placed = pl.place([dispatch(f"t{i}") for i in range(40)], cands)
    use = Counter(x for p in placed for x in p.peers)
    if mode != "oracle":                          # the oracle queues where the wait is shortest
        assert all(use[c.peer] <= c.free_slots for c in cands)
        assert sum(use.values()) == 9 and sum(1 for p in placed if p.peers) <= 9
        assert all("busy" in p.reason for p in placed if not p.peers)
    else:
        waits = [use[c.peer] - c.free_slots for c in cands]     # the expected wait it balances
        assert all(p.peers for p in placed) and max(waits) - min(waits) <= 1


def test_batch_sampling_spreads_d_times_m_reservations_over_distinct_peers():
    cands = peers(100, slots=1)
    placed = Placement(random.Random(5), PlacementConfig(max_queued=0)).place(
        [dispatch(f"t{i}") for i in range(20)], cands)
    all_peers = [x for p in placed for x in p.peers]
    assert all(len(p.peers) == 2 for p in placed) and len(set(all_peers)) == 40


def test_peers_holding_a_tasks_largest_input_come_first():
    cands = peers(50)
    providers = {f"big{i}": [f"p{i % 50}"] for i in range(100)}
    providers.update({f"small{i}": [f"p{(i + 7) % 50}"] for i in range(100)})
    ds = [dispatch(f"t{i}", inputs=[("a", f"big{i}", 10_000_000), ("b", f"small{i}", 1000)]) for i in range(100)]
    placed = Placement(random.Random(7)).place(ds, cands, providers)
    local = sum(p.peers[0] == f"p{i % 50}" for i, p in enumerate(placed))
    assert local >= 90, local
    off = Placement(random.Random(7), PlacementConfig(locality_weight=0.0)).place(ds, cands, providers)
    assert sum(p.peers[0] == f"p{i % 50}" for i, p in enumerate(off)) < 30


def test_peers_that_failed_a_task_are_avoided_unless_nobody_else_can():
    cands = peers(3)
    placed = Placement(random.Random(0)).place([dispatch("t", avoid={"p0", "p1"}, wanted=3)], cands)
    assert placed[0].peers == ("p2",)
    placed = Placement(random.Random(0)).place([dispatch("t", avoid={"p0", "p1", "p2"})], cands)
    assert len(placed[0].peers) == 2


def test_a_lone_peer_runs_everything_itself():
    me = [Candidate("me", 1, 2, 4 * GiB, "x86_64")]
    placed = Placement(random.Random(0)).place([dispatch(f"t{i}") for i in range(3)], me)   # its budget: 1 + 2
    assert all(p.peers == ("me",) for p in placed)
    assert Placement(random.Random(0)).place([dispatch("t", Requirements(arch="arm64"))], me)[0].reason == \
        "no peer offers arch=arm64: 1 peer known"


def test_ties_break_at_random_and_a_seed_replays():
    cands = peers(30)
    ds = [dispatch(f"t{i}") for i in range(5)]
    runs = [Placement(random.Random(s)).place(ds, cands) for s in (1, 1, 2)]
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_the_oracle_picks_the_shortest_queue_and_random_one_peer():
    cands = [Candidate("busy", 0, 4, 8 * GiB, "x86_64", queue=5), Candidate("idle", 2, 4, 8 * GiB, "x86_64"),
             Candidate("some", 1, 4, 8 * GiB, "x86_64", queue=1)]
    placed = Placement(random.Random(0), PlacementConfig(mode="oracle")).place(
        [dispatch(f"t{i}") for i in range(4)], cands)
    assert Counter(p.peers[0] for p in placed) == {"idle": 3, "some": 1}   # waits end at 1, 1 and 5
    placed = Placement(random.Random(0), PlacementConfig(mode="random")).place(
        [dispatch(f"t{i}") for i in range(30)], peers(10))
    assert all(len(p.peers) == 1 for p in placed) and len({p.peers for p in placed}) > 5
    with pytest.raises(ValueError):
        Placement(random.Random(0), PlacementConfig(mode="magic"))


def test_a_candidate_from_a_capability_record():
    ident = Identity.generate()
    rec = CapabilityRecord(ident.peer_id, 3, 8.0, 16 * GiB, "x86_64", free_slots=4, load=0.5, labels={"zone": "a"})
    c = Candidate.from_record(rec)
    assert (c.peer, c.free_slots, c.labels, c.opsets, c.load) == (ident.peer_id, 4, {"zone": "a"}, ("ops/v1",), 0.5)
    assert meets(c, Requirements(opset=1, labels={"zone": "a"}, wasm=True))


@st.composite
def scenes(draw):
    n = draw(st.integers(0, 12))
    cands = [Candidate(f"p{i}", draw(st.integers(0, 3)), draw(st.sampled_from([1.0, 4.0])), 8 * GiB,
                       draw(st.sampled_from(["x86_64", "arm64"])), labels=draw(st.sampled_from([{}, {"gpu": "1"}])),
                       queue=draw(st.integers(0, 4))) for i in range(n)]
    reqs = [Requirements(), Requirements(arch="arm64"), Requirements(cpus=2.0), Requirements(labels={"gpu": "1"})]
    ds = [dispatch(f"t{i}", draw(st.sampled_from(reqs)), wanted=draw(st.integers(1, 3)),
                   inputs=[("x", f"cid{draw(st.integers(0, 5))}", draw(st.integers(1, 10**9)))],
                   avoid={f"p{j}" for j in draw(st.lists(st.integers(0, 12), max_size=3))})
          for i in range(draw(st.integers(1, 20)))]
    providers = {f"cid{k}": [f"p{j}" for j in draw(st.lists(st.integers(0, 14), max_size=3))] for k in range(6)}
    return cands, ds, providers


@settings(max_examples=300, deadline=None)
@given(scenes(), st.sampled_from(["sparrow", "oracle", "random"]), st.integers(0, 2**16))
def test_placement_invariants(scene, mode, seed):
    cands, ds, providers = scene
    by = {c.peer: c for c in cands}
    cfg = PlacementConfig(mode=mode, max_queued=1)
    placed = Placement(random.Random(seed), cfg).place(ds, cands, providers)
    assert [p.task for p in placed] == [d.task for d in ds]
    use = Counter()
    first = {}
    for i, d in enumerate(ds):
        first.setdefault(repr(d.requirements), i)
    # in placement's order: dispatches grouped by requirements, groups by first appearance
    for d, p in sorted(zip(ds, placed), key=lambda dp: first[repr(dp[0].requirements)]):
        assert len(set(p.peers)) == len(p.peers) <= max(1, d.wanted)
        assert all(meets(by[x], d.requirements) for x in p.peers)
        if not p.peers:
            assert p.reason
            if unmet(d.requirements, cands) is None and mode == "oracle":
                raise AssertionError("the oracle queues anywhere a peer can run the task")
        fresh = [c for c in cands if meets(c, d.requirements) and c.peer not in d.avoid]
        if p.peers and fresh and set(p.peers) & d.avoid and len(cands) > 1 and mode != "oracle":
            assert all(use[c.peer] >= c.free_slots + cfg.max_queued for c in fresh)
        use.update(p.peers)
    if mode != "oracle" and len(cands) > 1:
        assert all(use[c.peer] <= c.free_slots + cfg.max_queued for c in cands)


def test_unmet_plan_names_each_stage_no_known_peer_can_run():
    from sm_harness import plan, task
    p = plan(task("a"), task("b", req=Requirements(arch="arm64")), task("c", req=Requirements(arch="arm64")),
             task("d", req=Requirements(wasm=True)))
    cands = peers(12, wasm=False)
    assert unmet_plan(p, cands) == ["stage s: no peer offers arch=arm64: 12 peers known",
                                    "stage s: no peer offers wasm: 12 peers known"]
    assert unmet_plan(p, peers(3) + [Candidate("pi", 1, 4, 8 * GiB, "arm64")]) == []


def test_reservations_still_outstanding_from_earlier_batches_count_against_a_peers_budget():
    pl = Placement(random.Random(3), PlacementConfig(max_queued=1))
    cands = peers(3, slots=1)                         # budget: 1 free slot + 1 queued = 2 reservations each
    assert pl.room(cands) == 6
    first = pl.place([dispatch(f"a{i}") for i in range(3)], cands)
    held = Counter(p for x in first for p in x.peers)
    assert sum(held.values()) == 6 and pl.room(cands, held) == 0
    # a later batch sees those offers still unanswered: no peer has room, however many batches come
    second = pl.place([dispatch("b0"), dispatch("b1")], cands, reserved=held)
    assert [x.peers for x in second] == [(), ()] and "busy" in second[0].reason
    # one peer answered its two offers: that room, and only it, is used
    held["p1"] = 0
    assert pl.room(cands, held) == 2
    third = pl.place([dispatch("c0"), dispatch("c1")], cands, reserved=held)
    assert {p for x in third for p in x.peers} == {"p1"}
    assert sum(len(x.peers) for x in third) == 2


def test_room_is_unbounded_for_the_oracle_and_a_lone_peer_keeps_its_budget():
    assert Placement(random.Random(0), PlacementConfig(mode="oracle")).room(peers(3), {"p0": 9}) >= 1 << 20
    lone = peers(1, slots=1)                          # budget: 1 free slot + 2 queued
    pl = Placement(random.Random(0))
    assert pl.room(lone) == 3 and pl.room(lone, {"p0": 50}) == 0


def test_a_lone_peer_is_offered_no_more_than_its_budget_however_many_tasks_wait():
    """Offers beyond what its executor queues would be declined and offered again, round after round (a lone
    daemon with one slot declined 17,371 offers for a 200-task job): the rest wait for room."""
    lone = peers(1, slots=1)
    placed = Placement(random.Random(0)).place([dispatch(f"t{i}") for i in range(50)], lone)
    assert sum(1 for p in placed if p.peers == ("p0",)) == 3
    assert all("busy" in p.reason for p in placed if not p.peers)


def _holder_scene(holder_free: int, others_free: int, n: int = 20):
    """p0 holds every task's input (100 MB); it and the n-1 others have the free slots given."""
    cands = [Candidate("p0", holder_free, 4, 8 * GiB, "x86_64", load=1.0 if holder_free == 0 else 0.5)]
    cands += [Candidate(f"p{i}", others_free, 4, 8 * GiB, "x86_64", load=1.0 if others_free == 0 else 0.25)
              for i in range(1, n)]
    return cands, {"cid": ["p0"]}


def _task(i: int):
    return dispatch(f"t{i}", inputs=[("x", "cid", 100 << 20)])


def test_a_holder_with_a_free_slot_is_offered_the_task_alone():
    cands, providers = _holder_scene(holder_free=2, others_free=4)
    placed = Placement(random.Random(1)).place([_task(0), _task(1)], cands, providers)
    assert [p.peers for p in placed] == [("p0",), ("p0",)]


def test_a_busy_holder_is_passed_over_while_a_probed_peer_has_a_free_slot():
    """The holder's slots are taken (by its record, or by this batch's first two tasks): the next tasks
    go to probed peers with free slots too, instead of only queueing at the holder."""
    cands, providers = _holder_scene(holder_free=2, others_free=4)
    placed = Placement(random.Random(2)).place([_task(i) for i in range(6)], cands, providers)
    assert [p.peers for p in placed[:2]] == [("p0",), ("p0",)]
    free = {c.peer for c in cands if c.free_slots and c.peer != "p0"}
    assert all(set(p.peers) & free for p in placed[2:]), placed
    cands, providers = _holder_scene(holder_free=0, others_free=4)
    for seed in range(20):
        p = Placement(random.Random(seed)).place([_task(0)], cands, providers)[0]
        assert len(p.peers) == 2 and set(p.peers) & free
    # the old rule (busy holders wait): the holder alone, while it has room for a reservation
    old = PlacementConfig(busy_holders_move=False)
    p = Placement(random.Random(3), old).place([_task(0)], cands, providers)[0]
    assert p.peers == ("p0",)


def test_with_every_probed_peer_busy_a_task_waits_at_its_busy_holder():
    """A saturated network: moving the input gains nothing, so the task is reserved at its holder only."""
    cands, providers = _holder_scene(holder_free=0, others_free=0)
    placed = Placement(random.Random(4)).place([_task(0), _task(1)], cands, providers)
    assert [p.peers for p in placed] == [("p0",), ("p0",)]        # max_queued (2) reservations beyond its slots
    third = Placement(random.Random(4)).place([_task(i) for i in range(3)], cands, providers)[2]
    assert third.peers and "p0" not in third.peers                  # its queue is full: elsewhere


def test_the_oracle_starts_a_task_at_a_free_holder_rather_than_moving_its_input():
    cands = [Candidate("holder", 1, 4, 8 * GiB, "x86_64", queue=0), Candidate("idle", 4, 4, 8 * GiB, "x86_64")]
    placed = Placement(random.Random(0), PlacementConfig(mode="oracle")).place(
        [_task(0), _task(1)], cands, {"cid": ["holder"]})
    assert [p.peers for p in placed] == [("holder",), ("idle",)]    # then the holder has no slot left
