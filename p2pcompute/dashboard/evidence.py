"""The job page's verification panel: what each task's verification did and why its result was accepted (pure).

Theory of operation
-------------------
A job whose ``verification`` is not ``none`` runs each task several times
(scheduler/verification/replicated.py). What the panel shows comes from what
``describe JOB`` carries for each task (``verification``): ``now`` (the
executions out while the task is verified) and ``accepted`` (the strategy's
verdict: ``how``, the agreeing ``peers``, the ``trusted`` ones, the
``rejected`` ones as ``[peer, proven, reason]``, the number of
``executions`` and the coordinator's signed ``evidence``, code 421).

``open_evidence`` opens that evidence: the coordinator's signature and each
executor's signed claim (code 420) in it are checked (wire.open_claim), and
each claim gives its peer, its lease and the SHA-256 digest of the outputs it
signed. ``task_evidence`` joins the task's attempts (one per execution, by
lease) with those claims: each execution's peer, outcome, output digest and
whether it agreed with the accepted result, was rejected, or was proven wrong
(and so banned). ``verification_view`` builds one page of tasks (the task
list's filters and paging) and a summary over every task of the job.

Nothing here reads a clock or the network: the service (service.py) passes
the job's tasks, how to read a task's verdict and live executions, and an
``opener`` function (it keeps opened evidence in a bounded cache: evidence
does not change once a task is accepted).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..errors import WireError
from ..node import wire
from ..scheduler.verification import signed
from . import views

MAX_PEERS = 100        # peers listed in the summary (rejected, banned)
DIGEST_SHOWN = 16      # hex digits of an output digest on the page

Accepted = Callable[[str, Any], "Mapping[str, Any] | None"]
Live = Callable[[str, Any], "Mapping[str, Any] | None"]
Opener = Callable[["bytes | str | None"], "dict[str, Any] | None"]


def open_evidence(evidence: bytes | str | None) -> dict[str, Any] | None:
    """A task's signed evidence opened (signatures checked), or ``{"problem": why}``; None when there is none.

    ``evidence`` is the bytes (``TaskRun.verified``) or their hex (``describe JOB``)."""
    if not evidence:
        return None
    try:
        data = bytes.fromhex(evidence) if isinstance(evidence, str) else bytes(evidence)
        if len(data) > signed.MAX_EVIDENCE_BYTES:
            return {"problem": "evidence too large"}
        signer, ev = wire.open_claim(data, signed.Evidence, max_size=signed.MAX_EVIDENCE_BYTES)
    except (ValueError, TypeError, WireError) as exc:
        return {"problem": f"bad evidence: {exc}"}
    claims = []
    for verdict, group in (("agreed", ev.agreeing), ("rejected", ev.rejected)):
        for data_c in group:
            try:
                claim = signed.open_result(data_c)
            except WireError as exc:
                claims.append({"verdict": verdict, "problem": str(exc)})
                continue
            claims.append({"verdict": verdict, "peer": str(claim.peer), "lease": claim.lease_id,
                           "outputs": claim.outputs.hex(),
                           "for_this_task": (claim.job_id, claim.task_id, claim.inputs) == (ev.job_id, ev.task_id,
                                                                                             ev.inputs)})
    return {"coordinator": str(ev.coordinator), "signed_by_coordinator": signer == ev.coordinator,
            "strategy": ev.strategy, "how": ev.how, "verified": ev.verified, "outputs": ev.outputs.hex(),
            "claims": claims, "trusted": [str(p) for p in ev.trusted], "bytes": len(data)}


def _verdict(a: Mapping[str, Any], claim: Mapping[str, Any] | None, accepted: Mapping[str, Any] | None,
             rejected: Mapping[str, tuple[bool, str]]) -> tuple[str, str]:
    """(verdict, why) of one execution: agreed, rejected, proven wrong, or its attempt's outcome."""
    peer, outcome = a.get("peer"), a.get("outcome") or "running"
    unsigned_rejected = claim is None and outcome == "ok" and accepted is not None and peer in rejected
    if (claim is not None and claim["verdict"] == "rejected") or unsigned_rejected:
        proven, why = rejected.get(peer, (False, ""))
        return ("proven wrong" if proven else "rejected"), why
    if claim is not None:
        return "agreed", ""
    if outcome == "ok" and accepted is not None and peer in (accepted.get("peers") or ()):
        return "agreed", "unsigned"
    if outcome == "ok":
        return "not used", "a result of an earlier round, or not needed"
    return outcome, str(a.get("message") or "")


