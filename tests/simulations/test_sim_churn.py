"""Seeded churn simulations of the real membership and DHT code (discrete events, no trio)."""

from __future__ import annotations

import json

import pytest

from p2pcompute.cli.main import main
from p2pcompute.simulations.churn import ChurnRun, Scenario
from p2pcompute.simulations.report import PLOTS, write_report

REPORT_KEYS = {
    "peers", "virtual_seconds", "wall_seconds", "detection_s", "false_positive_deaths", "dissemination_99_s",
    "lookup_success", "lookup_hops_median", "provider_lookup_success", "msgs_per_peer_s", "bytes_per_peer_s", "seed",
}


def _without_timing(report: dict) -> dict:
    return {k: v for k, v in report.items() if k not in ("wall_seconds", "cpu_seconds")}


def test_two_hundred_peers_under_churn_and_loss():
    """200 peers, 1% loss, 20-120 ms, 10% replaced every 40 s (fifteen times the issue's rate)."""
    scenario = Scenario(peers=200, duration=25.0, churn_period=40.0, seed=11, settle=10.0,
                        lookups_per_s=4.0, provider_lookups_per_s=2.0)
    run = ChurnRun(scenario)
    report = run.run()
    print("\n200-peer churn report:", json.dumps(_without_timing(report), sort_keys=True))
    assert REPORT_KEYS <= set(report)
    # nobody alive is ever declared dead, nor even suspected
    assert report["false_positive_deaths"] == 0
    assert report["false_death_observations"] == 0
    # every crash is detected by every live peer, quickly
    det = report["detection_s"]
    assert det["count"] >= 8 and det["undetected"] == 0
    assert det["median"] <= 6.0 and det["p99"] <= 12.0
    # joins and capability changes reach 99% of the peers fast
    assert report["dissemination"]["updates"] >= 25 and report["dissemination"]["unreached"] == 0
    assert report["dissemination_99_s"] <= 1.5
    # lookups find the true k closest live peers (or the target peer); providers are found
    assert report["lookups"]["count"] >= 90
    assert report["lookup_success"] >= 0.999
    assert report["lookup_hops_median"] <= 4
    assert report["provider_lookups"]["count"] >= 45
    assert report["provider_lookup_success"] >= 0.999
    # every peer ends up seeing (almost) every live peer
    t, live, mean_seen, low, high = run.series()["members_seen"][-1]
    assert live == 200 and mean_seen >= 0.97 * live and low >= 0.9 * live
    assert 0 < report["gossip_msgs_per_peer_s"] < 20 and report["bytes_per_peer_s"] > 0


def _small(seed: int) -> tuple[dict, ChurnRun]:
    scenario = Scenario(peers=24, duration=20.0, churn_period=20.0, seed=seed, settle=8.0,
                        lookups_per_s=2.0, provider_lookups_per_s=1.0, provider_keys=8, join_wave=True)
    run = ChurnRun(scenario)
    return run.run(), run


def test_a_seed_replays_exactly_and_another_seed_differs(tmp_path):
    first, run = _small(5)
    again, run_again = _small(5)
    other, _ = _small(6)
    assert _without_timing(first) == _without_timing(again)
    assert run.series() == run_again.series()
    assert _without_timing(first) != _without_timing(other)
    assert first["detection_s"]["count"] >= 1 and first["false_positive_deaths"] == 0
    # the report and its plots
    files = write_report(tmp_path / "out", first, run.series())
    assert {f.name for f in files} == {"report.json", *PLOTS}
    assert json.loads((tmp_path / "out" / "report.json").read_text()) == json.loads(json.dumps(first))
    for name in PLOTS:
        assert (tmp_path / "out" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_simulate_command_writes_the_report(tmp_path, capsys):
    out = tmp_path / "sim"
    code = main(["simulate", "churn", "--peers", "16", "--duration", "10s", "--churn", "10%/10s",
                 "--loss", "1%", "--latency", "20-120ms", "--seed", "9", "--out", str(out), "--json"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((out / "report.json").read_text())
    assert printed == saved and saved["seed"] == 9 and saved["peers"] == 16
    assert REPORT_KEYS <= set(saved)
    assert all((out / name).exists() for name in PLOTS)


def test_simulate_command_explains_bad_values(tmp_path, capsys):
    for flag, value, words in [("--churn", "10%", "FRACTION/PERIOD"), ("--duration", "1 fortnight", "duration"),
                               ("--latency", "fast", "latency"), ("--loss", "2", "loss")]:
        code = main(["simulate", "churn", "--peers", "10", flag, value, "--out", str(tmp_path)])
        assert code == 1
        assert words in capsys.readouterr().err


@pytest.mark.slow
def test_thousand_peers_ten_virtual_minutes():
    report, _ = ChurnRun(Scenario(peers=1000, duration=600.0, seed=7)).run(), None
    print("\n1000-peer churn report:", json.dumps(_without_timing(report), sort_keys=True))
    assert report["false_positive_deaths"] == 0
    assert report["detection_s"]["median"] <= 6.0 and report["detection_s"]["p99"] <= 12.0
    assert report["dissemination_99_s"] <= 1.5
    assert report["lookup_success"] >= 0.999 and report["lookup_hops_median"] <= 4
    assert report["provider_lookup_success"] >= 0.999
