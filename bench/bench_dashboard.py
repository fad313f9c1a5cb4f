"""The dashboard's figures (issue 13): page load with 1000 members and 10,000 tasks, the daemon's extra CPU
with one dashboard open, and the bytes per second of live updates.

    python bench/bench_dashboard.py [--parts views,load,live] [--members 1000] [--tasks 10000]
                                    [--repeat 5] [--window 30] [--json]

Run it from a directory outside a checkout with the checkout on PYTHONPATH. Needs Chromium for ``load``
and ``live`` (p2pcompute/dashboard/browser.py).

1. **views**: the data layer alone (dashboard/views.py) over synthetic state (dashboard/synthetic.py):
   milliseconds to build each page's JSON and its size.
2. **load**: the real service and control API (hypercorn, loopback) serving that synthetic state
   (``SyntheticNode``: 1000 members, a job of 10,000 tasks verified under ``replicate(2, agree=2)`` with
   signed evidence, 200 older jobs, an hour of member history) to headless Chromium, signed in with a
   ticket. Per page, the time from ``goto`` (a fresh document) until its data is on screen (the last row
   of the first page of a table, or the timeline's bars drawn). The verification tab's first load opens
   (checks) the page's evidence; later loads find it in the service's cache (``ms_max`` is the first).
3. **live**: a real 3-peer devnet. Peer 0's daemon process CPU seconds over ``--window`` seconds with no
   dashboard, then with one page open on the Network view (live updates every 2 s), then on the Jobs
   view; and the bytes of server-sent events the daemon wrote per second (its ``dashboard.event_bytes``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from p2pcompute.dashboard import browser, views
from p2pcompute.dashboard.synthetic import SyntheticNode

MS = 1000


def part_views(members: int, tasks: int, repeat: int) -> dict:
    from p2pcompute.dashboard.history import MemberHistory

    from p2pcompute.dashboard import evidence
    from p2pcompute.dashboard.service import DashboardService

    node = SyntheticNode(members, tasks, verified=True)
    history = MemberHistory()
    for t in range(0, 3600, 10):
        history.add(float(t), {"alive": members - 50, "dead": 50})
    js = node.scheduler.jobs["jsynthetic"].js
    summaries = [node.scheduler.summary(j) for j in node.scheduler.jobs]
    edges = views.stage_edges(js.tasks)
    cache = DashboardService()         # its bounded cache of opened evidence
    cases = {
        "network (page of 100 of 1000 members)": lambda: views.network_view(node.status(), node.peers(), {},
                                                                             history.series(3600.0), {}),
        "jobs (page of 50 of 201)": lambda: views.jobs_view(summaries, {}),
        "job (page of 100 of 10,000 tasks, stages, counts)": lambda: views.job_view(
            node.scheduler.summary("jsynthetic"), js.tasks, 0.0, 700.0, js.stats, {}, edges),
        "job's stage graph (worked out once per job)": lambda: views.stage_edges(js.tasks),
        "timeline (every attempt of 10,000 tasks)": lambda: views.timeline(js.tasks, 0.0, 700.0),
        "verification (page of 100 of 10,000 tasks, evidence opened anew, summary over all)":
            lambda: evidence.verification_view(js.plan.verification, js.tasks, 0.0, js.stats, {},
                                               lambda tid, t: t.verified, lambda tid, t: None),
        "verification, evidence cached (rebuilt every 2 s while the tab is open)":
            lambda: evidence.verification_view(js.plan.verification, js.tasks, 0.0, js.stats, {},
                                               lambda tid, t: t.verified, lambda tid, t: None, cache._open_evidence),
    }
    out = {}
    for name, build in cases.items():
        times, size = [], 0
        for _ in range(repeat):
            t0 = time.perf_counter()
            data = build()
            size = len(json.dumps(data))
            times.append((time.perf_counter() - t0) * 1000)
        out[name] = {"ms_median": round(statistics.median(times), 2), "json_bytes": size}
    return out


def serve_synthetic(members: int, tasks: int) -> tuple[str, SyntheticNode, object]:
    """The real DashboardService and ControlApi over a SyntheticNode, on a free loopback port, in a thread."""
    import trio

    from p2pcompute.dashboard.service import DashboardService
    from p2pcompute.node.api import ControlApi, serve_api

    node = SyntheticNode(members, tasks, verified=True)
    dash = DashboardService()
    node.services["dashboard"] = dash
    dash.attach(node)
    for t in range(0, 3600, 10):
        dash.history.add(float(t) - 3600, {"alive": members - 60 + (t // 600), "suspect": 3, "dead": 50, "left": 7})
    box: dict = {}
    ready = threading.Event()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(dash.run)
            box["url"] = await nursery.start(serve_api, ControlApi(node, "t" * 64), "127.0.0.1", 0)
            box["cancel"] = nursery.cancel_scope
            box["token"] = trio.lowlevel.current_trio_token()
            ready.set()

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    ready.wait(30)
    return box["url"], node, box


def part_load(members: int, tasks: int, repeat: int, chromium: str) -> dict:
    import httpx
    import trio
    from playwright.sync_api import sync_playwright

    url, node, box = serve_synthetic(members, tasks)
    ticket = httpx.post(url + "/v1/dashboard/ticket", headers={"authorization": "Bearer " + "t" * 64}).json()
    pages = {
        "network": ("#/network", "#members tbody tr:nth-child(100)"),
        "jobs": ("#/jobs", "#jobs tbody tr:nth-child(50)"),
        "job (10,000 tasks)": ("#/job/jsynthetic", "#tasks tbody tr:nth-child(100)"),
        "job timeline (10,000 tasks)": ("#/job/jsynthetic/timeline", "#timeline[data-bars]"),
        "job stages (DAG)": ("#/job/jsynthetic/dag", "#dag rect"),
        "job verification (10,000 tasks)": ("#/job/jsynthetic/verification", "#evidence > tbody > tr:nth-child(100)"),
        "machine": ("#/machine", "#protocols"),
    }
    out: dict = {}
    with sync_playwright() as p:
        b = browser.launch(p, chromium)
        page = b.new_page(viewport=browser.VIEWPORT)
        page.goto(url + ticket["path"])
        page.wait_for_selector("#members tbody tr", timeout=60 * MS)
        for name, (hash_, selector) in pages.items():
            times = []
            for _ in range(repeat):
                page.goto("about:blank")
                t0 = time.perf_counter()
                page.goto(url + "/dashboard" + hash_)
                page.wait_for_selector(selector, timeout=60 * MS)
                times.append((time.perf_counter() - t0) * 1000)
            out[name] = {"ms_median": round(statistics.median(times), 1), "ms_max": round(max(times), 1)}
        page.goto(url + "/dashboard#/job/jsynthetic/timeline")
        page.wait_for_selector("#timeline[data-bars]", timeout=60 * MS)
        out["bars drawn"] = int(page.get_attribute("#timeline", "data-bars"))
        b.close()
    trio.from_thread.run_sync(box["cancel"].cancel, trio_token=box["token"])
    return out


def part_live(window: float, chromium: str) -> dict:
    from playwright.sync_api import sync_playwright

    from p2pcompute.node.client import ControlClient
    from p2pcompute.node.devnet import Devnet

    out: dict = {"window_s": window}
    with tempfile.TemporaryDirectory(prefix="dash-bench-") as tmp:
        os.chdir(tmp)
        net = Devnet(Path(tmp) / "net", 3)
        try:
            net.start()
            assert net.wait_connected(60)
            proc = psutil.Process(net.peers[0].process.pid)
            client = ControlClient(net.peers[0].data_dir)
            time.sleep(5)  # past the start-up's bursts

            def measure(label: str) -> None:
                c0, b0 = proc.cpu_times(), client.status()["dashboard"]["event_bytes"]
                t0 = time.monotonic()
                time.sleep(window)
                c1, b1 = proc.cpu_times(), client.status()["dashboard"]["event_bytes"]
                dt = time.monotonic() - t0
                out[label] = {"cpu_percent": round(100 * (c1.user + c1.system - c0.user - c0.system) / dt, 2),
                              "event_bytes_per_s": round((b1 - b0) / dt, 1)}

            measure("no dashboard")
            with sync_playwright() as p:
                b = browser.launch(p, chromium)
                page = b.new_page(viewport=browser.VIEWPORT)
                page.goto(browser.login_url(net.peers[0].data_dir))
                page.wait_for_selector("#members tbody tr", timeout=60 * MS)
                measure("network page open")
                page.click("nav a[data-page=jobs]")
                page.wait_for_selector("#jobs", timeout=60 * MS)
                measure("jobs page open")
                page.click("nav a[data-page=machine]")
                page.wait_for_selector("#protocols", timeout=60 * MS)
                measure("machine page open")
                b.close()
            client.close()
        finally:
            net.stop()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="views,load,live")
    ap.add_argument("--members", type=int, default=1000)
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--window", type=float, default=30.0)
    ap.add_argument("--json", action="store_true", help="print only the JSON document")
    args = ap.parse_args()
    parts = args.parts.split(",")
    chromium, why = browser.find_chromium()
    if chromium is None and set(parts) & {"load", "live"}:
        print(f"no browser: {why}", file=sys.stderr)
        return 1
    result: dict = {"members": args.members, "tasks": args.tasks, "cpus": os.cpu_count()}
    if "views" in parts:
        result["views"] = part_views(args.members, args.tasks, args.repeat)
    if "load" in parts:
        result["load"] = part_load(args.members, args.tasks, args.repeat, chromium)
    if "live" in parts:
        result["live"] = part_live(args.window, chromium)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
