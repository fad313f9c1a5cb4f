"""dashboard/views.py: each page's data is paged, filtered, counted over everything and bounded (pure)."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pcompute.dashboard import views
from p2pcompute.dashboard.synthetic import SyntheticNode, job_tasks, members

HISTORY = {"states": ["alive", "suspect", "dead", "left"], "t": [], "counts": []}


def test_members_pages_cover_every_member_once_and_counts_are_over_all():
    rows = members(1000, random.Random(3))
    seen = []
    for offset in range(0, 1000, 100):
        page = views.network_view({}, rows, {}, HISTORY, {"offset": str(offset), "limit": "100"})
        assert len(page["rows"]) == 100 and page["total"] == 1000
        seen += [r["peer_id"] for r in page["rows"]]
    assert sorted(seen) == sorted(r["peer_id"] for r in rows)
    assert sum(page["counts"].values()) == 1000
    dead = views.network_view({}, rows, {}, HISTORY, {"state": "dead", "limit": "500"})
    assert dead["matching"] == page["counts"]["dead"] and all(r["state"] == "dead" for r in dead["rows"])


def test_members_sort_by_rtt_puts_the_measured_first():
    rows = members(50, random.Random(4))
    rtts = {rows[7]["peer_id"]: 3.0, rows[9]["peer_id"]: 1.0}
    page = views.network_view({}, rows, rtts, HISTORY, {"sort": "rtt"})
    assert [r["peer_id"] for r in page["rows"][:2]] == [rows[9]["peer_id"], rows[7]["peer_id"]]
    assert page["rows"][0]["rtt_ms"] == 1.0 and page["rows"][2]["rtt_ms"] is None


@pytest.mark.parametrize("query", [{"offset": "-1"}, {"limit": "0"}, {"limit": "501"}, {"limit": "x"},
                                   {"state": "zombie"}, {"sort": "evil"}])
def test_a_bad_query_is_refused_with_a_reason(query):
    with pytest.raises(views.BadQuery):
        views.network_view({}, [], {}, HISTORY, query)


def test_a_job_of_10000_tasks_gives_one_page_its_stages_and_a_bounded_timeline():
    rng = random.Random(5)
    peers = [f"p{i}" for i in range(40)]
    tasks = job_tasks(10_000, peers, rng)
    summary = {"job_id": "j", "state": "running", "outputs": [["combine/00000", "y", "Qm1"]]}
    page = views.job_view(summary, tasks, 0.0, 700.0, {}, {"state": "running", "limit": "100"})
    running = sum(t.state == "running" for t in tasks.values())
    assert page["total"] == 10_000 and page["matching"] == running and len(page["rows"]) == 100
    assert all(r["state"] == "running" and r["duration"] >= 0 for r in page["rows"])
    assert [s["stage"] for s in page["stages"]] == ["map", "combine"]
    assert page["stages"][1]["deps"] == ["map"] and page["stages"][0]["deps"] == []
    assert sum(s["total"] for s in page["stages"]) == 10_000
    assert page["results"] == [{"task": "combine/00000", "output": "y", "cid": "Qm1"}]
    assert len(json.dumps(page)) < 100_000
    line = views.timeline(tasks, 0.0, 700.0, max_bars=5000)
    assert len(line["bars"]) == 5000 and line["bars_dropped"] > 0 and len(line["peers"]) <= 40
    assert all(0 <= b[1] <= b[2] <= 700.0 and b[0] < len(line["lanes"]) and b[4] < len(line["tasks"])
               for b in line["bars"])


def test_the_timeline_has_one_bar_per_attempt_on_its_peers_lane():
    tasks = job_tasks(30, ["a", "b"], random.Random(6), running=0.0)
    line = views.timeline(tasks, 0.0, 1000.0)
    attempts = [(tid, a) for tid, t in tasks.items() for a in t.attempts]
    assert len(line["bars"]) == len(attempts)
    shown = sorted((line["tasks"][b[4]], line["peers"][line["lanes"][b[0]][0]], line["outcomes"][b[3]], b[1])
                   for b in line["bars"])
    assert shown == sorted((tid, a["peer"], a["outcome"], round(a["start"], 3)) for tid, a in attempts)


def test_bars_on_one_row_of_a_peer_never_overlap():
    tasks = job_tasks(400, ["a", "b", "c"], random.Random(9), running=0.2)
    line = views.timeline(tasks, 0.0, 1000.0)
    by_lane: dict = {}
    for b in line["bars"]:
        by_lane.setdefault(b[0], []).append((b[1], b[2]))
    for lane, spans in by_lane.items():
        spans.sort()
        if line["lanes"][lane][1] < views.MAX_ROWS - 1:
            assert all(s2 >= e1 for (_, e1), (s2, _) in zip(spans, spans[1:])), lane
    assert len(line["lanes"]) == len({tuple(x) for x in line["lanes"]})


def test_a_finished_job_stops_its_clock_at_its_last_attempt():
    tasks = job_tasks(20, ["a"], random.Random(7), running=0.0)
    last = max(a["end"] for t in tasks.values() for a in t.attempts)
    done = views.job_view({"state": "done"}, tasks, 0.0, last + 500, {}, {})
    running = views.job_view({"state": "running"}, tasks, 0.0, last + 500, {}, {})
    assert done["elapsed"] == round(last, 3) and running["elapsed"] == round(last + 500, 3)


def test_a_task_detail_is_relative_to_the_job_start():
    tasks = job_tasks(3, ["a"], random.Random(8), created=100.0, running=0.0)
    tid, t = next(iter(tasks.items()))
    d = views.task_detail(tid, t, 100.0, 2000.0)
    assert d["attempts"][0]["start"] == round(t.attempts[0]["start"] - 100.0, 3)
    assert d["story"][0][0] == 0.0


def test_jobs_are_newest_first_and_paged():
    node = SyntheticNode(10, 100)
    summaries = [node.scheduler.summary(j) for j in node.scheduler.jobs]
    page = views.jobs_view(summaries, {"limit": "20"})
    assert page["rows"][0]["job_id"] == "jsynthetic" and len(page["rows"]) == 20 and page["total"] == 201
    done = views.jobs_view(summaries, {"state": "done", "offset": "195"})
    assert done["matching"] == 200 and len(done["rows"]) == 5


def test_machine_view_shows_messages_and_bytes_per_second_by_protocol():
    rates = {"messages_sent:node": 2.0, "messages_received:node": 1.0, "bytes_sent:node": 80.0,
             "messages_sent:membership": 3.0, "bytes_sent:membership": 20.0, "bytes_received:invalid": 5.0,
             "bytes_sent": 100.0, "bitswap:bytes_sent": 50.0}
    view = views.machine_view({"compute": {"workers": {"busy": 1}}}, {"cpu_percent": 3.0}, rates)
    assert view["protocols"]["node"] == {"sent": 2.0, "received": 1.0, "bytes_sent": 80.0, "bytes_received": 0.0}
    assert view["protocols"]["membership"]["bytes_sent"] == 20.0
    assert view["protocols"]["invalid"]["bytes_received"] == 5.0
    assert view["protocols"]["bitswap"]["bytes_sent"] == 50.0
    assert view["bytes_per_s"]["sent"] == 100.0 and view["workers"] == {"busy": 1}


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 300), st.integers(0, 600), st.integers(1, 500))
def test_job_pages_partition_the_matching_tasks(n, offset, limit):
    tasks = job_tasks(n, ["a", "b", "c"], random.Random(n)) if n else {}
    page = views.job_view({}, tasks, 0.0, 1000.0, {}, {"offset": str(offset), "limit": str(limit)})
    assert [r["task"] for r in page["rows"]] == list(tasks)[offset:offset + limit]
    assert page["matching"] == page["total"] == n
