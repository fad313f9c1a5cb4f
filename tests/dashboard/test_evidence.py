"""dashboard/evidence.py: the verification panel's data from real signed claims and evidence (pure)."""

from __future__ import annotations

import random
from types import SimpleNamespace

from p2pcompute.dashboard import evidence
from p2pcompute.dashboard.synthetic import job_tasks
from p2pcompute.node import wire
from p2pcompute.node.identity import Identity
from p2pcompute.scheduler.verification import signed

JOB, INPUTS = "j1", ["QmIn"]
GOOD, BAD = {"y": "QmGood"}, {"y": "QmBad"}


def signed_evidence(coord, task, claims, rejected=()):
    """The coordinator's signed Evidence (421) for ``task`` over executors' signed claims (420)."""
    ev = signed.Evidence(JOB, task, coord.peer_id, "replicate(3, agree=2)", "2 of 3 agree (exact)", True,
                         signed.digest_inputs(INPUTS), signed.digest_outputs(GOOD), tuple(claims), tuple(rejected))
    return wire.sign_claim(coord, ev)


def claim(who, task, lease, outputs):
    return signed.sign_result(who, JOB, task, lease, INPUTS, outputs)


def task(attempts, state="done", outputs=GOOD):
    return SimpleNamespace(spec=SimpleNamespace(stage="s", deps=()), state=state, reason="", attempts=attempts,
                           attempts_dropped=0, outputs=dict(outputs), story=[])


def attempt(peer, lease, outcome="ok", message=""):
    return {"peer": str(peer), "lease": lease, "start": 10.0, "end": 11.0, "outcome": outcome, "message": message}


def test_two_agreeing_executions_and_a_proven_liar_are_shown_with_their_signers():
    coord, a, b, liar = (Identity.generate() for _ in range(4))
    ev = signed_evidence(coord, "t0", [claim(a, "t0", "L1", GOOD), claim(b, "t0", "L2", GOOD)],
                         [claim(liar, "t0", "L3", BAD)])
    accepted = {"strategy": "replicate(3, agree=2)", "how": "2 of 3 agree (exact)", "verified": True,
                "peers": [str(a.peer_id), str(b.peer_id)], "trusted": [],
                "rejected": [[str(liar.peer_id), True, "differs from a trusted result"]], "executions": 3,
                "evidence": ev}
    t = task([attempt(a.peer_id, "L1"), attempt(liar.peer_id, "L3"), attempt(b.peer_id, "L2"),
              attempt(b.peer_id, "L4", "revoked", "another result was accepted")])
    row = evidence.task_evidence("t0", t, accepted, None, 0.0, evidence.open_evidence(ev))
    verdicts = {(x["peer"], x["lease"]): x["verdict"] for x in row["executions"]}
    assert verdicts == {(str(a.peer_id), "L1"): "agreed", (str(liar.peer_id), "L3"): "proven wrong",
                        (str(b.peer_id), "L2"): "agreed", (str(b.peer_id), "L4"): "revoked"}
    good = signed.digest_outputs(GOOD).hex()[:evidence.DIGEST_SHOWN]
    agreed = [x for x in row["executions"] if x["verdict"] == "agreed"]
    assert {x["outputs"] for x in agreed} == {good} and all(x["same_as_accepted"] and x["signed"] for x in agreed)
    lie = next(x for x in row["executions"] if x["verdict"] == "proven wrong")
    assert lie["outputs"] != good and lie["same_as_accepted"] is False and lie["why"] == "differs from a trusted result"
    acc = row["accepted"]
    assert acc["signers"] == sorted([str(a.peer_id), str(b.peer_id)]) and acc["digest"] == good
    assert acc["coordinator"] == str(coord.peer_id) and acc["signature_ok"] and acc["outputs"] == GOOD
    assert row["status"] == "accepted"
    assert row["rejected"] == [{"peer": str(liar.peer_id), "proven": True, "reason": "differs from a trusted result"}]
    # as `describe JOB` carries it (hex): the same
    assert evidence.open_evidence(ev.hex()) == evidence.open_evidence(ev)


