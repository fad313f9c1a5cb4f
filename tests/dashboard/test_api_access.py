"""The control API with the dashboard service, in process (ASGI calls, no sockets): the page is public, data
needs the token or a session cookie, a login ticket works once, state changes need the same origin, and the
links listener serves none of it."""

from __future__ import annotations

import json
from collections import OrderedDict
from types import SimpleNamespace

import trio

from p2pcompute.dashboard.service import DashboardService
from p2pcompute.dashboard.synthetic import SyntheticNode
from p2pcompute.node.api import ControlApi, json_response
from p2pcompute.scheduler.verification.reputation import Ledger

TOKEN = "t" * 64
HOST = "127.0.0.1:5001"


def make_app(public_only: bool = False, verified: bool = False) -> tuple[ControlApi, DashboardService, list]:
    node = SyntheticNode(20, 50, verified=verified)
    dash = DashboardService()
    posted: list = []

    class Jobs:  # a stand-in scheduler route that changes state
        def api_routes(self):
            async def submit(body, query):
                posted.append(body)
                return json_response({"ok": True})
            return {("POST", "/v1/jobs"): submit}

    node.services = {"scheduler": node.scheduler, "dashboard": dash}
    dash.attach(node)
    routes_node = type("N", (), {"services": {"dashboard": dash, "jobs": Jobs()}})()
    app = ControlApi(routes_node, TOKEN, public_only=public_only)
    return app, dash, posted


async def call(app, method: str, path: str, headers: dict | None = None, body: bytes = b"") -> tuple[int, dict, bytes]:
    path, _, qs = path.partition("?")
    scope = {"type": "http", "method": method, "path": path, "query_string": qs.encode(),
             "client": ("127.0.0.1", 5555),
             "headers": [(k.lower().encode(), v.encode()) for k, v in ({"host": HOST} | (headers or {})).items()]}
    sent: list = []
    events = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        if events:
            return events.pop(0)
        await trio.sleep_forever()

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    return (start["status"], {k.decode(): v.decode() for k, v in start["headers"]},
            b"".join(m.get("body", b"") for m in sent[1:]))


async def login(app) -> str:
    status, _, body = await call(app, "POST", "/v1/dashboard/ticket", {"authorization": f"Bearer {TOKEN}"})
    assert status == 200
    status, headers, _ = await call(app, "GET", json.loads(body)["path"])
    assert status == 303 and headers["location"].startswith("/dashboard")
    return headers["set-cookie"].split(";")[0]


async def test_the_page_is_public_and_its_data_is_not():
    app, _, _ = make_app()
    status, headers, body = await call(app, "GET", "/dashboard")
    assert status == 200 and b"p2pcompute dashboard" in body and "default-src 'self'" in headers["content-security-policy"]
    status, _, body = await call(app, "GET", "/dashboard/static/app.js")
    assert status == 200 and b"EventSource" in body
    assert (await call(app, "GET", "/dashboard/static/..%2Fservice.py"))[0] == 404
    for path in ("/dashboard/api/network", "/dashboard/api/job/jsynthetic", "/dashboard/events?view=network"):
        status, _, body = await call(app, "GET", path)
        assert status == 401, path
    status, _, _ = await call(app, "GET", "/dashboard/api/network", {"cookie": "p2pcompute_session_x=forged"})
    assert status == 401


async def test_a_login_link_sets_a_cookie_that_reads_data_and_works_once():
    app, dash, _ = make_app()
    status, _, body = await call(app, "POST", "/v1/dashboard/ticket", {"authorization": f"Bearer {TOKEN}"})
    path = json.loads(body)["path"]
    status, headers, _ = await call(app, "GET", path)
    cookie = headers["set-cookie"].split(";")[0]
    assert "HttpOnly" in headers["set-cookie"] and "SameSite=Strict" in headers["set-cookie"]
    assert (await call(app, "GET", path))[0] == 403                        # used up
    status, _, body = await call(app, "GET", "/dashboard/api/network?limit=5", {"cookie": cookie})
    assert status == 200 and json.loads(body)["total"] == 20 and len(json.loads(body)["rows"]) == 5
    status, _, body = await call(app, "GET", "/dashboard/api/job/jsynthetic?state=running", {"cookie": cookie})
    assert status == 200 and json.loads(body)["total"] == 50
    assert (await call(app, "GET", "/dashboard/api/network?limit=9999", {"cookie": cookie}))[0] == 400
    assert dash.status()["logins"] == 1


