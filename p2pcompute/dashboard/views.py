"""The dashboard's data layer: what each page shows, built from the daemon's state (pure).

Every function takes plain data (the node's status and peer rows, job
summaries, a job's tasks) and returns a JSON-ready dict; nothing here reads a
clock or the network, so the bench (bench/bench_dashboard.py) feeds it
synthetic state of any size and the service (service.py) feeds it the live
one. Lists are paged (``offset``, ``limit``, at most ``MAX_PAGE`` rows) and a
job's timeline is bounded (``MAX_BARS``), so an answer stays small with 1000
members and 10,000 tasks; counts are over everything, rows over one page.

A task is anything with the attributes of scheduler/task_run.py's TaskRun
that are read here: ``spec.stage``, ``spec.deps``, ``state``, ``reason``,
``attempts`` (dicts with ``peer``, ``start``, ``end``, ``outcome``,
``message``, ``log``), ``attempts_dropped``, ``outputs`` and ``story``.
Attempt times are on the coordinator's clock; views show them relative to the
job's ``created`` time.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Mapping
from types import SimpleNamespace
from typing import Any

MAX_PAGE = 500
MAX_BARS = 20_000
MAX_ROWS = 16          # rows of one peer on a job's timeline
MEMBER_STATES = ("alive", "suspect", "dead", "left", "connected", "known")
TASK_STATES = ("waiting", "ready", "placing", "offered", "running", "fetching", "done", "skipped", "failed",
               "cancelled")
OUTCOMES = ("running", "ok", "failed", "lost", "revoked", "other")


class BadQuery(ValueError):
    """A page or filter argument that is out of range (the service answers 400)."""


def page_args(query: Mapping[str, str], default: int = 100) -> tuple[int, int]:
    """``offset`` and ``limit`` from a query, checked."""
    try:
        offset = int(query.get("offset", 0))
        limit = int(query.get("limit", default))
    except ValueError:
        raise BadQuery("offset and limit are whole numbers") from None
    if offset < 0 or not 0 < limit <= MAX_PAGE:
        raise BadQuery(f"offset >= 0 and 1 <= limit <= {MAX_PAGE}")
    return offset, limit


def _choice(query: Mapping[str, str], name: str, allowed: Iterable[str]) -> str | None:
    value = query.get(name) or None
    if value is not None and value not in allowed:
        raise BadQuery(f"{name} must be one of {', '.join(allowed)}")
    return value


# --- Network ---------------------------------------------------------------------------------

def network_view(status: Mapping[str, Any], peers: list[Mapping[str, Any]], rtts: Mapping[str, float],
                 history: Mapping[str, Any], query: Mapping[str, str]) -> dict[str, Any]:
    """This peer, the members (one page, filtered by ``state``, sorted by ``sort``), counts, the chart, the DHT."""
    offset, limit = page_args(query)
    state = _choice(query, "state", MEMBER_STATES)
    sort = _choice(query, "sort", ("state", "peer", "load", "free_slots", "rtt", "last_heard")) or "state"
    counts = Counter(p.get("state", "known") for p in peers)
    chosen = [p for p in peers if state is None or p.get("state") == state]
    order = {s: i for i, s in enumerate(MEMBER_STATES)}
    keys = {
        "state": lambda p: (order.get(p.get("state"), 9), p["peer_id"]),
        "peer": lambda p: p["peer_id"],
        "load": lambda p: -(p.get("load") or 0.0),
        "free_slots": lambda p: -(p.get("free_slots") or 0),
        "rtt": lambda p: rtts.get(p["peer_id"], float("inf")),
        "last_heard": lambda p: p.get("last_seen_s_ago") if p.get("last_seen_s_ago") is not None else float("inf"),
    }
    chosen.sort(key=keys[sort])
    rows = [{"peer_id": p["peer_id"], "state": p.get("state"), "connected": p.get("connected", False),
             "address": (p.get("addresses") or [""])[0], "cpus": p.get("cpus"), "memory": p.get("memory"),
             "arch": p.get("arch", ""), "opsets": p.get("opsets", []), "wasm": p.get("wasm"),
             "labels": p.get("labels", {}), "load": p.get("load"), "free_slots": p.get("free_slots"),
             "rtt_ms": rtts.get(p["peer_id"]), "last_heard_s": p.get("last_seen_s_ago")}
            for p in chosen[offset:offset + limit]]
    dht = status.get("dht") or {}
    sched = status.get("scheduler") or {}
    me = {"peer_id": status.get("peer_id"), "addresses": status.get("addresses", []),
          "uptime_s": status.get("uptime_s"), "resources": status.get("resources", {}),
          "slots": sched.get("slots"), "agent": status.get("agent")}
    return {"self": me, "total": len(peers), "counts": dict(counts), "matching": len(chosen),
            "offset": offset, "limit": limit, "state": state, "sort": sort, "rows": rows,
            "history": history,
            "dht": {"size": dht.get("routing_table", 0), "bucket_size": 20,
                    "buckets": {str(k): v for k, v in sorted((dht.get("buckets") or {}).items(),
                                                             key=lambda kv: int(kv[0]))}}}


# --- Jobs ------------------------------------------------------------------------------------

def jobs_view(summaries: list[Mapping[str, Any]], query: Mapping[str, str]) -> dict[str, Any]:
    """The jobs coordinated here, newest first, one page, filtered by ``state``."""
    offset, limit = page_args(query, 50)
    state = _choice(query, "state", ("submitted", "running", "done", "failed", "cancelled"))
    counts = Counter(s["state"] for s in summaries)
    chosen = [s for s in reversed(summaries) if state is None or s["state"] == state]
    rows = [{"job_id": s["job_id"], "name": s.get("name", ""), "state": s["state"], "reason": s.get("reason", ""),
             "progress": s.get("progress"), "outputs": len(s.get("outputs") or [])}
            for s in chosen[offset:offset + limit]]
    return {"total": len(summaries), "counts": dict(counts), "matching": len(chosen), "offset": offset,
            "limit": limit, "state": state, "rows": rows}


def stage_edges(tasks: Mapping[str, Any]) -> dict[str, list[str]]:
    """Each stage (in plan order) and the stages its tasks depend on: fixed for a job (callers may keep it)."""
    stage_of = {tid: t.spec.stage for tid, t in tasks.items()}
    edges: dict[str, dict[str, None]] = {}
    for t in tasks.values():
        stage = t.spec.stage
        deps = edges.get(stage)
        if deps is None:
            deps = edges[stage] = {}
        for dep in getattr(t.spec, "deps", ()):
            d = stage_of.get(dep)
            if d is not None and d != stage:
                deps[d] = None
    return {stage: list(deps) for stage, deps in edges.items()}


def stage_graph(tasks: Mapping[str, Any], edges: Mapping[str, list[str]] | None = None) -> list[dict[str, Any]]:
    """The pipeline's stages in plan order: each with the stages it depends on and its tasks by state."""
    edges = stage_edges(tasks) if edges is None else edges
    by_stage: dict[str, Counter] = {stage: Counter() for stage in edges}
    for (stage, state), n in Counter((t.spec.stage, t.state) for t in tasks.values()).items():
        by_stage.setdefault(stage, Counter())[state] = n
    out = []
    for stage, counts in by_stage.items():
        total = sum(counts.values())
        state = ("failed" if counts["failed"] else "cancelled" if counts["cancelled"]
                 else "done" if counts["done"] + counts["skipped"] == total
                 else "running" if any(counts[x] for x in ("placing", "offered", "running", "fetching", "done"))
                 else "waiting")
        out.append({"stage": stage, "deps": list(edges.get(stage, ())), "counts": dict(counts), "total": total,
                    "state": state})
    return out