def test_tampered_or_missing_evidence_is_said_so_and_unsigned_agreement_still_shows():
    coord, a, b = (Identity.generate() for _ in range(3))
    ev = bytearray(signed_evidence(coord, "t0", [claim(a, "t0", "L1", GOOD)]))
    ev[-1] ^= 1
    assert "bad evidence" in evidence.open_evidence(bytes(ev))["problem"]
    assert "bad evidence" in evidence.open_evidence("zz")["problem"]
    assert evidence.open_evidence(b"") is None and evidence.open_evidence(None) is None
    accepted = {"how": "2 of 2 agree (exact)", "verified": True, "peers": [str(a.peer_id), str(b.peer_id)],
                "trusted": [], "rejected": [], "executions": 2, "evidence": b""}
    row = evidence.task_evidence("t0", task([attempt(a.peer_id, "L1"), attempt(b.peer_id, "L2")]), accepted, None,
                                 0.0, None)
    assert [x["verdict"] for x in row["executions"]] == ["agreed", "agreed"]
    assert not any(x["signed"] for x in row["executions"]) and row["accepted"]["signers"] == []


def test_a_task_being_verified_shows_its_live_executions():
    a, b = Identity.generate(), Identity.generate()
    live = {"results": 1, "pending": 1, "executions": [{"peer": str(b.peer_id), "lease": "L2", "trusted": True,
                                                        "running": True}]}
    t = task([attempt(a.peer_id, "L1"), {**attempt(b.peer_id, "L2", "running"), "end": None}], "running", {})
    row = evidence.task_evidence("t0", t, None, live, 0.0, None)
    assert row["status"] == "verifying" and (row["results"], row["pending"]) == (1, 1) and row["accepted"] is None
    assert [(x["verdict"], x["trusted"]) for x in row["executions"]] == [("not used", False), ("running", True)]


def test_the_panel_of_10000_tasks_is_one_page_with_a_summary_over_all():
    rng = random.Random(7)
    tasks = job_tasks(10_000, [f"p{i}" for i in range(40)], rng)
    verdicts = {tid: {"how": "2 of 2 agree", "verified": True, "peers": ["p1", "p2"], "trusted": [],
                      "rejected": [["p9", True, "wrong"]] if i % 1000 == 0 else [], "executions": 2, "evidence": b""}
                for i, (tid, t) in enumerate(tasks.items()) if t.state == "done"}
    live_asked = []

    def live_of(tid, t):
        live_asked.append(tid)
        return None

    stats = {"executions": 2 * len(verdicts), "verify_rejected_proven": 10}
    page = evidence.verification_view("replicate(2, agree=2)", tasks, 0.0, stats, {"offset": "200", "limit": "50"},
                                      lambda tid, t: verdicts.get(tid), live_of, bans={"p9": "wrong"})
    assert len(page["rows"]) == 50 and page["matching"] == 10_000 and page["offset"] == 200
    assert [r["task"] for r in page["rows"]] == list(tasks)[200:250] and live_asked == list(tasks)[200:250]
    s = page["summary"]
    assert s["tasks"] == 10_000 and s["accepted"] == s["verified"] == len(verdicts) > 0
    assert s["executions"] == 2 * len(verdicts) and s["stats"]["verify_rejected_proven"] == 10
    assert s["proven_wrong"] == [("p9", "wrong")] and s["banned_here"] == [("p9", "wrong")]
    running = evidence.verification_view("replicate(2)", tasks, 0.0, {}, {"state": "running"},
                                         lambda tid, t: verdicts.get(tid), lambda tid, t: None)
    assert running["rows"] and all(r["state"] == "running" and r["status"] == "not verified yet"
                                   for r in running["rows"])


def test_a_job_under_none_gets_its_summary_and_no_rows():
    tasks = job_tasks(50, ["a", "b"], random.Random(1))
    page = evidence.verification_view("none", tasks, 0.0, {}, {}, lambda tid, t: None, lambda tid, t: None)
    assert page["rows"] == [] and page["matching"] == 0
    assert page["summary"]["strategy"] == "none" and page["summary"]["tasks"] == 50
