"""``submit``, ``jobs``, ``describe``, ``logs``, ``cancel``, ``results``: jobs across the network, through
the local daemon.

The daemon of the data dir coordinates the jobs submitted to it (its
scheduler service: scheduler/service.py); these commands talk to its
``/v1/jobs`` routes. Results are pinned on that daemon, so ``results`` reads
them from its blockstore.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import UserError
from .control import client_for, data_dir_of
from .daemon import add_data_dir
from .output import add_json_flag, console, print_json

FINAL = ("done", "failed", "cancelled")
POLL_S = 0.5


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("submit", help="submit a job.yaml to the network through the local daemon",
                       description="Add the job's local inputs to the daemon (pinned), plan it, and have the "
                       "daemon coordinate it: its tasks run on peers that meet its constraints, near their data. "
                       "Shows progress until the job ends (or prints its ID at once with --detach). "
                       "Exit status 0 when it succeeded, 1 when it failed or was cancelled.")
    s.add_argument("job", type=Path, metavar="JOB.yaml", help="the job file (see docs/job-spec.md; "
                   "`p2pcompute validate` checks it)")
    mode = s.add_mutually_exclusive_group()
    mode.add_argument("--wait", dest="detach", action="store_false", help="wait for the job to end (default)")
    mode.add_argument("--detach", action="store_true", help="print the job ID and return at once")
    s.add_argument("--output", "-o", type=Path, metavar="DIR", help="write the job's results into DIR when it is done")
    add_data_dir(s)
    add_json_flag(s)
    s.set_defaults(func=cmd_submit, detach=False)

    j = sub.add_parser("jobs", help="list the jobs the local daemon coordinates or that were submitted through it",
                       description="List the jobs the local daemon coordinates and those submitted through it, "
                       "with state and progress; a job whose coordinator moved to another peer (a takeover) is "
                       "looked up there and marked 'moved'. --all also asks the other peers (at most 64, each "
                       "listing at most 100 jobs).")
    j.add_argument("--state", choices=("submitted", "running", *FINAL), help="only jobs in this state")
    j.add_argument("--all", action="store_true", help="also the jobs other peers coordinate")
    add_data_dir(j)
    add_json_flag(j)
    j.set_defaults(func=cmd_jobs)

    d = sub.add_parser("describe", help="show one job: its tasks, attempts, peers and errors",
                       description="Show a job: where each input came from (file, URL, handle, CID), and its "
                       "tasks: state, attempts (peer, when, how long, outcome, stderr size), and why a task failed.")
    d.add_argument("job_id", metavar="JOB")
    add_data_dir(d)
    add_json_flag(d)
    d.set_defaults(func=cmd_describe)

    lg = sub.add_parser("logs", help="show a job's task stderr: every attempt, with the peer that ran it",
                        description="Show the stderr of a task of a job (or of the tasks that ran, at most "
                        "--limit), each attempt with its peer and outcome. The executing peer keeps the text "
                        "(its last 64 KiB) and this daemon fetches it by CID.")
    lg.add_argument("job_id", metavar="JOB")
    lg.add_argument("task", nargs="?", metavar="TASK", help="a task id (as `describe` shows); default: every "
                    "task that ran")
    lg.add_argument("--limit", type=int, default=100, help="at most this many tasks (default 100)")
    add_data_dir(lg)
    add_json_flag(lg)
    lg.set_defaults(func=cmd_logs)

    c = sub.add_parser("cancel", help="cancel a job: its running tasks stop on every peer",
                       description="Cancel a job. A job coordinated by another peer is cancelled there (its "
                       "coordinator is found through the network); it allows that only from the peer the job was "
                       "submitted through.")
    c.add_argument("job_id", metavar="JOB")
    add_data_dir(c)
    add_json_flag(c)
    c.set_defaults(func=cmd_cancel)

    r = sub.add_parser("results", help="write a finished job's results into a directory",
                       description="Write each result of a finished job into DIR, as DIR/<task>/<output> "
                       "(with a suffix from its contents: .tensor, .npy, .png, .tif).")
    r.add_argument("job_id", metavar="JOB")
    r.add_argument("--output", "-o", type=Path, required=True, metavar="DIR")
    add_data_dir(r)
    add_json_flag(r)
    r.set_defaults(func=cmd_results)


def _job(client: Any, job_id: str) -> dict:
    return client._call("GET", f"/v1/jobs/{job_id}")


def cmd_submit(args: argparse.Namespace) -> int:
    path = args.job.expanduser().resolve()
    if not path.is_file():
        raise UserError(f"{args.job}: no such job file")
    if args.output is not None and args.output.exists() and any(args.output.iterdir()):
        raise UserError(f"{args.output} exists and is not empty: choose a new directory")
    client = client_for(args)
    summary = client._call("POST", "/v1/jobs", json={"path": str(path)})
    job_id = summary["job_id"]
    if args.detach:
        if args.json:
            print_json(summary)
        else:
            print(job_id)
        return 0
    if not args.json:
        console.print(f"job {job_id} ({summary.get('name') or path.name}): {summary.get('tasks', '?')} tasks, "
                      f"coordinated by this peer; Ctrl-C stops watching (the job goes on: "
                      f"`p2pcompute cancel {job_id}` stops it)", highlight=False)
    summary = _watch(client, job_id, show=not args.json and sys.stderr.isatty())
    written = _write_results(args, summary, args.output) if args.output and summary["state"] == "done" else []
    if args.json:
        print_json(summary | {"written": [str(p) for p in written]})
    else:
        _print_end(summary, written)
    return 0 if summary["state"] == "done" else 1


def _watch(client: Any, job_id: str, *, show: bool) -> dict:
    """Poll the job until it ends; a live bar (done / running / queued / failed, elapsed) on a terminal."""
    start = time.monotonic()
    if not show:
        while (summary := client._call("GET", f"/v1/jobs/{job_id}"))["state"] not in FINAL:
            time.sleep(POLL_S)
        return summary
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("{task.fields[detail]}"), TimeElapsedColumn())
    with Progress(*columns, console=console.__class__(stderr=True), transient=True) as bar:
        row = bar.add_task("tasks", total=None, detail="")
        while True:
            summary = client._call("GET", f"/v1/jobs/{job_id}")
            p = summary.get("progress") or {}
            finished = p.get("done", 0) + p.get("skipped", 0) + p.get("failed", 0) + p.get("cancelled", 0)
            bar.update(row, total=p.get("total") or None, completed=finished,
                       detail=f"running {p.get('running', 0)}  queued {p.get('queued', 0)}  "
                              f"failed {p.get('failed', 0)}  ({time.monotonic() - start:.0f} s)")
            if summary["state"] in FINAL:
                return summary
            time.sleep(POLL_S)


def _print_end(summary: dict, written: list[Path]) -> None:
    p = summary.get("progress") or {}
    state = summary["state"]
    colour = {"done": "green", "failed": "red", "cancelled": "yellow"}.get(state, "white")
    console.print(f"[{colour}]{state}[/]: {p.get('done', 0)} tasks done, {p.get('skipped', 0)} skipped, "
                  f"{p.get('failed', 0)} failed" + (f" — {summary['reason']}" if summary.get("reason") else ""))
    for task, output, cid in summary.get("outputs", []):
        console.print(f"  {task} {output}: {cid or '(skipped)'}", highlight=False)
    for path in written:
        console.print(f"  wrote {path}", highlight=False)


def _write_results(args: argparse.Namespace, summary: dict, out_dir: Path) -> list[Path]:
    from ..client import Client
    from ..scheduler.runner import suffix_of

    written = []
    for task, output, data in Client(data_dir_of(args)).job(summary["job_id"]).result_bytes(summary):
        suffix = ".png" if data.startswith(b"\x89PNG") else suffix_of(data[:16])
        rel = _safe_path(output)
        path = out_dir / _safe_path(task) / rel.with_name(rel.name + suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written.append(path)
    return written


def _safe_path(name: str) -> Path:
    """A task or output name (``detect/00007``) as a relative path that stays inside the results dir."""
    parts = [p for p in name.split("/") if p not in ("", ".", "..")]
    return Path(*["".join(c if c.isalnum() or c in "-_." else "_" for c in p)[:64] for p in parts] or ["result"])


def cmd_jobs(args: argparse.Namespace) -> int:
    params = ({"state": args.state} if args.state else {}) | ({"all": "1"} if args.all else {})
    listing = client_for(args)._call("GET", "/v1/jobs", params=params or None)
    jobs = listing["jobs"]
    if args.json:
        print_json(listing if args.all else jobs)
        return 0
    if not jobs:
        console.print("no jobs here (`p2pcompute submit JOB.yaml` submits one)")
    else:
        from rich.table import Table

        table = Table("job", "name", "state", "done", "running", "queued", "failed", "total", "coordinator")
        for j in jobs:
            p = j.get("progress") or {}
            state = j["state"] + (" (not found now)" if j.get("stale") else "")
            where = "here" if not j.get("moved") and j.get("submitted_here") else str(j.get("coordinator"))[:16]
            table.add_row(j["job_id"], j.get("name") or "", state, *(str(p.get(k, 0)) for k in
                          ("done", "running", "queued", "failed")), str(p.get("total", "?")),
                          where + (" (moved)" if j.get("moved") else ""))
        console.print(table)
    if args.all:
        console.print(f"{listing.get('peers_answered', 0)} of {listing.get('peers_asked', 0)} peers asked answered"
                      + (f"; {listing['peers_not_asked']} not asked" if listing.get("peers_not_asked") else "")
                      + (f"; {listing['more']} more jobs not listed" if listing.get("more") else ""), highlight=False)
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    job = _job(client_for(args), args.job_id)
    if args.json:
        print_json(job)
        return 0
    p = job.get("progress") or {}
    console.print(f"[bold]job[/] {job['job_id']} ({job.get('name') or ''}): {job['state']}"
                  + (f" — {job['reason']}" if job.get("reason") else ""), highlight=False)
    console.print(f"coordinator {job['coordinator']}, replicas {len(job.get('replicas', []))}, "
                  f"tasks {p.get('total', '?')}: {p.get('done', 0)} done, {p.get('running', 0)} running, "
                  f"{p.get('queued', 0)} queued, {p.get('failed', 0)} failed, {p.get('skipped', 0)} skipped",
                  highlight=False)
    created = job.get("created")
    if isinstance(created, (int, float)) and isinstance(job.get("clock"), (int, float)):
        console.print(f"submitted {job['clock'] - created:.1f} s ago (times below from then)", highlight=False)
    inputs = job.get("inputs") or []
    if inputs:
        console.print("inputs:", highlight=False)
        for i in inputs:
            console.print(f"  {i['input']:<12} {i['from']:<6} {i['source']}" +
                          (f" -> {i['cid']}" if i["source"] != i["cid"] else ""), highlight=False, markup=False)
    for task in job.get("tasks", []):
        attempts = task.get("attempts") or []
        line = f"  {task['task']:<24} {task['state']:<10} attempts {len(attempts)}"
        if task.get("reason"):
            line += f"  {task['reason']}"
        console.print(line, highlight=False)
        for a in attempts:
            start, end = a.get("start"), a.get("end")
            when = f" at +{start - created:.2f} s" if isinstance(start, (int, float)) and \
                isinstance(created, (int, float)) else ""
            took = f" in {end - start:.2f} s" if isinstance(end, (int, float)) and isinstance(start, (int, float)) \
                else ""
            log = f", stderr {a['log_bytes']} bytes (`p2pcompute logs {job['job_id']} {task['task']}`)" \
                if a.get("log") else ""
            console.print(f"      {a.get('outcome') or 'running'} on {a.get('peer')}{when}{took}{log}"
                          + (f": {a['message']}" if a.get("message") else ""), highlight=False, style="dim",
                          markup=False)
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit} | ({"task": args.task} if args.task else {})
    logs = client_for(args)._call("GET", f"/v1/jobs/logs/{args.job_id}", params=params)
    if args.json:
        print_json(logs)
        return 0
    if not logs["tasks"]:
        console.print(f"job {args.job_id}: no task has run yet", highlight=False)
    for task in logs["tasks"]:
        attempts = task["attempts"]
        console.print(f"[bold]{task['task']}[/] ({task['state']}): "
                      + (f"{len(attempts)} attempt" + ("s" if len(attempts) != 1 else "") if attempts
                         else "not run yet"), highlight=False)
        if task.get("attempts_dropped"):
            console.print(f"  ({task['attempts_dropped']} earlier attempts not kept)", highlight=False)
        for a in attempts:
            took = f" in {a['end'] - a['start']:.2f} s" if isinstance(a.get("end"), (int, float)) and \
                isinstance(a.get("start"), (int, float)) else ""
            console.print(f"  attempt {a['attempt']} on {a.get('peer')}: {a.get('outcome')}{took}"
                          + (f" ({a['message']})" if a.get("message") else ""), highlight=False, style="dim")
            if a.get("stderr") is None:
                console.print(f"    {a.get('log_error') or 'stderr not to be had'}", highlight=False, style="yellow")
            elif not a["stderr"]:
                console.print("    (no stderr)", highlight=False)
            else:
                for line in a["stderr"].splitlines():
                    console.print(f"    | {line}", highlight=False, markup=False)
    if logs.get("tasks_not_shown"):
        console.print(f"({logs['tasks_not_shown']} more tasks ran: name one, or raise --limit)", highlight=False)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    summary = client_for(args)._call("POST", f"/v1/jobs/cancel/{args.job_id}", json={})
    if args.json:
        print_json(summary)
    else:
        console.print(f"job {summary['job_id']}: cancelling (state {summary['state']})", highlight=False)
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    summary = _job(client_for(args), args.job_id)
    if summary["state"] != "done":
        raise UserError(f"job {args.job_id} is {summary['state']}, not done: no results to write")
    written = _write_results(args, summary, args.output)
    if args.json:
        print_json({"job_id": args.job_id, "written": [str(p) for p in written]})
    else:
        for path in written:
            console.print(f"wrote {path}", highlight=False)
    return 0
