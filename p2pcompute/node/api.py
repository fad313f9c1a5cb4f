"""The local control API: HTTP + JSON on 127.0.0.1, served by hypercorn on trio.

Every request must carry ``Authorization: Bearer <token>``, the token being
the contents of ``<data dir>/api_token`` (mode 0600): other local users
cannot read it, so they cannot drive the daemon. The daemon writes its URL
to ``<data dir>/api`` (as kubo writes ``$IPFS_PATH/api``) and removes it on
exit; ``client.py`` finds a daemon from its data dir alone.

Endpoints (more arrive with later issues):
    GET  /v1/status      peer ID, addresses, uptime, resources, counts
    GET  /v1/peers       the peer table
    POST /v1/ping        {"peer": ID} -> {"rtt_ms": float}
    POST /v1/connect     {"address": multiaddr} -> {"peer_id": ID}
    GET  /v1/config      the settings in force and where each came from
    GET  /metrics        Prometheus text format
Services (``node/service.py``) add their own routes, e.g. ``/v1/dht/...``.
Routes are ``handler(body, query) -> (status, content type, payload)``;
raise ``HttpError`` (or a ``UserError``: 400) to refuse. A route path may end
in a parameter, ``/data/{handle}``: it matches one more path segment (exact
paths win), passed in ``query`` under that name. A handler marked with
``public_route`` is served without the bearer token (it authorises the
request itself, e.g. a signed link), is called as ``handler(body, query,
headers)`` with the request headers (lower-case names) and may return a
fourth element, extra response headers. Public routes take no body (one is
refused with 413 before any of it is read), at most ``MAX_PUBLIC`` run at
once (then 503), and one client IP gets ``PUBLIC_RATE`` requests a second
after a burst of ``PUBLIC_BURST`` (then 429). Any route may stream: a payload that is an async function
``payload(write)`` is called to ``await write(chunk)`` its body (the route
gives its own content-length, if any). A client that goes away (disconnect)
cancels its request, handler and stream alike. Any route may return a fourth
element, extra response headers.

A browser cannot send the bearer token: when a ``dashboard`` service runs
(p2pcompute/dashboard/), a request without the token is also served if its
session cookie is live and, for a method other than GET/HEAD, it comes from
the page's own origin (``authorize_session``; dashboard/access.py). Never on
the links listener: there, a route marked ``control_only`` is not served.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import os
import secrets
from pathlib import Path
from typing import Any

import trio

from ..errors import P2PComputeError, UserError
from .config import API_FILE, TOKEN_FILE  # noqa: F401 (imported from here by the daemon and tests)
from .identity import PeerId
from .metrics import metrics_text
from .ratelimit import PeerRateLimiter
from .node import Node

log = logging.getLogger(__name__)

MAX_BODY = 64 << 20  # loopback and token only; routes bound what they accept
MAX_PUBLIC = 16  # public (tokenless) requests served at once
PUBLIC_RATE, PUBLIC_BURST = 20.0, 60  # public requests per second per client IP, after a burst


def create_token(data_dir: Path) -> str:
    """A fresh token for this run of the daemon, in ``api_token`` (mode 0600; removed on exit).

    A token left by an earlier run is replaced, never reused: it may have
    been readable by others (kubo and ssh refuse such files; a token has
    nothing to keep, so we make a new one).
    """
    path = data_dir / TOKEN_FILE
    path.unlink(missing_ok=True)
    token = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ControlApi:
    """A small ASGI application over a Node."""

    def __init__(self, node: Node, token: str, *, public_only: bool = False, config: Any = None) -> None:
        """``public_only``: serve nothing but the ``public_route`` handlers (the links listener).
        ``config``: the daemon's ``Config``, shown by ``GET /v1/config``."""
        self.node = node
        self.config = config
        self._token = token.encode()
        self.public_only = public_only
        self._public_slots = trio.Semaphore(MAX_PUBLIC)
        self._public_rate = PeerRateLimiter(PUBLIC_RATE, PUBLIC_BURST, max_wait=0.0)
        self.routes = {
            ("GET", "/v1/status"): self.status,
            ("GET", "/v1/peers"): self.peers,
            ("POST", "/v1/ping"): self.ping,
            ("POST", "/v1/connect"): self.connect,
            ("GET", "/v1/config"): self.config_in_force,
            ("GET", "/metrics"): self.metrics,
        }
        for service in node.services.values():
            for key, route in service.api_routes().items():
                self.routes[key] = route
        if public_only:
            self.routes = {key: route for key, route in self.routes.items()
                           if getattr(route, "public", False) and not getattr(route, "control_only", False)}
        dashboard = None if public_only else node.services.get("dashboard")
        self._sessions = getattr(dashboard, "authorize_session", None)  # (method, headers) -> None | why not

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        async with trio.open_nursery() as nursery:  # a client that goes away cancels its request
            await self._serve(scope, receive, send, nursery)
            nursery.cancel_scope.cancel()

    async def _serve(self, scope: dict, receive: Any, send: Any, nursery: trio.Nursery) -> None:
        extra: list = []
        slot = False
        try:
            try:
                handler, query = self._route(scope["method"], scope["path"], _query(scope))
            except HttpError:
                if not self.public_only:
                    self._authorize(scope)  # no route: say so to token holders only
                raise
            public = getattr(handler, "public", False)
            if not public:
                self._authorize(scope)
                body = await _read_body(receive)
                nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
                status, content_type, payload, *extra = await handler(body, query)
            else:
                client = (scope.get("client") or ("?", 0))[0]
                if self._public_rate.reserve(client, trio.current_time()) is None:
                    raise HttpError(429, "too many requests from this address; slow down")
                headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
                if headers.get("content-length", "0").strip() != "0" or "transfer-encoding" in headers:
                    raise HttpError(413, "this route takes no request body")
                try:
                    self._public_slots.acquire_nowait()
                except trio.WouldBlock:
                    raise HttpError(503, "busy: too many requests at once; try again shortly") from None
                slot = True
                nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
                status, content_type, payload, *extra = await handler(b"", query, headers)
        except HttpError as exc:
            status, content_type, payload = exc.status, "application/json", _json({"error": str(exc)})
        except UserError as exc:
            status, content_type, payload = 400, "application/json", _json({"error": str(exc)})
        except P2PComputeError as exc:
            status, content_type, payload = 502, "application/json", _json({"error": str(exc)})
        except Exception as exc:
            log.exception("control API %s %s failed", scope["method"], scope["path"])
            status, content_type, payload = 500, "application/json", _json({"error": f"internal: {exc}"})
        try:
            await _respond(send, status, content_type, payload, extra[0] if extra else ())
        except (trio.BusyResourceError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            # a client that sent a body we refused unread: the server is tearing its connection down
            log.debug("control API: answer to %s %s not sent: %r", scope["method"], scope["path"], exc)
        finally:
            if slot:
                self._public_slots.release()

    def _route(self, method: str, path: str, query: dict) -> tuple[Any, dict]:
        """The handler for ``method path`` (exact paths first, then ``/prefix/{name}``) and its query."""
        handler = self.routes.get((method, path))
        if handler is not None:
            return handler, query
        head, _, segment = path.rpartition("/")
        methods = {m for m, p in self.routes if p == path}
        if segment:
            for (m, p), route in self.routes.items():
                if p.startswith(head + "/{") and p.endswith("}") and "/" not in p[len(head) + 1:]:
                    if m == method:
                        return route, query | {p[len(head) + 2:-1]: segment}  # ASGI paths arrive decoded
                    methods.add(m)
        raise HttpError(405 if methods else 404, f"no {method} {path}")

    def _authorize(self, scope: dict) -> None:
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"authorization", b"")
        if given.startswith(b"Bearer ") and hmac.compare_digest(given[7:].strip(), self._token):
            return
        if self._sessions is not None and b"cookie" in headers and not given:
            why = self._sessions(scope["method"], {k.decode("latin-1").lower(): v.decode("latin-1")
                                                   for k, v in scope.get("headers") or []})
            if why is None:
                return
            raise HttpError(403 if "origin" in why.lower() else 401, why)
        raise HttpError(401, "missing or wrong token: send 'Authorization: Bearer <contents of api_token>'")

    # --- endpoints --------------------------------------------------------------------

    async def status(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        return 200, "application/json", _json(self.node.status())

    async def peers(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        return 200, "application/json", _json({"peers": self.node.peers()})

    async def ping(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        peer = _peer_arg(_parse(body), "peer")
        rtt = await self.node.ping(peer)
        return 200, "application/json", _json({"peer": str(peer), "rtt_ms": round(rtt * 1000, 3)})

    async def connect(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        address = _parse(body).get("address")
        if not isinstance(address, str):
            raise HttpError(400, "give {\"address\": \"/ip4/.../tcp/.../p2p/<peer ID>\"}")
        peer = await self.node.transport.connect(address)
        return 200, "application/json", _json({"peer_id": str(peer)})

    async def config_in_force(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        if self.config is None:
            raise HttpError(404, "this daemon does not report its configuration")
        return 200, "application/json", _json(self.config.describe())

    async def metrics(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        return 200, "text/plain; version=0.0.4; charset=utf-8", metrics_text(self.node)


def public_route(handler: Any) -> Any:
    """Mark a route as served without the bearer token (see the module doc)."""
    getattr(handler, "__func__", handler).public = True
    return handler


def _query(scope: dict) -> dict[str, str]:
    from urllib.parse import parse_qsl

    return dict(parse_qsl((scope.get("query_string") or b"").decode("latin-1")))


def _json(data: Any) -> bytes:
    """Strict JSON: a NaN, an infinity or a huge int (from a peer's record, say) becomes null."""
    try:
        return json.dumps(data, allow_nan=False).encode()
    except ValueError:
        return json.dumps(_finite(data), allow_nan=False).encode()


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int) and not isinstance(value, bool):
        return value if -(2**63) <= value < 2**64 else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def json_response(data: Any, status: int = 200) -> tuple[int, str, bytes]:
    """What a route returns for a JSON answer (services use it too)."""
    return status, "application/json", _json(data)


def parse_json_body(body: bytes) -> dict:
    """A request's JSON object, or HttpError 400 (services use it too)."""
    return _parse(body)


def _parse(body: bytes) -> dict:
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        raise HttpError(400, "body is not JSON") from None
    except RecursionError:
        raise HttpError(400, "body is JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise HttpError(400, "body must be a JSON object")
    return data


def _peer_arg(data: dict, name: str) -> PeerId:
    try:
        return PeerId.from_string(str(data.get(name, "")))
    except ValueError as exc:
        raise HttpError(400, str(exc)) from None


async def _read_body(receive: Any) -> bytes:
    chunks, size = [], 0
    while True:
        event = await receive()
        chunk = event.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise HttpError(413, f"request body over {MAX_BODY} bytes")
        chunks.append(chunk)
        if not event.get("more_body"):
            return b"".join(chunks)


async def _cancel_on_disconnect(receive: Any, scope: trio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


async def _respond(send: Any, status: int, content_type: str, payload: Any, extra: Any) -> None:
    headers = [(b"content-type", content_type.encode())]
    if isinstance(payload, (bytes, bytearray)):
        headers.append((b"content-length", str(len(payload)).encode()))
    headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    if isinstance(payload, (bytes, bytearray)):
        await send({"type": "http.response.body", "body": payload})
        return

    async def write(chunk: bytes) -> None:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})

    try:
        await payload(write)
    except (P2PComputeError, OSError) as exc:  # headers are out: all we can do is cut the answer short
        log.warning("control API: answer cut short: %s", exc)
        return
    await send({"type": "http.response.body", "body": b""})


async def serve_api(app: ControlApi, host: str, port: int, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``app``; ``task_status.started(url)`` with the bound URL."""
    from hypercorn.config import Config as HyperConfig
    from hypercorn.trio import serve

    config = HyperConfig()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("p2pcompute.api.http")
    config.graceful_timeout = 1.0

    class _Status:
        def started(self, value: Any = None) -> None:
            task_status.started(value[0] if value else f"http://{host}:{port}")

    try:
        await serve(app, config, task_status=_Status(), mode="asgi")
    except* OSError as group:  # hypercorn binds inside its own nurseries
        exc = group.exceptions[0]
        while isinstance(exc, BaseExceptionGroup):
            exc = exc.exceptions[0]
        raise UserError(f"control API cannot listen on {host}:{port}: {exc.strerror or exc}; "
                        "set another api_port (0 picks a free one)") from None
