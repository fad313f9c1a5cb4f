"""Seeded job simulations: the real scheduler state machines on a churning simulated cluster."""

from __future__ import annotations

import json

import pytest

from p2pcompute.cli.main import main
from p2pcompute.simulations.jobs import JobsRun, JobsScenario, workload
from p2pcompute.simulations.jobs_report import JOB_PLOTS

REPORT_KEYS = {"peers", "jobs", "succeeded", "failed", "failure_reasons", "job_latency_s", "locality_share",
               "msgs_per_job", "tasks_lost", "duplicate_results_accepted", "wall_seconds", "seed", "placement"}


def _without_timing(report: dict) -> dict:
    return {k: v for k, v in report.items() if k not in ("wall_seconds", "cpu_seconds")}


def _churned(seed: int) -> tuple[dict, JobsRun]:
    """30 peers, 300 jobs of 4 files + a combine at 80% load; 10% of the peers replaced every minute
    (ten times the issue's rate), 1% loss, 0.1% of scheduler messages dropped, 1% of runs crashing."""
    run = JobsRun(JobsScenario(peers=30, jobs=300, churn_period=60.0, seed=seed, attempt_fail=0.01))
    return run.run(), run


def test_a_churned_run_ends_every_job_and_replays_exactly():
    report, run = _churned(4)
    print("\n30-peer jobs report:", json.dumps(_without_timing(report), sort_keys=True))
    assert REPORT_KEYS <= set(report)
    assert report["succeeded"] + report["failed"] == report["jobs"] == 300
    assert report["tasks_lost"] == 0 and report["unfinished_jobs"] == 0
    assert report["duplicate_results_accepted"] == 0
    assert report["repeated_final_reports"] == 0             # one coordinator line per job told the submitter
    assert sum(report["failure_reasons"].values()) == report["failed"]
    assert all(reason for reason in report["failure_reasons"])
    assert report["succeeded"] >= 297
    # the churn did hit running work and coordinators, and replicas took over
    assert report["churn"]["crashes"] >= 5 and report["runs_lost_in_crashes"] > 0
    assert report["takeovers"] >= 1
    assert report["locality_share"] >= 0.6     # one copy per file; at 80% load busy holders are passed over
    assert report["job_latency_s"]["median"] < report["job_latency_s"]["p99"]
    assert not report["refused"]                             # well-behaved peers are never refused
    again, _ = _churned(4)
    assert _without_timing(again) == _without_timing(report)
    assert json.dumps(_without_timing(again), sort_keys=True) == json.dumps(_without_timing(report), sort_keys=True)
    other, _ = _churned(5)
    assert _without_timing(other) != _without_timing(report)


def test_killing_the_coordinators_every_job_still_completes():
    """The coordinator of every job is crashed once while the job runs (never leaving a running job's record
    with fewer than 2 live holders); every job completes, none twice, and the run replays exactly."""
    def run() -> dict:
        return JobsRun(JobsScenario(peers=30, jobs=40, seed=3, files_per_job=2, kill_coordinators=True,
                                    task_s=30.0, load=0.2)).run()
    report = run()
    print("\nkill-coordinators report:", json.dumps(_without_timing(report), sort_keys=True))
    assert report["jobs_killed"] == report["jobs"] == 40
    assert report["killed_jobs_succeeded"] == report["succeeded"] == 40
    # one crash reaches every job its peer coordinates; a peer that took a killed job over may be hit again
    assert report["coordinators_killed"] >= 30 and report["takeovers"] >= report["coordinators_killed"]
    assert report["tasks_lost"] == 0 and report["duplicate_results_accepted"] == 0
    assert report["repeated_final_reports"] == 0
    assert _without_timing(run()) == _without_timing(report)


def test_two_replicas_that_both_take_over_never_run_a_job_to_its_end_twice():
    """Two holders of one job's record may both come to take it over (a peer that joined lately does not know
    the other is alive; a later replica's turn comes after the first already took over, ended the job and
    left it forgotten). Before it takes over, a holder asks the others for a newer line (seeds 5 and 15: a
    takeover averted); a lower line that did take over is fenced off. Seed 10 ran job000004 to its end twice
    before the question was asked (the later replica held the epoch-2 record of a job done by epoch 3)."""
    guarded = 0
    for seed in (5, 10, 15):
        report = JobsRun(JobsScenario(peers=30, jobs=60, seed=seed, files_per_job=2, kill_coordinators=True,
                                      task_s=30.0, load=0.4)).run()
        assert report["succeeded"] == 60 and report["jobs_killed"] >= 59, (seed, report)
        assert report["repeated_final_reports"] == 0 and report["duplicate_results_accepted"] == 0, seed
        guarded += report["fenced_coordinators"] + report["takeovers_averted"]
    assert guarded >= 1


def test_every_placement_mode_gets_the_same_jobs_and_completes_them():
    base = JobsScenario(peers=12, jobs=40, seed=8, files_per_job=2, churn_fraction=0.0)
    jobs = [(j.plan, j.submit_at, j.durations) for j in workload(base)]
    for mode in ("random", "oracle"):
        s = JobsScenario(peers=12, jobs=40, seed=8, files_per_job=2, churn_fraction=0.0, placement=mode)
        assert [(j.plan, j.submit_at, j.durations) for j in workload(s)] == jobs
        report = JobsRun(s).run()
        assert report["placement"] == mode
        assert report["succeeded"] == 40 and report["tasks_lost"] == 0


