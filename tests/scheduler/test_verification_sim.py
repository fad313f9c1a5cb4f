"""``simulate jobs --malicious``: the real JobState verifying results on memnet, with lying executors (seeded)."""

from __future__ import annotations

import pytest

from p2pcompute.simulations.jobs import JobsScenario, run_jobs


def sim(malicious, attack, strategy, seed=5, peers=30, jobs=60):
    report, _ = run_jobs(JobsScenario(peers=peers, jobs=jobs, seed=seed, malicious=malicious, attack=attack,
                                      verification=strategy, load=0.1))
    return report


def test_ten_percent_colluding_liars_under_replicate_no_wrong_result_and_liars_banned():
    # seeded: replicate(3, 2) cannot tell three colluders agreeing from the truth; at 10% that is rare, and a
    # later ban retracts what rests on them while the job runs. Liars that never agree are always caught (below).
    r = sim(0.1, "collude", "replicate(3, agree=2)")
    assert r["succeeded"] == r["jobs"] and r["tasks_lost"] == 0
    assert r["wrong_results_accepted"] == 0 and r["jobs_with_wrong_result"] == 0
    assert r["honest_banned"] == 0 and r["malicious_banned"] >= 1
    assert r["duplicate_results_accepted"] == 0 and r["executions_per_task"] >= 3


def test_without_verification_the_liars_get_through():
    r = sim(0.1, "collude", "none")
    assert r["wrong_results_accepted"] > 0 and r["malicious_banned"] == 0


def test_49_percent_liars_that_do_not_agree_never_get_a_wrong_result_through():
    r = sim(0.49, "wrong", "replicate(3, agree=2)")
    assert r["wrong_results_accepted"] == 0 and r["honest_banned"] == 0
    assert r["succeeded"] == r["jobs"]


@pytest.mark.parametrize("attack", ["collude", "copy"])
def test_49_percent_colluding_liars_ban_no_honest_peer(attack):
    r = sim(0.49, attack, "replicate(3, agree=2)")
    assert r["honest_banned"] == 0 and r["malicious_banned"] >= r["malicious_peers"] // 2
    assert r["succeeded"] >= 0.99 * r["jobs"]


def test_float_noise_under_a_tolerance_bans_liars_and_no_honest_peer():
    report, _ = run_jobs(JobsScenario(peers=30, jobs=60, seed=5, malicious=0.1, attack="wrong", load=0.1,
                                      verification="replicate(3, agree=2, rtol=1e-06)", float_noise=True))
    assert report["succeeded"] == report["jobs"] and report["wrong_results_accepted"] == 0
    assert report["honest_banned"] == 0 and report["malicious_banned"] >= 1


def test_float_noise_under_exact_replication_bans_no_honest_peer():
    report, _ = run_jobs(JobsScenario(peers=30, jobs=30, seed=5, malicious=0.0, load=0.1,
                                      verification="replicate(3, agree=2)", float_noise=True))
    assert report["honest_banned"] == 0


# --- the seeded 100-peer simulations: 10% (every attack) and 49% colluding, zero wrong results ----

def sim100(malicious, attack, strategy, jobs=60, seed=3):
    report, _ = run_jobs(JobsScenario(peers=100, jobs=jobs, seed=seed, malicious=malicious, attack=attack,
                                      verification=strategy, load=0.3))
    return report


@pytest.mark.parametrize("attack", ["wrong", "collude", "lazy", "sometimes", "copy"])
def test_100_peers_10_percent_liars_of_every_kind_under_adaptive_take_no_wrong_result(attack):
    r = sim100(0.1, attack, "adaptive")
    assert r["malicious_peers"] >= 10
    assert r["wrong_results_accepted"] == 0 and r["jobs_with_wrong_result"] == 0
    assert r["succeeded"] == r["jobs"] and r["honest_banned"] == 0
    assert r["executions_per_task"] <= 2.2                    # before vetting: each result and an anchor's


@pytest.mark.parametrize("strategy", ["adaptive", "replicate(2, agree=2, anchor=1)"])
def test_100_peers_49_percent_colluding_under_an_anchored_strategy_take_no_wrong_result(strategy):
    r = sim100(0.49, "collude", strategy)
    assert r["malicious_peers"] >= 49
    assert r["wrong_results_accepted"] == 0 and r["jobs_with_wrong_result"] == 0
    assert r["succeeded"] >= 0.99 * r["jobs"] and r["honest_banned"] == 0
    assert r["malicious_banned"] >= r["malicious_peers"] // 2          # caught by the submitters' re-executions


def test_100_peers_49_percent_colluding_get_wrong_results_through_plain_agreement():
    r = sim100(0.49, "collude", "replicate(2, agree=2)")      # the same run without the anchor: what it prevents
    assert r["wrong_results_accepted"] > 0


@pytest.mark.parametrize("strategy", ["adaptive(rtol=1e-06)"])
def test_100_peers_float_noise_under_adaptive_bans_no_honest_peer(strategy):
    report, _ = run_jobs(JobsScenario(peers=100, jobs=40, seed=3, malicious=0.1, attack="collude", load=0.3,
                                      verification=strategy, float_noise=True))
    assert report["honest_banned"] == 0 and report["wrong_results_accepted"] == 0
    assert report["succeeded"] == report["jobs"]
    if "rtol" in strategy:
        assert report["malicious_banned"] >= 1                       # a tolerance still proves the liars wrong