def task_evidence(tid: str, t: Any, accepted: Mapping[str, Any] | None, live: Mapping[str, Any] | None,
                  created: float, opened: dict[str, Any] | None) -> dict[str, Any]:
    """One task's verification: its executions (attempts joined with their signed claims by lease), the
    accepted result with its signers, the rejected peers; ``opened`` is ``open_evidence`` of its evidence."""
    opened = opened or {}
    claims = {c["lease"]: c for c in opened.get("claims", ()) if "lease" in c}
    rejected = {str(r[0]): (bool(r[1]), str(r[2])) for r in (accepted or {}).get("rejected") or ()
                if isinstance(r, (list, tuple)) and len(r) == 3}
    trusted = set((accepted or {}).get("trusted") or ()) | {x.get("peer") for x in (live or {}).get("executions") or ()
                                                             if x.get("trusted")}
    accepted_digest = opened.get("outputs")
    executions = []
    for n, a in enumerate(t.attempts):
        claim = claims.get(a.get("lease"))
        verdict, why = _verdict(a, claim, accepted, rejected)
        digest = claim.get("outputs") if claim else (accepted_digest if verdict == "agreed" else None)
        start = a.get("start")
        executions.append({"attempt": t.attempts_dropped + n + 1, "peer": a.get("peer"), "lease": a.get("lease"),
                           "outcome": a.get("outcome") or "running", "trusted": a.get("peer") in trusted,
                           "start": None if start is None else round(start - created, 3),
                           "outputs": digest[:DIGEST_SHOWN] if digest else None,
                           "same_as_accepted": None if not (digest and accepted_digest) else digest == accepted_digest,
                           "signed": claim is not None, "verdict": verdict, "why": why})
    result = None
    if accepted is not None:
        signers = sorted({c["peer"] for c in opened.get("claims", ()) if c.get("verdict") == "agreed" and "peer" in c})
        result = {"how": accepted.get("how", ""), "verified": bool(accepted.get("verified")),
                  "peers": list(accepted.get("peers") or ()), "trusted": list(accepted.get("trusted") or ()),
                  "executions": accepted.get("executions"), "outputs": dict(t.outputs),
                  "digest": accepted_digest[:DIGEST_SHOWN] if accepted_digest else None, "signers": signers,
                  "coordinator": opened.get("coordinator"), "signature_ok": opened.get("signed_by_coordinator"),
                  "evidence_bytes": opened.get("bytes", 0), "problem": opened.get("problem")}
    status = ("accepted" if accepted is not None else "verifying" if live is not None
              else "failed" if t.state == "failed" else "not verified yet")
    return {"task": tid, "stage": t.spec.stage, "state": t.state, "status": status,
            "results": (live or {}).get("results"), "pending": (live or {}).get("pending"),
            "executions": executions, "accepted": result,
            "rejected": [{"peer": p, "proven": proven, "reason": why} for p, (proven, why) in rejected.items()]}


def verification_view(strategy: str, tasks: Mapping[str, Any], created: float, stats: Mapping[str, int],
                      query: Mapping[str, str], accepted_of: Accepted, live_of: Live, opener: Opener = open_evidence,
                      bans: Mapping[str, str] | None = None, suspects: Mapping[str, str] | None = None
                      ) -> dict[str, Any]:
    """The verification panel: a summary over every task of the job, and one page of tasks in full.

    ``accepted_of(tid, task)``: the task's ``accepted`` verdict (None: none yet); ``live_of(tid, task)``: its
    ``now`` (called for the page's tasks only); ``bans``/``suspects``: peers this daemon banned or suspects
    (peer -> reason), shown as they are (at most ``MAX_PEERS``); ``opener``: ``open_evidence`` or a cached one.
    A job under ``none`` gets the summary only."""
    offset, limit, state, stage, chosen, matching = views.select_tasks(tasks, query)
    if strategy == "none":             # each task ran once and its result was taken: nothing to show per task
        chosen, matching = [], 0
    n_accepted = n_verified = executions = 0
    rejected: dict[str, int] = {}
    proven: dict[str, str] = {}
    for tid, t in tasks.items():
        acc = accepted_of(tid, t)
        if not acc:
            continue
        n_accepted += 1
        n_verified += bool(acc.get("verified"))
        executions += int(acc.get("executions") or 0)
        for r in acc.get("rejected") or ():
            peer = str(r[0])
            rejected[peer] = rejected.get(peer, 0) + 1
            if r[1] and peer not in proven:
                proven[peer] = str(r[2])
    rows = []
    for tid, t in chosen:
        acc = accepted_of(tid, t)
        rows.append(task_evidence(tid, t, acc, live_of(tid, t), created, opener((acc or {}).get("evidence"))))
    summary = {"strategy": strategy, "tasks": len(tasks), "accepted": n_accepted, "verified": n_verified,
               "executions": executions,
               "rejected": sorted(rejected.items(), key=lambda kv: -kv[1])[:MAX_PEERS],
               "proven_wrong": sorted(proven.items())[:MAX_PEERS],
               "stats": {k: int(stats.get(k, 0)) for k in ("executions", "results_accepted", "verify_rejected",
                                                            "verify_rejected_proven", "results_retracted")},
               "banned_here": sorted((bans or {}).items())[:MAX_PEERS],
               "suspected_here": sorted((suspects or {}).items())[:MAX_PEERS]}
    return {"summary": summary, "offset": offset, "limit": limit, "state": state, "stage": stage,
            "matching": matching, "rows": rows}
