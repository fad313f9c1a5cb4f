"""``validate JOB.yaml``: check a job file against job.yaml v1 without running or submitting it."""

from __future__ import annotations

import argparse
from pathlib import Path

from .output import add_json_flag, console, print_json

EPILOG = """\
Every problem is printed with its line and its path in the file, e.g.
  job.yaml:12: stages[1].map.batch: -3 is less than the minimum of 1
Exit status: 0 if the file is valid (with a one-line summary), 1 otherwise.
The format: docs/job-spec.md; the JSON Schema ships in p2pcompute/scheduler/job_schema.json.
"""


def register(sub: argparse._SubParsersAction) -> None:
    v = sub.add_parser("validate", help="check a job.yaml: every problem with its line and path",
                       description="Check a job file (job.yaml version 1) against its JSON Schema and what a "
                       "schema cannot check: files and globs exist, references name known inputs, stages and "
                       "outputs, stages form no cycle, conditions are on scalar outputs, the plan is within the "
                       "limits. Nothing is fetched, run or submitted.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    v.add_argument("job", metavar="JOB.yaml", help="the job file")
    add_json_flag(v)
    v.set_defaults(func=cmd_validate)


def validate(path: str | Path) -> dict:
    """The report ``validate`` prints: ok, problems (path, line, message), stages, tasks (None: known at submit)."""
    from ..scheduler.plan import Unresolved, count_tasks, placeholders
    from ..scheduler.model import PlanError
    from ..scheduler.spec import check_file
    from ..scheduler.spec_check import Problem

    spec, problems = check_file(path)
    tasks, note = None, None
    if spec is not None:
        try:
            tasks = count_tasks(spec, placeholders(spec))
        except Unresolved as exc:
            note = str(exc)
        except PlanError as exc:
            problems = [Problem("", str(exc))]
    return {"file": str(path), "ok": not problems, "name": spec.name if spec else None,
            "stages": len(spec.stages) if spec else None, "tasks": tasks, "note": note,
            "problems": [p.to_json() for p in problems]}


def cmd_validate(args: argparse.Namespace) -> int:
    report = validate(args.job)
    if args.json:
        print_json(report)
        return 0 if report["ok"] else 1
    for p in report["problems"]:
        where = f"{args.job}:{p['line']}" if p["line"] else args.job
        console.print(f"{where}: [bold]{p['path'] or '(file)'}[/]: {p['message']}", highlight=False, markup=True)
    if not report["ok"]:
        n = len(report["problems"])
        console.print(f"[bold red]{n} problem{'s' if n != 1 else ''}[/] in {args.job}", highlight=False)
        return 1
    stages = f"{report['stages']} stage{'s' if report['stages'] != 1 else ''}"
    tasks = (f"{report['tasks']:,} task{'s' if report['tasks'] != 1 else ''}" if report["tasks"] is not None
             else f"tasks known at submit ({report['note']})")
    console.print(f"[bold green]ok[/]: {stages}, {tasks}", highlight=False)
    return 0
