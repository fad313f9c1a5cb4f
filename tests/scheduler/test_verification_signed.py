"""Signed results and evidence: round trips, tampering, and the submitter's check of evidence."""

from __future__ import annotations

import random

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pcompute.errors import WireError
from p2pcompute.node.identity import Identity
from p2pcompute.scheduler.verification.engine import Accept, Outcome, TaskInfo, TaskVerification
from p2pcompute.scheduler.verification.policy import parse
from p2pcompute.scheduler.verification.signed import (MAX_EVIDENCE_BYTES, check_evidence, claim_problem,
                                                      make_evidence, open_result, sign_result)

IDS = [Identity.from_seed(bytes([i]) * 32) for i in range(1, 9)]
INPUTS = ("bafyA", "bafyB")
GOOD = {"C": "bafyGood"}


def claim(i: int, outputs=GOOD, inline=None, task="t1", inputs=INPUTS) -> bytes:
    return sign_result(IDS[i], "job", task, f"1.x.{i}", inputs, outputs, inline)


def test_a_claim_round_trips_and_names_its_signer():
    data = claim(0, inline={"mean": 0.5})
    c = open_result(data)
    assert c.peer == IDS[0].peer_id and (c.job_id, c.task_id) == ("job", "t1") and len(data) < 400
    assert claim_problem(data, "job", "t1", INPUTS, IDS[0].peer_id, GOOD, {"mean": 0.5}) is None
    assert claim_problem(data, "job", "t1", INPUTS, IDS[0].peer_id, GOOD, {"mean": 0.25}) == \
        "the claim is for other outputs"
    assert claim_problem(data, "job", "t2", INPUTS, None) == "the claim is for job/t1, not job/t2"
    assert claim_problem(data, "job", "t1", ("bafyA",), None) == "the claim is for other inputs"
    assert claim_problem(data, "job", "t1", INPUTS, IDS[1].peer_id) == "the claim is signed by another peer"


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 255))
def test_any_flipped_byte_of_a_claim_is_refused_or_changes_nothing_signed(pos, flip):
    data = bytearray(claim(0))
    pos %= len(data)
    data[pos] ^= flip
    try:
        c = open_result(bytes(data))
    except WireError:
        return
    assert c == open_result(claim(0))    # only an unsigned part of the envelope (the request id) changed


def test_a_claim_re_signed_by_another_peer_is_refused():
    env = cbor2.loads(claim(0))
    body = env[4]
    from p2pcompute.node import wire
    forged = cbor2.dumps(env[:5] + [IDS[1].peer_id.raw, IDS[1].sign(wire._signed_bytes(420, body))])
    with pytest.raises(WireError, match="signed by"):
        open_result(forged)
    with pytest.raises(WireError):
        open_result(b"\x00" * 50)
    assert claim_problem("text", "job", "t1", None, None).startswith("bad result claim")


def verified(strategy: str, outcomes: list[Outcome]) -> tuple[TaskVerification, Accept]:
    v = TaskVerification(TaskInfo("job", "t1", INPUTS), parse(strategy), random.Random(1))
    v.start()
    out = []
    for o in outcomes:
        out += v.result(o)
    return v, next(c for c in out if isinstance(c, Accept))


def outcome(i: int, outputs=GOOD) -> Outcome:
    return Outcome.of(IDS[i].peer_id, outputs, claim=claim(i, outputs))


def test_evidence_of_a_replicated_task_satisfies_the_submitter():
    v, acc = verified("replicate(3, agree=2)", [outcome(0), outcome(1), outcome(2)])
    ev_bytes = make_evidence(IDS[7], v, acc)
    assert len(ev_bytes) <= MAX_EVIDENCE_BYTES
    ev, why = check_evidence(ev_bytes, "job", "t1", INPUTS, GOOD, {}, "replicate(3, agree=2)",
                             coordinators={bytes(IDS[7].peer_id)})
    assert why is None and ev.how == "3 of 3 agree (exact)" and len(ev.agreeing) == 3


@pytest.mark.parametrize("change, reason", [
    (dict(outputs={"C": "bafyLie"}), "evidence for other inputs or outputs"),
    (dict(task_id="t2"), "evidence for job/t2"),
    (dict(strategy_text="replicate(3, agree=3)"), "evidence under 'replicate(3, agree=2)'"),
    (dict(coordinators={b"someone else"}), "not a coordinator of this job"),
])
def test_the_submitter_refuses_evidence_that_does_not_match(change, reason):
    v, acc = verified("replicate(3, agree=2)", [outcome(0), outcome(1), outcome(2)])
    args = dict(data=make_evidence(IDS[7], v, acc), job_id="job", task_id="t1", input_cids=INPUTS, outputs=GOOD,
                inline={}, strategy_text="replicate(3, agree=2)")
    args.update(change)
    if "task_id" in change:
        args["task_id"] = "t1"
        v.task = TaskInfo("job", "t2", INPUTS)
        args["data"] = make_evidence(IDS[7], v, acc)
    ev, why = check_evidence(**args)
    assert ev is None and reason in why


