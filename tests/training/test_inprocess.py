"""The coordinator driven in-process with the reference trainer's numeric work, on digits:
sync and local modes reach the same accuracy, local with >= 10x fewer bytes; a peer lost in every round
changes nothing; 20% byzantine peers sink the mean but not the median."""

from __future__ import annotations

import pytest

from p2pcompute.training import data
from p2pcompute.training.coordinator import TrainConfig
from p2pcompute.training.inprocess import RunConfig, run


@pytest.fixture(scope="module")
def split():
    return data.digits(seed=0)


def test_sync_and_local_modes_reach_95_percent_and_local_moves_10x_fewer_bytes(split):
    sync = run(RunConfig(TrainConfig("sync", shards=4, rounds=100)), split)
    local = run(RunConfig(TrainConfig("local", shards=4, rounds=8, local_steps=20)), split)
    assert sync.test_accuracy >= 0.95 and local.test_accuracy >= 0.95
    assert sync.bytes_to_target and local.bytes_to_target
    assert sync.bytes_to_target >= 10 * local.bytes_to_target
    assert sync.rounds == 100 and local.rounds == 8 and sync.stats["refused"] == 0


def test_a_peer_killed_mid_round_in_every_round_changes_nothing(split):
    clean = run(RunConfig(TrainConfig("sync", shards=4, rounds=10)), split)
    faulty = run(RunConfig(TrainConfig("sync", shards=4, rounds=10), kill_per_round=1), split)
    assert faulty.rounds == 10 and faulty.kills == 10 and faulty.stats["reassigned"] >= 5
    # shards and minibatches are fixed by (shard, round), not by who computes them: same model
    assert faulty.test_accuracy == clean.test_accuracy and [c[2] for c in faulty.curve] == [c[2] for c in clean.curve]
    assert faulty.bytes_moved > clean.bytes_moved  # the reassigned shards shipped parameters again


def test_async_mode_trains_and_counts_staleness(split):
    rep = run(RunConfig(TrainConfig("async", shards=4, rounds=40, staleness_bound=2), peers=4), split)
    assert rep.rounds == 40 and rep.stats["applied"] == 160 and rep.test_accuracy >= 0.8


def test_twenty_percent_sign_flippers_sink_the_mean_but_not_the_median(split):
    cfg = TrainConfig("sync", shards=5, rounds=60)
    mean = run(RunConfig(cfg, peers=5, byzantine=1, attack="sign_flip", rule="mean"), split)
    med = run(RunConfig(cfg, peers=5, byzantine=1, attack="sign_flip", rule="median"), split)
    assert mean.test_accuracy < 0.5 and med.test_accuracy >= 0.9


def test_one_shard_over_the_coordinator_is_the_reference_trainer_bit_for_bit(split):
    import numpy as np

    from p2pcompute.training import reference

    model = RunConfig(TrainConfig()).model
    ref = reference.train(model, split, epochs=1, batch=32, lr=0.1, momentum=0.9, seed=3)
    for kills in (0, 1):  # a peer lost in every round: the shard is recomputed elsewhere, same numbers
        rep = run(RunConfig(TrainConfig("sync", shards=1, rounds=ref.steps), peers=3, batch=32, lr=0.1,
                            momentum=0.9, kill_per_round=kills, seed=3), split)
        assert rep.kills == kills * ref.steps
        assert all(np.array_equal(rep.params[n], ref.params[n]) for n in ref.params)
        assert rep.test_accuracy == ref.test_accuracy
