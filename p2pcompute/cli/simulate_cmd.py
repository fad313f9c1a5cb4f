"""``simulate churn`` and ``simulate jobs``: the real gossip, DHT and scheduler code on a simulated network."""

from __future__ import annotations

import argparse
import os
import re
import time

from ..errors import UserError
from .output import add_json_flag, console, print_json

_UNITS = {"ms": 0.001, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_NUM = r"(\d+(?:\.\d+)?)"

EPILOG = """\
formats: durations 30s, 10min, 1h (a bare number is seconds); churn FRACTION/PERIOD
such as 10%/10min or 0.1/600s (0 turns churn off); latency LOW-HIGHms such as
20-120ms, or one value; loss a probability (0.01) or a percentage (1%).
Writes DIR/report.json and DIR/{members_seen,detection,lookup_hops}.png.
The same --seed replays the same run exactly (except wall time).
"""

# the wall-time targets, per virtual hour: 1000 peers, an hour in 5 minutes;
# 10,000 peers, 10 virtual minutes in 30 minutes
WALL_PER_VIRTUAL_HOUR = {1000: 300.0, 10_000: 10_800.0}

# (report key, label, target text, check) for the summary table
TARGETS = [
    ("detection_s.median", "detection median (s)", "≤ 6", lambda v: v is not None and v <= 6.0),
    ("detection_s.p99", "detection p99 (s)", "≤ 12", lambda v: v is not None and v <= 12.0),
    ("false_positive_deaths", "live peers declared dead", "0", lambda v: v == 0),
    ("dissemination_99_s", "update to 99% of peers, p99 (s)", "≤ 1.5", lambda v: v is not None and v <= 1.5),
    ("lookup_success", "lookup success", "≥ 0.999", lambda v: v is not None and v >= 0.999),
    ("lookup_hops_median", "lookup hops, median", "≤ 4", lambda v: v is not None and v <= 4),
    ("provider_lookup_success", "provider lookup success", "≥ 0.999", lambda v: v is not None and v >= 0.999),
    ("gossip_msgs_per_peer_s", "gossip msgs / peer / s", "≤ 6", lambda v: v is not None and v <= 6.0),
    ("msgs_per_peer_s", "all msgs / peer / s", "", None),
    ("bytes_per_peer_s", "bytes / peer / s", "", None),
    ("wall_seconds", "wall seconds", "", None),
]


def parse_duration(text: str) -> float:
    """``30s``, ``10min``, ``1h``, ``250ms`` or a bare number of seconds."""
    m = re.fullmatch(_NUM + r"\s*([a-z]*)", text.strip().lower())
    if not m or m.group(2) not in ("", *_UNITS):
        raise UserError(f"bad duration {text!r}: write e.g. 30s, 10min or 1h")
    value = float(m.group(1)) * _UNITS.get(m.group(2), 1.0)
    if value <= 0:
        raise UserError(f"duration {text!r} must be positive")
    return value


def parse_fraction(text: str, what: str) -> float:
    """``1%`` or ``0.01``: a number in 0..1."""
    t = text.strip()
    try:
        value = float(t[:-1]) / 100.0 if t.endswith("%") else float(t)
    except ValueError:
        raise UserError(f"bad {what} {text!r}: write a fraction (0.01) or a percentage (1%)") from None
    if not 0.0 <= value <= 1.0:
        raise UserError(f"{what} {text!r} must be between 0 and 1 (0% and 100%)")
    return value


def parse_churn(text: str) -> tuple[float, float]:
    """``10%/10min`` -> (0.1, 600.0); ``0`` -> no churn."""
    if text.strip() in ("0", "0%", "none", "off"):
        return 0.0, 600.0
    parts = text.split("/")
    if len(parts) != 2:
        raise UserError(f"bad churn {text!r}: write FRACTION/PERIOD, e.g. 10%/10min (or 0 for none)")
    return parse_fraction(parts[0], "churn fraction"), parse_duration(parts[1])


def parse_latency(text: str) -> tuple[float, float]:
    """``20-120ms`` -> (0.02, 0.12); ``50ms`` -> (0.05, 0.05); units as durations (default ms)."""
    m = re.fullmatch(_NUM + r"\s*(?:-\s*" + _NUM + r")?\s*([a-z]*)", text.strip().lower())
    if not m or m.group(3) not in ("", *_UNITS):
        raise UserError(f"bad latency {text!r}: write LOW-HIGH with a unit, e.g. 20-120ms")
    unit = _UNITS.get(m.group(3) or "ms", 0.001)
    low = float(m.group(1)) * unit
    high = float(m.group(2)) * unit if m.group(2) else low
    if high < low:
        raise UserError(f"latency {text!r}: the low end must not exceed the high end")
    if high > 10.0:
        raise UserError(f"latency {text!r} is over 10 s per message; did you mean ms?")
    return low, high


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="run scenario simulations of the real protocols in virtual time",
                       description="Run the real membership and DHT code on a simulated network.")
    psub = p.add_subparsers(dest="scenario", metavar="SCENARIO")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    c = psub.add_parser("churn", help="peers replaced at a steady rate; failure detection, dissemination, lookups",
                        description="Simulate N peers (SWIM+Lifeguard membership and Kademlia) while a share "
                        "of them is replaced every period (silent crash, fresh peer joins); measure failure "
                        "detection, false positives, dissemination, lookups and traffic.",
                        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--peers", type=int, default=1000, help="number of peers (default 1000)")
    c.add_argument("--duration", default="1h", help="measured virtual time after the warm-up (default 1h)")
    c.add_argument("--churn", default="10%/10min", help="FRACTION/PERIOD of peers replaced (default 10%%/10min)")
    c.add_argument("--loss", default="0.01", help="message loss probability per link (default 0.01)")
    c.add_argument("--latency", default="20-120ms", help="one-way latency range (default 20-120ms)")
    c.add_argument("--seed", type=int, help="random seed (default: a fresh one, printed)")
    c.add_argument("--out", metavar="DIR", default="sim-churn", help="output directory (default ./sim-churn)")
    c.add_argument("--lookups-per-s", type=float, default=1.0, help="measured FIND_NODE lookups per second")
    c.add_argument("--capability-updates-per-s", type=float, default=1.0,
                   help="new capability records published per second, network-wide (default 1)")
    c.add_argument("--join-wave", action="store_true",
                   help="start with every peer joining one by one (costs O(N^2) merges) instead of a network "
                   "that has already converged")
    add_json_flag(c)
    c.set_defaults(func=cmd_churn)
    j = psub.add_parser("jobs", help="jobs submitted to a churning network: the real scheduler, placement, leases",
                        description="Simulate N peers (membership and DHT as in 'simulate churn') running the "
                        "real scheduler state machines: jobs arrive at a steady rate, peers are replaced, "
                        "replicas take over from dead coordinators; measure success, latency, locality and "
                        "messages. Executors take each task's duration from the scenario.",
                        epilog=JOBS_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    j.add_argument("--peers", type=int, default=100, help="number of peers (default 100)")
    j.add_argument("--jobs", type=int, default=10_000, help="number of jobs (default 10000)")
    j.add_argument("--churn", default="10%/10min", help="FRACTION/PERIOD of peers replaced (default 10%%/10min)")
    j.add_argument("--files-per-job", type=int, default=4,
                   help="input files per job: one map task each, then a combine task (default 4)")
    j.add_argument("--kill-coordinators", action="store_true",
                   help="crash the coordinator of every running job once (replaced by a fresh peer), the peer "
                        "coordinating the oldest such job first, never leaving a running job's record with fewer "
                        "than 2 live holders; report.json says how many jobs were hit (jobs_killed) and completed "
                        "(killed_jobs_succeeded)")
    j.add_argument("--kill-max-per-job", type=int, default=20,
                   help="with --kill-coordinators: a peer coordinating a job whose coordinator was killed this often "
                        "is spared (default 20; more reaches more jobs, and makes them slower)")
    j.add_argument("--kill-every", default="250ms",
                   help="with --kill-coordinators: at most one coordinator crashed this often (default 250ms)")
    j.add_argument("--load", type=float, default=0.8, help="offered load, a share of all task slots (default 0.8)")
    j.add_argument("--placement", choices=("sparrow", "random", "oracle"), default="sparrow",
                   help="sparrow (default), random, or oracle (an omniscient scheduler, for comparison)")
    j.add_argument("--task-seconds", type=float, default=10.0, help="mean duration of a map task (default 10)")
    j.add_argument("--loss", default="0.01", help="message loss probability per link (default 0.01)")
    j.add_argument("--latency", default="20-120ms", help="one-way latency range (default 20-120ms)")
    j.add_argument("--seed", type=int, help="random seed (default: a fresh one, printed)")
    j.add_argument("--out", metavar="DIR", default="sim-jobs", help="output directory (default ./sim-jobs)")
    j.add_argument("--malicious", type=float, default=0.0,
                   help="share of peers that lie about results (default 0; see --attack)")
    j.add_argument("--attack", choices=("wrong", "collude", "copy", "lazy", "sometimes", "rare"), default="wrong",
                   help="how malicious peers lie: wrong (each its own wrong CID), collude (all the same wrong CID), "
                        "copy (the same task's output of another job), lazy (claim a made-up CID, all the same, "
                        "that nobody can fetch), sometimes (collude on 5%% of tasks, honest otherwise; rare is "
                        "another name for it)")
    j.add_argument("--strategy", "--verification", dest="verification", default="none",
                   help="every job's verification, as in job.yaml: none (default), 'replicate(3, agree=2)', "
                        "adaptive, 'spot-check(0.1)', ...")
    j.add_argument("--float-noise", action="store_true",
                   help="honest peers' results differ in the last bits (float work across machines): only a "
                        "tolerance tells them from liars")
    add_json_flag(j)
    j.set_defaults(func=cmd_jobs)
    from .train_cmd import register_simulate

    register_simulate(psub)      # simulate train (training/simulate.py)


JOBS_EPILOG = """\
formats as for 'simulate churn'. Writes DIR/report.json and DIR/{job_latency,tasks_per_peer}.png.
The same --seed gives the same report (except wall and cpu seconds), and the same
jobs for every --placement, so that modes compare on one workload.
"""

JOBS_TARGETS = [
    ("succeeded", "jobs succeeded", "", None),
    ("failed", "jobs failed", "", None),
    ("tasks_lost", "tasks lost", "0", lambda v: v == 0),
    ("duplicate_results_accepted", "duplicate results accepted", "0", lambda v: v == 0),
    ("job_latency_s.median", "job latency median (s)", "", None),
    ("job_latency_s.p99", "job latency p99 (s)", "", None),
    ("locality_share", "map tasks run where their file was", "", None),
    ("msgs_per_job", "scheduler msgs / job", "", None),
    ("takeovers", "coordinator takeovers", "", None),
    ("jobs_killed", "jobs whose coordinator was killed", "", None),
    ("killed_jobs_succeeded", "of them completed", "", None),
    ("wrong_results_accepted", "wrong results accepted", "0", lambda v: v == 0),
    ("jobs_with_wrong_result", "jobs with a wrong result", "0", lambda v: v == 0),
    ("executions_per_task", "executions per task", "", None),
    ("executions_per_task_second_half", "executions per task, second half of the jobs", "", None),
    ("malicious_banned", "malicious peers banned", "", None),
    ("ban_time_s.median", "time to ban a liar, median (s)", "", None),
    ("honest_banned", "honest peers banned", "0", lambda v: v == 0),
    ("wall_seconds", "wall seconds", "", None),
]


def _strategy(text: str) -> str:
    """The canonical text of a verification strategy (verification/policy.py), or a UserError."""
    from ..scheduler.verification.policy import canonical
    try:
        return canonical(text)
    except ValueError as exc:
        raise UserError(f"--strategy: {exc}") from None


def cmd_jobs(args: argparse.Namespace) -> int:
    from ..simulations.jobs import JobsRun, JobsScenario
    from ..simulations.jobs_report import write_jobs_report

    if args.peers < 2 or args.jobs < 1 or args.files_per_job < 1:
        raise UserError("--peers must be at least 2, --jobs and --files-per-job at least 1")
    if not 0.0 < args.load <= 10.0 or args.task_seconds <= 0:
        raise UserError("--load must be in (0, 10] and --task-seconds positive")
    if args.files_per_job > 10_000:
        raise UserError("--files-per-job: at most 10,000 (one job of that many map tasks)")
    fraction, period = parse_churn(args.churn)
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    try:
        scenario = JobsScenario(peers=args.peers, jobs=args.jobs, churn_fraction=fraction, churn_period=period,
                                seed=seed, files_per_job=args.files_per_job, kill_coordinators=args.kill_coordinators,
                                kill_every_s=parse_duration(args.kill_every), kill_max_per_job=args.kill_max_per_job,
                                load=args.load, placement=args.placement, task_s=args.task_seconds,
                                loss=parse_fraction(args.loss, "loss"), latency=parse_latency(args.latency),
                                malicious=args.malicious, attack=args.attack,
                                verification=_strategy(args.verification), float_noise=args.float_noise)
    except ValueError as exc:            # the scenario's own range checks
        raise UserError(str(exc)) from None
    if not args.json:
        console.print(f"seed {seed}: {scenario.peers} peers, {scenario.jobs} jobs of {scenario.files_per_job} "
                      f"files at load {scenario.load:g} ({scenario.rate:.2f} jobs/s), placement "
                      f"{scenario.placement}, churn {fraction:.0%}/{period:g} s"
                      + (", killing coordinators" if scenario.kill_coordinators else ""), highlight=False)
    run = JobsRun(scenario)
    report = run.run() if args.json else _run_with_progress(run)
    files = write_jobs_report(args.out, report, run.series())
    if args.json:
        print_json(report)
    else:
        _print_table(f"jobs simulation: {report['peers']} peers, {report['jobs']} jobs, {report['placement']}",
                     report, JOBS_TARGETS)
        console.print(f"seed {seed}; wrote {', '.join(str(f) for f in files)}", highlight=False)
    return 0 if report["tasks_lost"] == 0 and report["duplicate_results_accepted"] == 0 else 1


def cmd_churn(args: argparse.Namespace) -> int:
    from ..simulations.churn import ChurnRun, Scenario
    from ..simulations.report import write_report

    if args.peers < 2:
        raise UserError("--peers must be at least 2")
    if args.lookups_per_s < 0 or args.capability_updates_per_s < 0:
        raise UserError("--lookups-per-s and --capability-updates-per-s must not be negative")
    fraction, period = parse_churn(args.churn)
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    scenario = Scenario(peers=args.peers, duration=parse_duration(args.duration), churn_fraction=fraction,
                        churn_period=period, loss=parse_fraction(args.loss, "loss"),
                        latency=parse_latency(args.latency), seed=seed, lookups_per_s=args.lookups_per_s,
                        capability_updates_per_s=args.capability_updates_per_s, join_wave=args.join_wave)
    if not args.json:
        console.print(f"seed {seed}: {scenario.peers} peers, {scenario.duration:g} s measured after "
                      f"{scenario.warmup:g} s warm-up, churn {fraction:.0%}/{period:g} s, loss {scenario.loss:g}, "
                      f"latency {scenario.latency[0] * 1000:g}-{scenario.latency[1] * 1000:g} ms", highlight=False)
    run = ChurnRun(scenario)
    if args.json:
        report = run.run()
    else:
        report = _run_with_progress(run)
    files = write_report(args.out, report, run.series())
    if args.json:
        print_json(report)
    else:
        _print_summary(report)
        console.print(f"seed {seed}; wrote {', '.join(str(f) for f in files)}", highlight=False)
    return 0


def _run_with_progress(run) -> dict:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    if not console.is_terminal:  # a log file: one line per 2% of virtual time
        started, last = time.perf_counter(), [-1]

        def log_line(now: float, end: float) -> None:
            pct = int(100 * now / end)
            if pct // 2 != last[0]:
                last[0] = pct // 2
                console.print(f"virtual {now:.0f}/{end:.0f} s ({pct}%), wall {time.perf_counter() - started:.0f} s",
                              highlight=False)

        return run.run(log_line)

    columns = (TextColumn("virtual {task.completed:>7.0f}/{task.total:.0f} s"), BarColumn(),
               TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("simulating", total=run.end)
        return run.run(lambda now, end: progress.update(task, completed=now))


def _lookup(report: dict, dotted: str):
    value = report
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _print_summary(report: dict) -> None:
    table = _print_table(f"churn simulation: {report['peers']} peers, {report['virtual_seconds']:g} virtual s",
                         report, TARGETS, show=False)
    virtual, wall = report.get("virtual_seconds") or 0, report.get("wall_seconds")
    if virtual and wall is not None:
        per_hour = wall * 3600.0 / virtual
        goal = WALL_PER_VIRTUAL_HOUR.get(report["peers"])
        mark = "" if goal is None else ("[green]ok[/]" if per_hour <= goal else "[red]missed[/]")
        table.add_row("wall s per virtual hour", f"{per_hour:.0f}", "" if goal is None else f"≤ {goal:g}", mark)
    console.print(table)


def _print_table(title: str, report: dict, targets: list, show: bool = True):
    from rich.table import Table

    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_column("", justify="center")
    for key, label, target, check in targets:
        value = _lookup(report, key)
        if check is None:
            mark = ""
        elif value is None:
            mark = "[yellow]no data[/]"
        else:
            mark = "[green]ok[/]" if check(value) else "[red]missed[/]"
        table.add_row(label, "—" if value is None else f"{value:g}", target, mark)
    if show:
        console.print(table)
    return table
