"""The job record: what a coordinator replicates and a replica takes over from.

Theory of operation. ``to_record`` is the whole job as a CBOR-friendly dict
(format, job id, version, epoch, the plan, stats, every task's state,
offers, lease, attempts and results). Sending it whole on every change costs
O(tasks) per change, so after one full record a coordinator sends *deltas*:
``delta`` holds the job's fields and only the tasks changed since the last
``delta``, with ``base``, the version the previous delta carried (0 for the
first). A replica applies them with ``apply_delta``: a delta whose ``base``
is above the version it holds means it missed one, and it must ask for the
full record (``RecordGap``); a delta from below (the replica got a full
record meanwhile) holds every change since, and applies. A new coordinator
(a higher epoch) sends each replica a full record first (``to_record``,
which leaves the delta stream alone): its deltas to a replica still holding
an older epoch, or of a sibling coordinator of the same epoch (two replicas
that both took over: the nonce tells them apart), are a ``RecordGap`` too; deltas of an older epoch than the
record held come from a replaced coordinator and change nothing. ``from_record`` rebuilds a ``JobState`` for a
replica that takes over (job_state.py says what it re-offers, and why no
result is taken twice). A record comes from a peer: everything in it is
checked, and a bad one raises ``PlanError`` naming the problem.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import TYPE_CHECKING, Any

from .events import JobConfig
from .model import JobPlan, PlanError
from .task_run import DONE, SKIPPED

if TYPE_CHECKING:
    from .job_state import JobState

FORMAT = 1
JOB_STATES = ("running", "done", "failed", "cancelled")


class RecordGap(PlanError):
    """A delta does not follow the version held: the replica needs the full record."""


def _head(js: JobState) -> dict[str, Any]:
    return {"format": FORMAT, "job_id": js.job_id, "version": js.version, "epoch": js.epoch, "nonce": js.nonce,
            "seq": js._seq,
            "state": js.state, "reason": js.reason, "created": js.created, "stats": dict(js.stats)}


def to_record(js: JobState) -> dict[str, Any]:
    return {**_head(js), "plan": js.plan.to_wire(), "tasks": [t.to_record() for t in js.tasks.values()]}


def delta(js: JobState) -> dict[str, Any]:
    d = {**_head(js), "base": js._delta_base, "tasks": [js.tasks[tid].to_record() for tid in sorted(js._changed)]}
    js._changed.clear()
    js._delta_base = js.version
    return d


def apply_delta(record: dict[str, Any], d: dict[str, Any]) -> dict[str, Any]:
    """The record ``d`` brings ``record`` to (a new dict). An old or repeated delta changes nothing."""
    try:
        if d.get("format") != FORMAT or d["job_id"] != record["job_id"]:
            raise PlanError(f"delta of job {d.get('job_id')!r} format {d.get('format')!r} does not fit this record")
        if d["epoch"] > record["epoch"]:
            raise RecordGap(f"delta of epoch {d['epoch']} but the record held is of epoch {record['epoch']}")
        if d["epoch"] == record["epoch"] and d["nonce"] != record["nonce"]:
            raise RecordGap(f"delta of another coordinator of epoch {d['epoch']}")
        if d["epoch"] < record["epoch"] or d["version"] <= record["version"]:
            return record                 # old news, or a coordinator that was replaced: fenced off
        if d["base"] > record["version"]:
            raise RecordGap(f"delta from version {d['base']} but version {record['version']} is held")
        index = {t["id"]: i for i, t in enumerate(record["tasks"])}
        tasks = list(record["tasks"])
        for t in d["tasks"]:
            if t["id"] not in index:
                raise PlanError(f"delta names task {str(t['id'])[:80]!r}, not in the plan")
            tasks[index[t["id"]]] = t
    except (KeyError, TypeError, AttributeError) as e:
        raise PlanError(f"bad job record delta: {type(e).__name__}: {e}") from None
    return {**record, **{k: v for k, v in d.items() if k != "base"}, "tasks": tasks}


def from_record(cls: type[JobState], record: dict[str, Any], now: float, rng: random.Random,
                config: JobConfig | None, verify: Any = None) -> JobState:
    try:
        if record.get("format") != FORMAT:
            raise PlanError(f"job record format {record.get('format')!r}, expected {FORMAT}")
        js = cls(JobPlan.from_wire(record["plan"]), float(record["created"]), rng, config, verify)
        if len(record["tasks"]) != len(js.tasks) or record["state"] not in JOB_STATES:
            raise PlanError("job record does not fit its plan")
        js.version, js.epoch = int(record["version"]), int(record["epoch"]) + 1
        js._seq = int(record["seq"])
        js.state, js.reason = record["state"], str(record["reason"])
        js._reported_end = js.state != "running"
        js.stats.update({str(k): int(v) for k, v in dict(record["stats"]).items()})
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise PlanError(f"bad job record: {type(e).__name__}: {e}") from None
    js.counts = Counter()
    for t, r in zip(js.tasks.values(), record["tasks"]):
        t.load_record(r)
        js.counts[t.state] += 1
    for t in js.tasks.values():
        t.pending = sum(1 for dep in js._deps[t.task_id] if js.tasks[dep].state not in (DONE, SKIPPED))
        t.story.append((now, f"takeover by epoch {js.epoch}", t.state, t.state))
        js._take_over(t, now)
    return js
