"""One task as its coordinator runs it: state, offers, lease, attempts, results and its story.

Plain mutable data kept by ``JobState`` (job_state.py); the record form
(``to_record`` / ``from_record``) is CBOR-friendly: str, int, float, bytes,
lists and dicts only (peers are whatever the driver uses: ``PeerId`` is bytes).

States: ``waiting`` (deps not done) -> ``ready`` (queued, maybe backing off)
-> ``placing`` (a ``Dispatch`` is out) -> ``offered`` (offers at reserved
peers) -> ``running`` (one lease) -> ``fetching`` (result received, outputs
being pulled) -> ``done``. Off the main path: ``skipped`` (condition false or
a skipped dependency), ``failed``, ``cancelled``. A failed attempt, a lapsed
offer or an unplaceable task goes back to ``ready``.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from .model import PlanError, TaskSpec

WAITING, READY, PLACING, OFFERED, RUNNING, FETCHING = "waiting", "ready", "placing", "offered", "running", "fetching"
DONE, SKIPPED, FAILED, CANCELLED = "done", "skipped", "failed", "cancelled"
STATES = (WAITING, READY, PLACING, OFFERED, RUNNING, FETCHING, DONE, SKIPPED, FAILED, CANCELLED)
TERMINAL = frozenset({DONE, SKIPPED, FAILED, CANCELLED})
ACTIVE = frozenset({PLACING, OFFERED, RUNNING, FETCHING})

MAX_ISSUED = 256   # lease ids remembered per task (to tell a stale lease from an unknown one)
MAX_CID_LEN = 256


class TaskRun:
    """A task's run-time state. ``story``: (now, stimulus, old state, new state), the newest last."""

    __slots__ = ("spec", "state", "pending", "lease", "peer", "deadline", "offers", "issued", "accepted",
                 "attempts", "attempts_dropped", "failures", "lost", "failed_peers", "same", "not_before", "queued",
                 "outputs", "inline", "sizes", "declines", "unplaced_since", "gen", "reason", "story")

    def __init__(self, spec: TaskSpec, story_len: int) -> None:
        self.spec = spec
        self.state = WAITING
        self.pending = 0                       # deps not yet done or skipped
        self.lease: str | None = None          # the current lease (running or fetching)
        self.peer: Any = None
        self.deadline = 0.0                    # the lease lapses then unless a heartbeat comes
        self.offers: dict[str, Any] = {}       # lease id -> peer, outstanding offers
        self.issued: dict[str, Any] = {}       # every lease id issued (bounded) -> peer
        self.accepted: str | None = None       # the lease whose result was taken
        self.attempts: list[dict[str, Any]] = []
        self.attempts_dropped = 0
        self.failures = 0                      # charged failures (count against retries)
        self.lost = 0                          # runs lost with their executor's death (count against max_lost)
        self.failed_peers: set = set()
        self.same: dict[tuple[str, str], set] = {}   # (kind, message) -> peers it happened on
        self.not_before = 0.0
        self.queued = False                    # in JobState's ready deque
        self.outputs: dict[str, str] = {}
        self.inline: dict[str, Any] = {}
        self.sizes: dict[str, int] = {}
        self.declines = 0
        self.unplaced_since: float | None = None
        self.gen = 0                           # bumps on each placing, to tell stale timers
        self.reason = ""
        self.story: deque = deque(maxlen=story_len)

    @property
    def task_id(self) -> str:
        return self.spec.task_id

    def issue(self, lease_id: str, peer: Any) -> None:
        self.issued[lease_id] = peer
        if len(self.issued) > MAX_ISSUED:
            del self.issued[next(iter(self.issued))]

    def add_attempt(self, attempt: dict[str, Any], keep: int) -> None:
        self.attempts.append(attempt)
        if len(self.attempts) > keep:
            del self.attempts[0]
            self.attempts_dropped += 1

    def note_log(self, lease_id: str, log: Any, size: Any) -> None:
        """The attempt's stderr (a CID held by its executor, task_logs.py) into its attempt; a log that is not a
        short string with a byte count is left out (the result itself is judged on its own)."""
        if (log and isinstance(log, str) and len(log) <= MAX_CID_LEN and type(size) is int and 0 < size < 1 << 31
                and self.attempts and self.attempts[-1]["lease"] == lease_id):
            self.attempts[-1].update(log=log, log_bytes=size)

    def reasons(self) -> list[str]:
        """Every failed attempt's reason, oldest first (dropped ones counted)."""
        out = [f"{a['peer']!r}: {a['outcome']}: {a['message']}" for a in self.attempts
               if a["outcome"] not in ("ok", "running")]
        if self.attempts_dropped:
            out.insert(0, f"({self.attempts_dropped} earlier attempts not kept)")
        return out

    # --- the record ---------------------------------------------------------------------------

    def to_record(self) -> dict[str, Any]:
        return {"id": self.task_id, "state": self.state, "lease": self.lease, "peer": self.peer,
                "offers": [[k, v] for k, v in self.offers.items()],
                "issued": [[k, v] for k, v in self.issued.items()], "accepted": self.accepted,
                "attempts": [dict(a) for a in self.attempts], "attempts_dropped": self.attempts_dropped,
                "failures": self.failures, "lost": self.lost, "failed_peers": list(self.failed_peers),
                "same": [[k, m, list(p)] for (k, m), p in self.same.items()], "not_before": self.not_before,
                "outputs": dict(self.outputs), "inline": dict(self.inline), "sizes": dict(self.sizes),
                "declines": self.declines, "reason": self.reason}

    def load_record(self, r: dict[str, Any]) -> None:
        """Fill from ``to_record``'s dict; PlanError if it is malformed."""
        try:
            if r["id"] != self.task_id or r["state"] not in STATES:
                raise PlanError(f"task record {r['id']!r} in state {r['state']!r} does not fit the plan")
            self.state = r["state"]
            self.lease, self.peer = r["lease"], r["peer"]
            self.offers = {str(k): v for k, v in r["offers"]}
            self.issued = {str(k): v for k, v in r["issued"][-MAX_ISSUED:]}
            self.accepted = r["accepted"]
            self.attempts = [dict(a) for a in r["attempts"]]
            self.attempts_dropped = int(r["attempts_dropped"])
            self.failures = int(r["failures"])
            self.lost = int(r.get("lost", 0))
            self.failed_peers = set(r["failed_peers"])
            self.same = {(str(k), str(m)): set(p) for k, m, p in r["same"]}
            self.not_before = float(r["not_before"])
            self.outputs = {str(k): str(v) for k, v in dict(r["outputs"]).items()}
            self.inline = dict(r["inline"])
            self.sizes = {str(k): int(v) for k, v in dict(r["sizes"]).items()}
            self.declines = int(r["declines"])
            self.reason = str(r["reason"])
        except (KeyError, TypeError, ValueError) as e:
            raise PlanError(f"task record of {self.task_id}: {type(e).__name__}: {e}") from None


