"""The dashboard service: the pages, their data and live updates, on the control API's own listener.

Theory of operation
-------------------
A ``Service`` like the others (node/service.py): it adds routes to the
control API and a sampler to the node's nursery; it changes nothing in the
protocols. Routes:

    GET  /dashboard                     the page (public: without a session it explains how to get in)
    GET  /dashboard/static/{name}       app.js, app.css (public, package data)
    GET  /dashboard/login?ticket=T      a one-time ticket -> a session cookie, then the page (public)
    POST /v1/dashboard/ticket           a ticket and the login path (``p2pcompute dashboard``; the token)
    GET  /dashboard/api/{view}          hello, network, jobs, data, machine (JSON; paging in the query)
    GET  /dashboard/api/job/{id}        one job (``tab=verification``: with its verification panel, evidence.py);
                                        ``/dashboard/api/timeline/{id}`` its attempts per peer;
                                        ``/dashboard/api/task/{id}?task=T`` one task in full
    GET  /dashboard/events?view=V&...   server-sent events: ``view`` (the page's data, when it changed)
                                        and ``tick`` (the header's counts) every ``interval`` seconds

The public routes are never served on the links listener (``control_only``).
Every other route, and every route of the control API, takes the bearer token
or a session cookie (access.py; api.py asks ``authorize_session``); one that
changes state (submitting and cancelling go to the scheduler's own
``POST /v1/jobs`` and ``POST /v1/jobs/cancel/{id}``) also needs the same
origin. The pages are plain HTML, CSS and JavaScript in ``static/``: no
build step, nothing fetched from elsewhere.

The sampler runs every ``interval`` seconds: members by state into the
hour's history, the /metrics counters into rates, this process's CPU and
memory. While a page is open (a stream runs), it also pings a few connected
peers in turn for their round-trip time. At most ``MAX_STREAMS`` event
streams run at once; each builds its view from views.py (pure, paged).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import itertools
import json
import logging
import os
from collections import OrderedDict
from typing import Any

import psutil
import trio

from ..node.api import HttpError, json_response, public_route
from . import evidence, views
from .access import Access
from .history import MemberHistory, Rates

log = logging.getLogger(__name__)

MAX_STREAMS = 8
KEEPALIVE_S = 15.0
RTT_PEERS_PER_ROUND = 4
RTT_EVERY = 3             # sampler rounds between pings
MAX_RTTS = 4096
MAX_EDGES = 16          # jobs whose stage graph is kept
MAX_OPENED = 2048       # tasks' opened evidence kept (it does not change once a task is accepted)
STATIC = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
PAGE_HEADERS = [("cache-control", "no-store"), ("x-frame-options", "DENY"), ("x-content-type-options", "nosniff"),
                ("content-security-policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"),
                ("referrer-policy", "no-referrer")]
LOGIN_REFUSED = b"""<!doctype html><meta charset=utf-8><title>p2pcompute dashboard</title>
<body style="font-family:sans-serif;max-width:40em;margin:3em auto">
<h1>This login link is used up or expired</h1>
<p>A link works once, within five minutes. Run <code>p2pcompute dashboard</code> on the daemon's machine
for a new one.</p></body>"""


def control_only(handler: Any) -> Any:
    """A public route that the links listener must not serve (api.py)."""
    handler.control_only = True
    return handler


class DashboardService:
    name = "dashboard"

    def __init__(self, interval: float = 2.0) -> None:
        self.interval = interval
        self.node: Any = None
        self.access: Access | None = None
        self.history = MemberHistory()
        self.rates = Rates()
        self.rtts: OrderedDict[str, float] = OrderedDict()
        self.proc: dict[str, Any] = {}
        self.streams = 0
        self.stats = {"events_sent": 0, "event_bytes": 0, "streams_refused": 0, "pings": 0}
        self._process = psutil.Process()
        self._rtt_turn = 0
        self._edges: OrderedDict[tuple[str, int], dict] = OrderedDict()   # (job, tasks) -> stage graph
        self._opened: OrderedDict[bytes, dict | None] = OrderedDict()    # evidence digest -> opened

    # --- Service ----------------------------------------------------------------------------

    def attach(self, node: Any) -> None:
        self.node = node
        self.access = Access(tag="".join(c for c in str(node.peer_id)[-10:] if c.isalnum()) or "p")

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self._process.cpu_percent(None)
        psutil.cpu_percent(None)
        task_status.started()
        rounds = 0
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    self.sample(trio.current_time())
                    if self.streams and rounds % RTT_EVERY == 0:
                        nursery.start_soon(self._ping_some)
                except Exception:  # a bug in a view must not stop the daemon
                    log.exception("dashboard sampler failed")
                rounds += 1
                await trio.sleep(self.interval)

    def status(self) -> dict[str, Any]:
        return {"streams": self.streams, "sessions": self.access.sessions if self.access else 0,
                **self.stats, **(self.access.counts if self.access else {})}

    def api_routes(self) -> dict:
        return {("GET", "/dashboard"): self._page, ("GET", "/dashboard/"): self._page,
                ("GET", "/dashboard/static/{name}"): self._static, ("GET", "/dashboard/login"): self._login,
                ("POST", "/v1/dashboard/ticket"): self._ticket,
                ("GET", "/dashboard/api/{view}"): self._api_view, ("GET", "/dashboard/api/job/{id}"): self._api_job,
                ("GET", "/dashboard/api/timeline/{id}"): self._api_timeline,
                ("GET", "/dashboard/api/task/{id}"): self._api_task, ("GET", "/dashboard/events"): self._events}

    def authorize_session(self, method: str, headers: dict[str, str]) -> str | None:
        """For api.py: None when the request's session cookie (and, to change state, its origin) will do."""
        if self.access is None:
            return "the dashboard is starting"
        return self.access.check(method, headers, trio.current_time())

    # --- sampling ---------------------------------------------------------------------------

    def sample(self, now: float) -> None:
        status = self.node.status()
        self.history.add(now, (status.get("membership") or {}).get("members") or {})
        stats = self.node.transport.stats
        counters: dict[str, float] = {"bytes_sent": stats.bytes_sent, "bytes_received": stats.bytes_received}
        for name, counts in (("messages_sent", stats.protocol_sent), ("messages_received", stats.protocol_received),
                             ("bytes_sent", stats.protocol_bytes_sent),
                             ("bytes_received", stats.protocol_bytes_received)):
            counters |= {f"{name}:{protocol}": n for protocol, n in counts.items()}
        bitswap = status.get("bitswap") or {}
        counters |= {f"bitswap:{k}": bitswap.get(k, 0) for k in ("messages_sent", "messages_received",
                                                                 "bytes_sent", "bytes_received")}
        self.rates.add(now, counters)
        memory = psutil.virtual_memory()
        with self._process.oneshot():
            self.proc = {"cpu_percent": self._process.cpu_percent(None), "rss": self._process.memory_info().rss,
                         "threads": self._process.num_threads(), "pid": self._process.pid,
                         "system_cpu_percent": psutil.cpu_percent(None), "cpus": psutil.cpu_count(),
                         "memory_total": memory.total, "memory_available": memory.available}

    async def _ping_some(self) -> None:
        connected = [str(p) for p in self.node.transport.connected_peers()]
        if not connected:
            return
        chosen = [connected[(self._rtt_turn + i) % len(connected)] for i in range(min(RTT_PEERS_PER_ROUND, len(connected)))]
        self._rtt_turn += len(chosen)

        async def one(peer: str) -> None:
            from ..node.identity import PeerId

            with trio.move_on_after(5):
                try:
                    rtt = await self.node.ping(PeerId.from_string(peer))
                except Exception as exc:  # an unreachable peer: no figure
                    log.debug("dashboard ping of %s failed: %s", peer, exc)
                    return
                self.stats["pings"] += 1
                self.rtts[peer] = round(rtt * 1000, 2)
                self.rtts.move_to_end(peer)
                while len(self.rtts) > MAX_RTTS:
                    self.rtts.popitem(last=False)

        async with trio.open_nursery() as nursery:
            for peer in chosen:
                nursery.start_soon(one, peer)

    # --- the data of each page --------------------------------------------------------------

    def _scheduler(self) -> Any:
        return self.node.services.get("scheduler")

    def view(self, name: str, query: dict) -> dict[str, Any]:
        """The JSON of one page (``network``, ``jobs``, ``data``, ``machine``, ``hello``); BadQuery if the query is bad."""
        now = trio.current_time()
        if name == "network":
            return views.network_view(self.node.status(), self.node.peers(), self.rtts, self.history.series(now), query)
        if name == "jobs":
            sched = self._scheduler()
            summaries = [sched.summary(j) for j in list(sched.jobs)] if sched else []
            return views.jobs_view(summaries, query)
        if name == "data":
            storage, bitswap = self.node.services.get("storage"), self.node.services.get("bitswap")
            pins = [str(c) for c in storage.blockstore.pins] if storage else []
            ledgers = [{"peer": str(p), "wants_received": lg.wants_received, "blocks_sent": lg.blocks_sent,
                        "bytes_sent": lg.bytes_sent, "waiting": len(lg.waiting)}
                       for p, lg in (bitswap.engine.ledgers.items() if bitswap else ())]
            return views.data_view(self.node.status(), pins, ledgers, query)
        if name == "machine":
            return views.machine_view(self.node.status(), self.proc, self.rates.rates)
        if name == "hello":
            return {"peer_id": str(self.node.peer_id), "base": os.getcwd(), "interval": self.interval,
                    "data_dir": str(getattr(self.node, "data_dir", "") or "")}
        raise HttpError(404, f"no dashboard view {name[:40]!r}")

    async def job(self, job_id: str) -> tuple[dict, dict, float, float, dict]:
        """(summary, tasks, created, clock, stats) of a job coordinated here, else looked up; HttpError 404."""
        sched = self._scheduler()
        if sched is None:
            raise HttpError(404, "this daemon runs no scheduler")
        job = sched.jobs.get(job_id)
        if job is not None:
            return sched.summary(job_id), job.js.tasks, job.js.created, trio.current_time(), dict(job.js.stats)
        found = await sched._find_job(job_id) if 0 < len(job_id) <= 128 else None
        if found is None:
            raise HttpError(404, f"no job {job_id[:128]} is coordinated here, nor known to its replicas")
        found = json.loads(json.dumps(found, default=str))
        tasks = views.tasks_from_described(found.get("tasks") or [])
        return found, tasks, float(found.get("created") or 0.0), float(found.get("clock") or 0.0), found.get("stats") or {}

    async def job_page(self, job_id: str, query: dict) -> dict[str, Any]:
        summary, tasks, created, clock, stats = await self.job(job_id)
        summary = {k: v for k, v in summary.items() if k not in ("tasks", "story")}
        key = (job_id, len(tasks))
        edges = self._edges.get(key)
        if edges is None:         # a job's plan does not change: its stage graph is worked out once
            edges = self._edges[key] = views.stage_edges(tasks)
            while len(self._edges) > MAX_EDGES:
                self._edges.popitem(last=False)
        page = views.job_view(summary, tasks, created, clock, stats, query, edges)
        page["strategy"] = self._strategy(job_id, tasks)
        if query.get("tab") == "verification":    # only while the panel is open: it opens signed evidence
            page["verification"] = self.verification(job_id, tasks, created, stats, query, page["strategy"])
        return page

    def _strategy(self, job_id: str, tasks: dict) -> str:
        """The job's verification strategy (``none``: not verified)."""
        sched = self._scheduler()
        job = sched.jobs.get(job_id) if sched is not None else None
        if job is not None:
            return str(getattr(getattr(job.js, "plan", None), "verification", "none"))
        first = next(iter(tasks.values()), None)
        return str(((getattr(first, "verification", None) or {}).get("strategy")) or "none")

    def verification(self, job_id: str, tasks: dict, created: float, stats: dict, query: dict,
                     strategy: str) -> dict[str, Any]:
        """The job page's verification panel (evidence.py), from the job here or ``describe``'s rows."""
        sched = self._scheduler()
        job = sched.jobs.get(job_id) if sched is not None else None
        verify = getattr(job.js, "verify", None) if job is not None else None
        if job is not None:
            def accepted_of(tid: str, t: Any) -> Any:
                return t.verified

            def live_of(tid: str, t: Any) -> Any:
                return verify.describe(tid)["verification"]["now"] if verify is not None else None
        else:
            def accepted_of(tid: str, t: Any) -> Any:
                return (getattr(t, "verification", None) or {}).get("accepted")

            def live_of(tid: str, t: Any) -> Any:
                return (getattr(t, "verification", None) or {}).get("now")
        venv = getattr(sched, "_venv", None)          # the newest bans and suspicions of this daemon
        bans = {str(p): b.reason for p, b in itertools.islice(reversed(venv.ledger.bans.items()), evidence.MAX_PEERS)} \
            if venv is not None else {}
        suspects = dict(itertools.islice(reversed((getattr(sched, "suspects", None) or {}).items()), evidence.MAX_PEERS))
        return evidence.verification_view(strategy, tasks, created, stats, query, accepted_of, live_of,
                                          self._open_evidence, bans, suspects)

    def _open_evidence(self, data: bytes | str | None) -> dict | None:
        """evidence.open_evidence, kept in a bounded cache (checking signatures costs about 0.1 ms each)."""
        if not data:
            return None
        raw = data.encode() if isinstance(data, str) else bytes(data)
        key = hashlib.blake2b(raw, digest_size=16).digest()
        if key in self._opened:
            self._opened.move_to_end(key)
            return self._opened[key]
        opened = self._opened[key] = evidence.open_evidence(data)
        while len(self._opened) > MAX_OPENED:
            self._opened.popitem(last=False)
        return opened

    # --- routes -----------------------------------------------------------------------------

    @public_route
    @control_only
    async def _page(self, body: bytes, query: dict, headers: dict) -> tuple:
        return 200, "text/html; charset=utf-8", _asset("index.html"), PAGE_HEADERS

    @public_route
    @control_only
    async def _static(self, body: bytes, query: dict, headers: dict) -> tuple:
        name = query.get("name", "")
        if name not in STATIC:
            raise HttpError(404, "no such file")
        return 200, STATIC[name], _asset(name), [("cache-control", "no-cache"), ("x-content-type-options", "nosniff")]

    @public_route
    @control_only
    async def _login(self, body: bytes, query: dict, headers: dict) -> tuple:
        session = self.access.redeem(query.get("ticket", "")[:100], trio.current_time())
        if session is None:
            return 403, "text/html; charset=utf-8", LOGIN_REFUSED, PAGE_HEADERS
        return 303, "text/plain", b"logged in\n", [("location", "/dashboard#/network"),
                                                    ("set-cookie", self.access.set_cookie(session)),
                                                    ("cache-control", "no-store"), ("referrer-policy", "no-referrer")]

    async def _ticket(self, body: bytes, query: dict) -> tuple:
        ticket = self.access.issue_ticket(trio.current_time())
        return json_response({"ticket": ticket, "path": f"/dashboard/login?ticket={ticket}"})

    async def _api_view(self, body: bytes, query: dict) -> tuple:
        try:
            return json_response(self.view(query.get("view", ""), query))
        except views.BadQuery as exc:
            raise HttpError(400, str(exc)) from None

    async def _api_job(self, body: bytes, query: dict) -> tuple:
        try:
            return json_response(await self.job_page(query.get("id", ""), query))
        except views.BadQuery as exc:
            raise HttpError(400, str(exc)) from None

    async def _api_timeline(self, body: bytes, query: dict) -> tuple:
        summary, tasks, created, clock, _ = await self.job(query.get("id", ""))
        return json_response(views.timeline(tasks, created, views.job_end(summary, tasks, clock)))

    async def _api_task(self, body: bytes, query: dict) -> tuple:
        _, tasks, created, clock, _ = await self.job(query.get("id", ""))
        task = query.get("task", "")
        if task not in tasks:
            raise HttpError(404, f"no task {task[:128]!r} in this job")
        return json_response(views.task_detail(task, tasks[task], created, clock))

    async def _events(self, body: bytes, query: dict) -> tuple:
        name = query.get("view", "network")
        if name == "job":
            build = lambda: self.job_page(query.get("job", ""), query)  # noqa: E731
        elif name in ("network", "jobs", "data", "machine"):
            async def build() -> dict:
                return self.view(name, query)
        else:
            raise HttpError(400, "view must be one of network, jobs, job, data, machine")
        try:
            first: list = [await build()]  # a bad query or an unknown job: refused now, not in the stream
        except views.BadQuery as exc:
            raise HttpError(400, str(exc)) from None
        if self.streams >= MAX_STREAMS:
            self.stats["streams_refused"] += 1
            raise HttpError(503, f"{MAX_STREAMS} dashboard pages are open already")

        async def stream(write: Any) -> None:
            self.streams += 1
            try:
                last_view = last_tick = b""
                quiet = 0.0
                while True:
                    chunk = b""
                    try:
                        data = _dumps(first.pop() if first else await build())
                    except HttpError as exc:
                        data = _dumps({"error": str(exc)})
                    if data != last_view:
                        chunk += b"event: view\ndata: " + data + b"\n\n"
                        last_view = data
                    tick = _dumps(self.tick())
                    if tick != last_tick:
                        chunk += b"event: tick\ndata: " + tick + b"\n\n"
                        last_tick = tick
                    if not chunk and quiet >= KEEPALIVE_S:
                        chunk = b": keepalive\n\n"
                    if chunk:
                        quiet = 0.0
                        await write(chunk)
                        self.stats["events_sent"] += chunk.count(b"\n\n")
                        self.stats["event_bytes"] += len(chunk)
                    await trio.sleep(self.interval)
                    quiet += self.interval
            finally:
                self.streams -= 1

        return 200, "text/event-stream", stream, [("cache-control", "no-store"), ("x-accel-buffering", "no")]

    def tick(self) -> dict[str, Any]:
        """The header's figures: members and jobs by state, connected peers, this process's CPU."""
        status = self.node.status()
        sched = status.get("scheduler") or {}
        return {"members": (status.get("membership") or {}).get("members") or {},
                "connected": status.get("connected_peers", 0), "jobs": sched.get("jobs", {}),
                "slots": sched.get("slots"), "cpu_percent": self.proc.get("cpu_percent")}


def _asset(name: str) -> bytes:
    return importlib.resources.files(__package__).joinpath("static", name).read_bytes()


def _dumps(data: Any) -> bytes:
    return json_response(data)[2]