def _row(tid: str, t: Any, created: float, clock: float) -> dict[str, Any]:
    last = t.attempts[-1] if t.attempts else None
    start = last.get("start") if last else None
    end = last.get("end") if last else None
    return {"task": tid, "stage": t.spec.stage, "state": t.state, "reason": t.reason,
            "attempts": t.attempts_dropped + len(t.attempts), "peer": last.get("peer") if last else None,
            "start": None if start is None else round(start - created, 3),
            "duration": None if start is None else round((end if end is not None else clock) - start, 3),
            "outputs": dict(t.outputs)}


def select_tasks(tasks: Mapping[str, Any], query: Mapping[str, str]) -> tuple[int, int, str | None, str | None,
                                                                            list[tuple[str, Any]], int]:
    """One page of a job's tasks (``state``, ``stage`` filters): offset, limit, state, stage, the page's
    (id, task) pairs and how many tasks match."""
    offset, limit = page_args(query)
    state = _choice(query, "state", TASK_STATES)
    stage = query.get("stage") or None
    if state is None and stage is None:
        return offset, limit, state, stage, list(itertools.islice(tasks.items(), offset, offset + limit)), len(tasks)
    every = [(tid, t) for tid, t in tasks.items()
             if (state is None or t.state == state) and (stage is None or t.spec.stage == stage)]
    return offset, limit, state, stage, every[offset:offset + limit], len(every)