async def test_the_job_page_carries_its_verification_panel_only_when_asked():
    app, dash, _ = make_app(verified=True)
    auth = {"authorization": f"Bearer {TOKEN}"}
    ledger = Ledger()
    for i in range(150):
        ledger.ban(f"liar{i:03d}", "differs from a trusted result", float(i))
    dash.node.scheduler._venv = SimpleNamespace(ledger=ledger)
    dash.node.scheduler.suspects = OrderedDict(accused="accused by a coordinator")
    status, _, body = await call(app, "GET", "/dashboard/api/job/jsynthetic?limit=10", auth)
    assert status == 200 and "verification" not in json.loads(body) and not dash._opened
    assert json.loads(body)["strategy"] == "replicate(2, agree=2)"
    status, _, body = await call(app, "GET", "/dashboard/api/job/jsynthetic?tab=verification&state=done&limit=10", auth)
    panel = json.loads(body)["verification"]
    assert status == 200 and len(panel["rows"]) == 10 and len(dash._opened) == 10
    for row in panel["rows"]:
        agreed = [x["peer"] for x in row["executions"] if x["verdict"] == "agreed" and x["signed"]]
        assert row["status"] == "accepted" and len(set(agreed)) == 2
        assert sorted(agreed) == row["accepted"]["signers"] and row["accepted"]["signature_ok"]
    assert panel["summary"]["accepted"] == panel["summary"]["verified"] > 0
    assert len(panel["summary"]["banned_here"]) == 100 and ["liar149", "differs from a trusted result"] in \
        panel["summary"]["banned_here"]                      # the newest hundred
    assert panel["summary"]["suspected_here"] == [["accused", "accused by a coordinator"]]
    await call(app, "GET", "/dashboard/api/job/jsynthetic?tab=verification&state=done&limit=10", auth)
    assert len(dash._opened) == 10                          # opened once, then from the cache


async def test_a_state_change_with_the_cookie_needs_the_same_origin():
    app, _, posted = make_app()
    cookie = await login(app)
    status, _, body = await call(app, "POST", "/v1/jobs", {"cookie": cookie, "origin": "http://evil.example"}, b"{}")
    assert status == 403 and b"cross-origin" in body
    status, _, _ = await call(app, "POST", "/v1/jobs", {"cookie": cookie}, b"{}")
    assert status == 403
    assert posted == []
    status, _, _ = await call(app, "POST", "/v1/jobs", {"cookie": cookie, "origin": f"http://{HOST}"}, b"{}")
    assert status == 200 and posted == [b"{}"]
    status, _, _ = await call(app, "POST", "/v1/jobs", {"authorization": f"Bearer {TOKEN}"}, b"{}")
    assert status == 200                                                   # the token needs no origin


async def test_the_links_listener_serves_no_dashboard_route():
    app, _, _ = make_app(public_only=True)
    for path in ("/dashboard", "/dashboard/login?ticket=x", "/dashboard/static/app.js"):
        assert (await call(app, "GET", path))[0] == 404, path
    assert (await call(app, "GET", "/dashboard/api/network", {"cookie": "p2pcompute_session_x=y"}))[0] == 404


async def test_the_event_stream_sends_a_view_once_then_only_changes_and_keepalives(autojump_clock):
    app, dash, _ = make_app()
    bodies: list[bytes] = []
    enough = trio.Event()
    scope = {"type": "http", "method": "GET", "path": "/dashboard/events", "query_string": b"view=jobs&limit=5",
             "client": ("127.0.0.1", 5555), "headers": [(b"host", HOST.encode()),
                                                       (b"authorization", f"Bearer {TOKEN}".encode())]}
    requested = False

    async def receive():
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await enough.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            assert message["status"] == 200
            assert (b"content-type", b"text/event-stream") in message["headers"]
        elif message.get("body"):
            bodies.append(message["body"])
            if len(bodies) == 3:
                enough.set()

    with trio.fail_after(120):
        await app(scope, receive, send)
    first = bodies[0].decode()
    assert first.startswith("event: view\ndata: ") and "event: tick\ndata: " in first
    view = json.loads(first.split("data: ", 1)[1].split("\n", 1)[0])
    assert view["total"] == 201 and len(view["rows"]) == 5
    assert bodies[1:] == [b": keepalive\n\n"] * 2          # nothing changed: no view resent
    assert dash.streams == 0 and dash.stats["event_bytes"] == sum(map(len, bodies))


async def test_event_streams_are_bounded_and_checked_before_they_start():
    app, dash, _ = make_app()
    auth = {"authorization": f"Bearer {TOKEN}"}
    assert (await call(app, "GET", "/dashboard/events?view=nope", auth))[0] == 400
    assert (await call(app, "GET", "/dashboard/events?view=network&limit=0", auth))[0] == 400
    assert (await call(app, "GET", "/dashboard/events?view=job&job=missing", auth))[0] == 404
    dash.streams = 8
    status, _, body = await call(app, "GET", "/dashboard/events?view=network", auth)
    assert status == 503 and dash.stats["streams_refused"] == 1
