"""Who may use the dashboard: one-time login tickets, session cookies, the same-origin check (pure).

Theory of operation
-------------------
The control API's bearer token (``api_token``, mode 0600) is what proves a
caller is the daemon's owner. A browser cannot send that header by itself, so
``p2pcompute dashboard`` (which reads the token) asks the daemon for a
*ticket*: a random string good for one login within ``TICKET_TTL`` seconds.
The link ``/dashboard/login?ticket=T`` redeems it once for a *session*: a
random value the browser keeps in an HttpOnly, SameSite=Strict cookie. A
request carrying a live session's cookie is then served as one carrying the
token, except that a request which may change state (any method but GET and
HEAD) must also come from the page's own origin: its ``Origin`` header (or,
without one, ``Sec-Fetch-Site: same-origin``) must name the host it was sent
to. A cross-site page can neither read the cookie nor have it sent (SameSite),
and the origin check refuses what a browser sends without SameSite support.

Cookies are not per-port, and several daemons on one machine (a devnet) share
``127.0.0.1``: each daemon names its cookie after a short tag of its own
(``COOKIE_PREFIX + tag``) and accepts any cookie whose value is one of its
live sessions. Everything is bounded: at most ``MAX_TICKETS`` tickets and
``MAX_SESSIONS`` sessions (the oldest go first); a session lapses after
``SESSION_IDLE`` seconds unused. Tickets and sessions live in memory only: a
restarted daemon (which also has a new token) forgets them.

Time comes in as ``now``; the secrets come from an injected ``token``
function (``secrets.token_urlsafe`` by default: a session is a credential,
so it is never drawn from a seeded generator).
"""

from __future__ import annotations

import hmac
import secrets
from collections import OrderedDict
from collections.abc import Callable, Mapping

TICKET_TTL = 300.0
SESSION_IDLE = 12 * 3600.0
MAX_TICKETS = 32
MAX_SESSIONS = 64
COOKIE_PREFIX = "p2pcompute_session_"
SAFE_METHODS = frozenset({"GET", "HEAD"})


class Access:
    def __init__(self, tag: str, token: Callable[[int], str] = secrets.token_urlsafe) -> None:
        """``tag``: this daemon's part of the cookie name (letters and digits)."""
        if not tag.isalnum():
            raise ValueError("a cookie tag is letters and digits")
        self.cookie_name = COOKIE_PREFIX + tag
        self._token = token
        self._tickets: OrderedDict[str, float] = OrderedDict()   # ticket -> expires at
        self._sessions: OrderedDict[str, float] = OrderedDict()  # session -> last used
        self.counts = {"tickets": 0, "logins": 0, "refused_tickets": 0, "refused_origin": 0}

    # --- tickets and logins ---------------------------------------------------------------

    def issue_ticket(self, now: float) -> str:
        self._expire(now)
        ticket = self._token(32)
        self._tickets[ticket] = now + TICKET_TTL
        while len(self._tickets) > MAX_TICKETS:
            self._tickets.popitem(last=False)
        self.counts["tickets"] += 1
        return ticket

    def redeem(self, ticket: str, now: float) -> str | None:
        """A new session for a live ticket (which is used up), or None."""
        self._expire(now)
        found = next((t for t in self._tickets if hmac.compare_digest(t.encode(), ticket.encode())), None)
        if found is None:
            self.counts["refused_tickets"] += 1
            return None
        del self._tickets[found]
        session = self._token(32)
        self._sessions[session] = now
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        self.counts["logins"] += 1
        return session

    def set_cookie(self, session: str) -> str:
        """The ``Set-Cookie`` value for a session (no Max-Age: it ends with the browser, or the daemon)."""
        return f"{self.cookie_name}={session}; Path=/; HttpOnly; SameSite=Strict"

    def logout(self, headers: Mapping[str, str]) -> None:
        for value in _cookies(headers.get("cookie", "")).values():
            self._sessions.pop(value, None)

    @property
    def sessions(self) -> int:
        return len(self._sessions)

    # --- requests -------------------------------------------------------------------------

    def check(self, method: str, headers: Mapping[str, str], now: float) -> str | None:
        """None if a session cookie authorises this request, else why not. ``headers``: lower-case names."""
        self._expire(now)
        session = next((v for k, v in _cookies(headers.get("cookie", "")).items()
                        if k.startswith(COOKIE_PREFIX) and v in self._sessions), None)
        if session is None:
            return "no session: open the link `p2pcompute dashboard` prints"
        if method.upper() not in SAFE_METHODS:
            reason = cross_origin(headers)
            if reason:
                self.counts["refused_origin"] += 1
                return reason
        self._sessions[session] = now
        self._sessions.move_to_end(session)
        return None

    def _expire(self, now: float) -> None:
        for ticket in [t for t, until in self._tickets.items() if until <= now]:
            del self._tickets[ticket]
        while self._sessions and next(iter(self._sessions.values())) + SESSION_IDLE <= now:
            self._sessions.popitem(last=False)


def cross_origin(headers: Mapping[str, str]) -> str | None:
    """None when the request came from a page of the host it was sent to, else why it is refused."""
    host = headers.get("host", "")
    origin = headers.get("origin")
    if origin is not None:
        scheme, _, rest = origin.partition("://")
        if scheme in ("http", "https") and rest and rest == host:
            return None
        return f"cross-origin request refused (Origin {origin[:80]!r} is not this dashboard's)"
    if headers.get("sec-fetch-site") == "same-origin":
        return None
    return "a request that changes state must come from the dashboard's own page (no Origin header)"


def _cookies(header: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in header.split(";")[:64]:
        name, sep, value = part.strip().partition("=")
        if sep:
            out[name] = value.strip('"')
    return out
