"""dashboard/access.py: tickets are one-time and expire, sessions are bounded, the origin check (pure)."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from p2pcompute.dashboard.access import (MAX_SESSIONS, MAX_TICKETS, SESSION_IDLE, TICKET_TTL, Access,
                                         cross_origin)

HOST = "127.0.0.1:8000"


def counter_tokens():
    n = itertools.count()
    return lambda size: f"t{next(n):04d}"


def cookie(access: Access, session: str) -> dict:
    return {"cookie": f"other=1; {access.cookie_name}={session}", "host": HOST}


def test_a_ticket_logs_in_once_and_its_session_authorises_reads():
    a = Access("abc", counter_tokens())
    ticket = a.issue_ticket(0.0)
    session = a.redeem(ticket, 1.0)
    assert session is not None
    assert a.redeem(ticket, 2.0) is None                       # used up
    assert a.check("GET", cookie(a, session), 3.0) is None
    assert "no session" in a.check("GET", {"host": HOST}, 3.0)
    assert "no session" in a.check("GET", cookie(a, "forged"), 3.0)
    assert a.set_cookie(session).startswith(f"{a.cookie_name}={session};")
    assert "HttpOnly" in a.set_cookie(session) and "SameSite=Strict" in a.set_cookie(session)


def test_a_ticket_expires_and_a_session_lapses_when_unused():
    a = Access("abc", counter_tokens())
    assert a.redeem(a.issue_ticket(0.0), TICKET_TTL + 0.1) is None
    session = a.redeem(a.issue_ticket(100.0), 101.0)
    assert a.check("GET", cookie(a, session), 101.0 + SESSION_IDLE - 1) is None  # use keeps it alive
    assert a.check("GET", cookie(a, session), 101.0 + 2 * SESSION_IDLE - 2) is None
    assert a.check("GET", cookie(a, session), 101.0 + 3 * SESSION_IDLE) is not None


def test_state_changes_need_the_same_origin():
    a = Access("abc", counter_tokens())
    session = a.redeem(a.issue_ticket(0.0), 0.0)
    headers = cookie(a, session)
    assert "cross-origin" in a.check("POST", headers | {"origin": "http://evil.example"}, 1.0)
    assert "cross-origin" in a.check("POST", headers | {"origin": "http://127.0.0.1:8001"}, 1.0)
    assert "own page" in a.check("POST", headers, 1.0)
    assert a.check("POST", headers | {"origin": f"http://{HOST}"}, 1.0) is None
    assert a.check("POST", headers | {"sec-fetch-site": "same-origin"}, 1.0) is None
    assert a.check("POST", headers | {"sec-fetch-site": "cross-site"}, 1.0) is not None
    assert a.counts["refused_origin"] == 4


def test_tickets_and_sessions_are_bounded_oldest_first():
    a = Access("abc", counter_tokens())
    tickets = [a.issue_ticket(0.0) for _ in range(MAX_TICKETS + 5)]
    assert a.redeem(tickets[0], 1.0) is None
    sessions = [a.redeem(a.issue_ticket(1.0), 1.0) for _ in range(MAX_SESSIONS + 3)]
    assert a.sessions == MAX_SESSIONS
    assert a.check("GET", cookie(a, sessions[0]), 2.0) is not None
    assert a.check("GET", cookie(a, sessions[-1]), 2.0) is None


def test_a_logout_ends_the_session():
    a = Access("abc", counter_tokens())
    session = a.redeem(a.issue_ticket(0.0), 0.0)
    a.logout(cookie(a, session))
    assert a.check("GET", cookie(a, session), 1.0) is not None


@given(st.dictionaries(st.sampled_from(["cookie", "origin", "host", "sec-fetch-site", "referer"]),
                       st.text(max_size=200)), st.sampled_from(["GET", "POST", "PUT", "DELETE", "get"]))
def test_hostile_headers_never_raise_and_never_authorise_without_a_session(headers, method):
    a = Access("abc", counter_tokens())
    a.redeem(a.issue_ticket(0.0), 0.0)   # a live session ("t0001") that the headers do not know
    reason = a.check(method, headers, 1.0)
    assert reason is None or isinstance(reason, str)
    if "t0001" not in headers.get("cookie", ""):
        assert reason is not None
    assert cross_origin(headers) is None or isinstance(cross_origin(headers), str)