def job_view(summary: Mapping[str, Any], tasks: Mapping[str, Any], created: float, clock: float,
             stats: Mapping[str, int], query: Mapping[str, str],
             edges: Mapping[str, list[str]] | None = None) -> dict[str, Any]:
    """One job: its summary, stages (the DAG; ``edges`` from ``stage_edges`` if kept), counts, one page of
    its tasks (``state``, ``stage`` filters)."""
    offset, limit, state, stage, chosen, matching = select_tasks(tasks, query)
    counts = Counter(t.state for t in tasks.values())
    rows = [_row(tid, t, created, clock) for tid, t in chosen]
    results = [{"task": o[0], "output": o[1], "cid": o[2]} for o in summary.get("outputs") or []]
    return {"job": dict(summary), "stats": dict(stats), "counts": dict(counts), "total": len(tasks),
            "matching": matching, "offset": offset, "limit": limit, "state": state, "stage": stage,
            "rows": rows, "stages": stage_graph(tasks, edges), "results": results[:1000],
            "results_total": len(results), "elapsed": round(job_end(summary, tasks, clock) - created, 3)}


def job_end(summary: Mapping[str, Any], tasks: Mapping[str, Any], clock: float) -> float:
    """When the job ended (its last attempt's end) if it is over, else ``clock``."""
    if summary.get("state") not in ("done", "failed", "cancelled"):
        return clock
    ends = [a["end"] for t in tasks.values() for a in t.attempts if a.get("end") is not None]
    return max(ends, default=clock)


def task_detail(tid: str, t: Any, created: float, clock: float) -> dict[str, Any]:
    """One task in full: every attempt kept (times relative to the job's start), its story and outputs."""
    attempts = []
    for n, a in enumerate(t.attempts):
        start, end = a.get("start"), a.get("end")
        attempts.append({"attempt": t.attempts_dropped + n + 1, "peer": a.get("peer"), "outcome": a.get("outcome"),
                         "message": a.get("message", ""), "log": a.get("log"),
                         "start": None if start is None else round(start - created, 3),
                         "end": None if end is None else round(end - created, 3),
                         "duration": None if start is None else round((end if end is not None else clock) - start, 3)})
    story = [[round(s[0] - created, 3), *s[1:]] for s in t.story]
    return {"task": tid, "stage": t.spec.stage, "state": t.state, "reason": t.reason, "attempts": attempts,
            "attempts_dropped": t.attempts_dropped, "outputs": dict(t.outputs), "story": story}


def timeline(tasks: Mapping[str, Any], created: float, clock: float, max_bars: int = MAX_BARS) -> dict[str, Any]:
    """Every attempt as a bar on a lane of its peer: ``bars`` rows ``[lane, start, end, outcome, task]``.

    ``lanes`` rows are ``[peer, row]``: a peer running several tasks at once (several slots) gets as many
    rows (at most ``MAX_ROWS``; more overlap on the last), each attempt on the first row free at its start.
    Times are seconds since the job was created; a running attempt ends at ``clock`` (pass the job's end
    for a finished job). Outcomes are indices into ``outcomes``, tasks into ``tasks``, peers into
    ``peers``. Past ``max_bars`` attempts the newest are kept.
    """
    peers: dict[str, int] = {}
    names: list[str] = []
    raw: list[list[Any]] = []
    outcome_index = {o: i for i, o in enumerate(OUTCOMES)}
    for tid, t in tasks.items():
        for a in t.attempts:
            start = a.get("start")
            if start is None or a.get("peer") is None:
                continue
            end = a.get("end")
            outcome = "running" if end is None else (a.get("outcome") or "other")
            if not names or names[-1] != tid:
                names.append(tid)
            raw.append([peers.setdefault(str(a["peer"]), len(peers)), round(start - created, 3),
                        round(max(start, end if end is not None else clock) - created, 3),
                        outcome_index.get(outcome, outcome_index["other"]), len(names) - 1])
    raw.sort(key=lambda b: b[1])
    dropped = max(0, len(raw) - max_bars)
    raw = raw[dropped:]
    rows_of: dict[int, list[float]] = {}          # peer -> the end of the last bar on each of its rows
    placed: list[tuple[int, int]] = []
    for bar in raw:
        rows = rows_of.setdefault(bar[0], [])
        row = next((i for i, free_at in enumerate(rows) if free_at <= bar[1]), None)
        if row is None:
            if len(rows) < MAX_ROWS:
                rows.append(0.0)
            row = len(rows) - 1
        rows[row] = max(rows[row], bar[2])
        placed.append((bar[0], row))
    lanes = sorted(set(placed))
    lane_of = {lane: i for i, lane in enumerate(lanes)}
    bars = [[lane_of[lane], *bar[1:]] for lane, bar in zip(placed, raw)]
    return {"peers": list(peers), "lanes": [list(lane) for lane in lanes], "tasks": names,
            "outcomes": list(OUTCOMES), "bars": bars, "bars_dropped": dropped, "span": round(clock - created, 3)}


