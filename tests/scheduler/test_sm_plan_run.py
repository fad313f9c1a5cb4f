"""spec -> plan -> JobState: a planned two-stage pipeline runs to the end, graphs really run, conditions skip.

The coordinator's Dispatch carries each task's inputs resolved to CIDs (a stage's input is the earlier
task's output); a fake executor runs the task's graph on them with Graph.run, item by item as an
executing peer does (plan.bind_item's naming), and reports its outputs as CIDs and its scalars inline.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from jobspec_helpers import pipeline, workspace

from p2pcompute.ops.graph import Graph
from p2pcompute.scheduler import events as ev
from p2pcompute.scheduler import spec
from p2pcompute.scheduler.job_state import JobState
from p2pcompute.scheduler.plan import Resolved, decode_payload, full_payload, item_output, plan_job


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return workspace(tmp_path_factory.mktemp("ws"))


def execute(plan, d: ev.Dispatch, store: dict) -> ev.ResultReady:
    t = next(x for x in plan.tasks if x.task_id == d.task)
    task, items, per_item = decode_payload(full_payload(plan, t))
    g = Graph.from_cbor(task.graph)
    cids = {name: cid for name, cid, _ in d.inputs}
    outputs, inline = {}, {}
    for label in items or [None]:
        feeds = {name: store[cids[f"{name}/{label}" if label is not None and name in per_item else name]]
                 for name in task.inputs}
        for name, value in g.run(feeds).items():
            out = item_output(name, label)
            outputs[out] = f"cid:{d.task}:{out}"
            store[outputs[out]] = value
            if np.size(value) == 1:
                inline[out] = float(value)
    return ev.ResultReady(d.task, "p1", "", outputs, inline)


def run(js: JobState, plan, store: dict) -> list:
    pending, log, now = list(js.start(0.0)), [], 0.0
    while pending:
        c = pending.pop(0)
        log.append(c)
        now += 0.01
        if isinstance(c, ev.Dispatch):
            pending += js.handle(ev.Placed(c.task, ("p1",)), now)
        elif isinstance(c, ev.SendOffer):
            pending += js.handle(ev.OfferAccepted(c.task, c.peer, c.lease_id), now)
        elif isinstance(c, ev.GrantLease):
            d = next(x for x in log if isinstance(x, ev.Dispatch) and x.task == c.task)
            r = execute(plan, d, store)
            pending += js.handle(ev.ResultReady(c.task, c.peer, c.lease_id, r.outputs, r.inline), now)
        elif isinstance(c, ev.FetchResult):
            pending += js.handle(ev.Fetched(c.task, c.lease_id), now)
    return log


def test_a_planned_pipeline_runs_through_job_state_and_its_condition_skips_item_0(ws):
    job, problems = spec.check(pipeline(), ws)
    assert problems == []
    plan = plan_job(job, {"x": [Resolved(f"x{i}") for i in range(3)]}, "job-pipe")
    store = {f"x{i}": np.full((4, 4), i, dtype=np.float32) for i in range(3)}     # means 0, 1, 2
    js = JobState(plan, 0.0, random.Random(0))
    log = run(js, plan, store)
    report = [c for c in log if isinstance(c, ev.Report)][-1]
    assert report.kind == "done" and js.state == "done"
    states = {tid: t.state for tid, t in js.tasks.items()}
    assert states == {"stats/00000": "done", "stats/00001": "done", "stats/00002": "done",
                      "scaled/00000": "skipped", "scaled/00001": "done", "scaled/00002": "done"}
    # the second stage got the first stage's output CID as its input, and computed x * mean(x)
    d = next(c for c in log if isinstance(c, ev.Dispatch) and c.task == "scaled/00002")
    assert ("m/00002", "cid:stats/00002:m/00002", None) in d.inputs
    result = dict(((t, o), cid) for t, o, cid in report.outputs)
    assert result[("scaled/00000", "y/00000")] is None
    np.testing.assert_allclose(store[result[("scaled/00002", "y/00002")]], np.full((4, 4), 4.0))