def test_a_malicious_coordinator_cannot_pass_a_lie_signed_by_too_few_peers():
    lie = {"C": "bafyLie"}
    # the coordinator's own sybil signs the lie; replicate(3, agree=2) needs two distinct signers
    v = TaskVerification(TaskInfo("job", "t1", INPUTS), parse("none"), random.Random(1))
    v.start()
    v.result(outcome(5, lie))
    v.strategy = parse("replicate(3, agree=2)")          # it claims the job's strategy
    ev_bytes = make_evidence(IDS[7], v, Accept(0, (0,), "2 of 2 agree (exact)"))
    ev, why = check_evidence(ev_bytes, "job", "t1", INPUTS, lie, {}, "replicate(3, agree=2)")
    assert ev is None and why == "1 distinct signers; replicate(3, agree=2) needs 2"
    # the same claim counted twice is one signer
    v.results.append(v.results[0])
    ev, why = check_evidence(make_evidence(IDS[7], v, Accept(0, (0, 1), "x")), "job", "t1", INPUTS, lie, {},
                             "replicate(3, agree=2)")
    assert ev is None and "1 distinct signers" in why
    # a claim of other outputs does not count under an exact comparison
    v.results[1] = outcome(1)
    ev, why = check_evidence(make_evidence(IDS[7], v, Accept(0, (0, 1), "x")), "job", "t1", INPUTS, lie, {},
                             "replicate(3, agree=2)")
    assert ev is None and why == "an agreeing claim signs other outputs under an exact comparison"
    # but a peer the submitter trusts (its own) is enough alone
    ev, why = check_evidence(ev_bytes, "job", "t1", INPUTS, lie, {}, "replicate(3, agree=2)",
                             trusted={bytes(IDS[5].peer_id)})
    assert why is None


def test_under_an_anchored_strategy_two_colluders_claims_without_a_vetted_signer_are_refused():
    lie, text = {"C": "bafyLie"}, "replicate(2, agree=2, anchor=1)"
    v = TaskVerification(TaskInfo("job", "t1", INPUTS), parse("replicate(2, agree=2)"), random.Random(1))
    v.start()
    v.result(outcome(4, lie))
    v.result(outcome(5, lie))
    v.strategy = parse(text)                                  # a malicious coordinator claims the job's strategy
    ev_bytes = make_evidence(IDS[7], v, Accept(0, (0, 1), "2 of 2 agree, anchored by a vetted peer"))
    ev, why = check_evidence(ev_bytes, "job", "t1", INPUTS, lie, {}, text, anchors={bytes(IDS[1].peer_id)})
    assert ev is None and "no signer of these outputs is this peer or a peer it vetted" in why
    ev, why = check_evidence(ev_bytes, "job", "t1", INPUTS, lie, {}, text)        # no ledger given: signers only
    assert why is None
    ev, why = check_evidence(ev_bytes, "job", "t1", INPUTS, lie, {}, text, anchors={bytes(IDS[5].peer_id)})
    assert why is None                                        # one of them is vetted: it rests on that peer


def test_garbage_evidence_is_refused_not_raised():
    for data in (b"", b"\xff" * 100, "text", claim(0), b"x" * (MAX_EVIDENCE_BYTES + 1)):
        ev, why = check_evidence(data, "job", "t1", INPUTS, GOOD, {}, "none")
        assert ev is None and why


def test_the_largest_replication_fits_its_evidence():
    ids = [Identity.from_seed(bytes([40 + i]) * 32) for i in range(16)]
    v = TaskVerification(TaskInfo("job", "t1", INPUTS), parse("replicate(16, agree=16)"), random.Random(1))
    assert v.start()[0].n == 16
    out = []
    for ident in ids:
        out += v.result(Outcome.of(ident.peer_id, GOOD, claim=sign_result(ident, "job", "t1", "l", INPUTS, GOOD)))
    acc = next(c for c in out if isinstance(c, Accept))
    data = make_evidence(IDS[7], v, acc)
    assert len(data) <= MAX_EVIDENCE_BYTES
    ev, why = check_evidence(data, "job", "t1", INPUTS, GOOD, {}, "replicate(16, agree=16)")
    assert why is None and len(ev.agreeing) == 16