def tasks_from_described(rows: list[Mapping[str, Any]]) -> dict[str, Any]:
    """TaskRun-like objects from ``GET /v1/jobs/{id}``'s task dicts (a job coordinated elsewhere)."""
    return {r["task"]: SimpleNamespace(spec=SimpleNamespace(stage=r.get("stage", ""), deps=()),
                                       state=r.get("state", ""), reason=r.get("reason", ""),
                                       attempts=list(r.get("attempts") or []),
                                       attempts_dropped=r.get("attempts_dropped", 0),
                                       outputs=dict(r.get("outputs") or {}), story=list(r.get("story") or []),
                                       verification=r.get("verification"))
            for r in rows}


# --- Data and this machine -------------------------------------------------------------------

def data_view(status: Mapping[str, Any], pins: list[str], ledgers: list[Mapping[str, Any]],
              query: Mapping[str, str]) -> dict[str, Any]:
    """Pinned roots (one page), the store's size, fetches in flight with their rates, bitswap peers."""
    offset, limit = page_args(query)
    storage = status.get("storage") or {}
    bitswap = status.get("bitswap") or {}
    return {"pins_total": len(pins), "pins": sorted(pins)[offset:offset + limit], "offset": offset, "limit": limit,
            "store_bytes": storage.get("blocks_bytes", 0), "announced": storage.get("announced", 0),
            "transfers": list(bitswap.get("sessions") or []),
            "bitswap": {k: v for k, v in bitswap.items() if isinstance(v, (int, float))},
            "peers": sorted(ledgers, key=lambda r: -r.get("bytes_sent", 0))[:200], "peers_total": len(ledgers)}


def machine_view(status: Mapping[str, Any], proc: Mapping[str, Any], rates: Mapping[str, float]) -> dict[str, Any]:
    """CPU, memory, executor workers, and messages and bytes per second by protocol.

    ``rates``: per-second rates of the transport's counters (the same as /metrics'):
    ``messages_sent:<protocol>``, ``messages_received:<protocol>``, ``bytes_sent:<protocol>``,
    ``bytes_received:<protocol>``, the totals ``bytes_sent`` and ``bytes_received``, and bitswap's own
    ``bitswap:*`` counters (its streams are not the transport's messages).
    """
    protocols: dict[str, dict[str, float]] = {}
    for key, rate in rates.items():
        counter, _, protocol = key.partition(":")
        column = {"messages_sent": "sent", "messages_received": "received", "bytes_sent": "bytes_sent",
                  "bytes_received": "bytes_received"}.get(counter)
        if column is not None and protocol:
            row = protocols.setdefault(protocol, {"sent": 0.0, "received": 0.0, "bytes_sent": 0.0,
                                                  "bytes_received": 0.0})
            row[column] += rate
    if any(k.startswith("bitswap:") for k in rates):
        protocols["bitswap"] = {"sent": rates.get("bitswap:messages_sent", 0.0),
                                "received": rates.get("bitswap:messages_received", 0.0),
                                "bytes_sent": rates.get("bitswap:bytes_sent", 0.0),
                                "bytes_received": rates.get("bitswap:bytes_received", 0.0)}
    compute = status.get("compute") or {}
    return {"proc": dict(proc), "workers": compute.get("workers", {}), "tasks": compute.get("tasks", {}),
            "slots": (status.get("scheduler") or {}).get("slots"),
            "protocols": {k: {x: round(v, 2) for x, v in row.items()} for k, row in sorted(protocols.items())},
            "bytes_per_s": {"sent": round(rates.get("bytes_sent", 0.0), 1),
                            "received": round(rates.get("bytes_received", 0.0), 1)},
            "messages_total": {"sent": status.get("messages_sent", 0), "received": status.get("messages_received", 0)}}