def check_result(e: Any, needs: set[str], needs_inline: set[str], cfg: Any) -> str | None:
    """Why a ``ResultReady`` from a peer is malformed or incomplete (None: it is fine).

    ``needs``: output names (CIDs) the job's later tasks and result use; ``needs_inline``: scalars a
    condition reads; ``cfg``: the ``JobConfig`` (max_outputs, max_text).
    """
    for what, d in (("outputs", e.outputs), ("inline", e.inline), ("sizes", e.sizes)):
        if not isinstance(d, dict) or len(d) > cfg.max_outputs:
            return f"{what} is not a dict of at most {cfg.max_outputs} entries"
        if any(not isinstance(k, str) or len(k) > 128 for k in d):
            return f"{what} has a name that is not a short string"
    for k, v in e.outputs.items():
        if not isinstance(v, str) or not 0 < len(v) <= MAX_CID_LEN:
            return f"output {k!r} is not a CID"
    for k, v in e.inline.items():
        if not (v is None or isinstance(v, (bool, int, str)) or (isinstance(v, float) and math.isfinite(v))):
            return f"inline {k!r} is not a scalar"
        if isinstance(v, str) and len(v) > cfg.max_text or isinstance(v, int) and abs(v) >= 1 << 63:
            return f"inline {k!r} is too large"
    for k, v in e.sizes.items():
        if type(v) is not int or not 0 <= v < 1 << 62:
            return f"size of {k!r} is not a byte count"
    missing = sorted(needs - e.outputs.keys()) + sorted(needs_inline - e.inline.keys())
    return f"lacks output {', '.join(missing)}" if missing else None