def test_simulate_jobs_command_writes_the_report(tmp_path, capsys):
    out = tmp_path / "sim"
    code = main(["simulate", "jobs", "--peers", "12", "--jobs", "20", "--churn", "10%/1min", "--files-per-job", "2",
                 "--load", "0.5", "--placement", "sparrow", "--seed", "9", "--out", str(out), "--json"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((out / "report.json").read_text())
    assert printed == saved and saved["seed"] == 9 and saved["peers"] == 12 and saved["jobs"] == 20
    assert REPORT_KEYS <= set(saved)
    for name in JOB_PLOTS:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_simulate_jobs_explains_bad_values(tmp_path, capsys):
    for flag, value, words in [("--churn", "10%", "FRACTION/PERIOD"), ("--load", "0", "--load"),
                               ("--jobs", "0", "--jobs"), ("--kill-max-per-job", "0", "--kill-max-per-job")]:
        code = main(["simulate", "jobs", "--peers", "10", "--kill-coordinators", flag, value, "--out", str(tmp_path)])
        assert code == 1
        assert words in capsys.readouterr().err


def test_the_report_is_byte_identical_across_processes(tmp_path):
    """Another process with another hash seed (set iteration order) writes the same report.json bytes."""
    import os
    import subprocess
    import sys

    texts = []
    for hash_seed in ("1", "2"):
        out = tmp_path / f"run{hash_seed}"
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        subprocess.run([sys.executable, "-m", "p2pcompute", "simulate", "jobs", "--peers", "16", "--jobs", "40",
                        "--churn", "10%/30s", "--files-per-job", "3", "--seed", "21", "--out", str(out), "--json"],
                       env=env, check=True, capture_output=True, timeout=300)
        report = json.loads((out / "report.json").read_text())
        assert report["churn"]["crashes"] >= 1 and report["tasks_lost"] == 0
        texts.append(json.dumps(_without_timing(report), indent=2, sort_keys=True))
    assert texts[0] == texts[1]


def test_a_replica_holding_a_newer_line_fences_the_old_coordinator_off():
    """A coordinator that was replaced (declared dead while alive) hears of the newer epoch from a replica's
    ack, drops the job and reports nothing; the replica keeps the newer record."""
    import copy

    run = JobsRun(JobsScenario(peers=6, jobs=1, churn_fraction=0.0, files_per_job=2, task_s=200.0, drop=0.0))
    job = run.jobs[0].plan.job_id
    run.engine.run_until(run.jobs[0].submit_at + 5.0)
    coordinator = next(sp for sp in run.sched.values() if job in sp.jobs)
    replicas = [sp for sp in run.sched.values() if job in sp.held]
    assert len(replicas) == 3 and coordinator not in replicas
    newer = copy.deepcopy(replicas[0].held[job].record)
    newer["epoch"] += 1
    replicas[0].held[job].record = newer
    coordinator._flush(job, None)                     # its next update reaches the replica holding the newer line
    run.engine.run_until(run.now + 2.0)
    assert job not in coordinator.jobs and run.fenced_coordinators == 1
    assert replicas[0].held[job].record["epoch"] == newer["epoch"]
    assert run.jobs[0].outcome is None                # the old coordinator told the submitter nothing


def test_a_hundred_peers_run_two_hundred_jobs_under_churn():
    """The issue's default-suite simulation: 100 peers, 10% replaced every two minutes (five times the rate)."""
    report = JobsRun(JobsScenario(peers=100, jobs=200, churn_period=120.0, seed=13)).run()
    print("\n100-peer jobs report:", json.dumps(_without_timing(report), sort_keys=True))
    assert report["succeeded"] == 200 and report["tasks_lost"] == 0
    assert report["duplicate_results_accepted"] == 0 and report["repeated_final_reports"] == 0
    assert report["churn"]["crashes"] >= 2
    assert report["locality_share"] >= 0.6     # one copy per file; at 80% load busy holders are passed over


@pytest.mark.slow
def test_placement_at_80_percent_load_against_the_oracle_and_random():
    """100 peers, 1000 jobs, the same workload for each mode (about 10 s of wall time each on an idle
    machine). Measured (seeds 11, 12, 13): sparrow 1.08-1.11x the oracle's median, locality 0.72-0.73;
    with busy holders waiting for a slot (the rule before) 1.27-1.33x, locality 0.996; offering anywhere
    1.04-1.08x, locality 0.49-0.50; random 1.7-1.9x."""
    runs = {}
    for name, kw in (("oracle", {"placement": "oracle"}), ("random", {"placement": "random"}),
                     ("sparrow", {}), ("busy_holders_wait", {"busy_holders_move": False}),
                     ("sparrow_anywhere", {"holders_only_share": 2.0})):
        report = JobsRun(JobsScenario(peers=100, jobs=1000, seed=11, **kw)).run()
        print(f"\n{name}:", json.dumps(_without_timing(report), sort_keys=True))
        assert report["succeeded"] == 1000 and report["tasks_lost"] == 0
        runs[name] = report
    median = {name: r["job_latency_s"]["median"] for name, r in runs.items()}
    locality = {name: r["locality_share"] for name, r in runs.items()}
    assert median["oracle"] <= median["sparrow"] <= 1.12 * median["oracle"]               # Sparrow's 12%
    assert median["sparrow"] < median["busy_holders_wait"] and median["random"] >= 1.4 * median["oracle"]
    assert locality["busy_holders_wait"] >= 0.99 and locality["sparrow"] >= locality["sparrow_anywhere"] + 0.15
