"""Reputation ledger, signed accusations and how peers judge them, and the Sybil predicates."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pcompute.node import wire
from p2pcompute.node.identity import Identity
from p2pcompute.scheduler.verification.accusation import Accusation, accuse, judge, open_accusation
from p2pcompute.scheduler.verification.engine import Accept, Outcome, Reject, TaskInfo, TaskVerification
from p2pcompute.scheduler.verification.policy import parse
from p2pcompute.scheduler.verification.reputation import Ledger
from p2pcompute.scheduler.verification.signed import sign_result
from p2pcompute.scheduler.verification.sybil import PeerFacts, SybilRules, allowed, conflict, pick_replicas, subnets

IDS = [Identity.from_seed(bytes([i]) * 32) for i in range(1, 9)]
ACCUSER, LIAR, HONEST, TRUSTED, SYBIL, OTHER = IDS[:6]
INPUTS = ("bafyA", "bafyB")


def out(ident: Identity, cid: str, trusted=False, inline=None, task="t1") -> Outcome:
    outputs = {"C": cid}
    return Outcome.of(ident.peer_id, outputs, inline,
                      sign_result(ident, "job", task, "1.n.1", INPUTS, outputs, inline), trusted)


# --- the ledger --------------------------------------------------------------------------------------

def test_ledger_builds_trust_with_consecutive_valid_results_and_an_invalid_one_resets_it():
    led = Ledger(threshold=3)
    for t in range(3):
        assert not led.is_trusted("p")
        led.valid("p", t)
    assert led.is_trusted("p")
    led.timed_out("p", 4)
    assert led.is_trusted("p") and led.record("p").timed_out == 1
    led.invalid("p", 5)
    assert not led.is_trusted("p") and led.record("p").consecutive == 0
    assert led.ban("p", "wrong", 6) and not led.ban("p", "again", 7)
    for t in range(10):
        led.valid("p", 8 + t)
    assert led.banned("p") and not led.is_trusted("p")


def test_ledger_learns_from_a_task_verification():
    led = Ledger(threshold=1)
    v = TaskVerification(TaskInfo("job", "t"), parse("replicate(3, agree=2)"), random.Random(1))
    v.start()
    cmds = v.result(Outcome.of("a", {"o": "x"})) + v.result(Outcome.of("b", {"o": "y"}))
    cmds += v.result(Outcome.of("me", {"o": "x"}, trusted=True))
    assert led.learn(v.results, cmds, 10.0) == ["b"]
    assert led.is_trusted("a") and led.banned("b") and led.record("me") is None   # trusted runs are not scored
    unverified = [Accept(0, (0,), "single", verified=False), Reject("c", 0, False, "outvoted")]
    assert led.learn([Outcome.of("c")], unverified, 11.0) == []
    assert led.record("c").valid == 0 and led.record("c").invalid == 1


OPS = st.lists(st.tuples(st.sampled_from(["valid", "invalid", "timed_out", "ban"]), st.integers(0, 30)),
               max_size=300)


@settings(max_examples=200, deadline=None)
@given(OPS, st.integers(1, 20), st.integers(1, 10))
def test_ledger_invariants(ops, max_peers, max_bans):
    led = Ledger(threshold=3, max_peers=max_peers, max_bans=max_bans)
    model: dict[int, list[str]] = {}
    for t, (op, peer) in enumerate(ops):
        if op == "ban":
            led.ban(peer, "proven", t)
        else:
            getattr(led, op)(peer, t)
        model.setdefault(peer, []).append(op)
        assert len(led.peers) <= max_peers and len(led.bans) <= max_bans
    for peer, seen in model.items():
        assert not (led.banned(peer) and led.is_trusted(peer))
        if "ban" not in seen:
            assert not led.banned(peer)                    # only a proven wrong result bans
        r = led.record(peer)
        if r is not None and len(model) <= max_peers:      # nothing forgotten: counts are exact
            assert (r.valid, r.timed_out) == (seen.count("valid"), seen.count("timed_out"))
            assert r.invalid == seen.count("invalid") + seen.count("ban")
            tail = 0
            for op in reversed(seen):
                if op in ("invalid", "ban"):
                    break
                tail += op == "valid"
            assert r.consecutive == tail and led.is_trusted(peer) == (tail >= 3 and not led.banned(peer))


# --- accusations -------------------------------------------------------------------------------------

def mismatch(accused=None, truth=None, strategy="replicate(2, agree=2)", accuser=ACCUSER) -> bytes:
    return accuse(accuser, "job", "t1", strategy, INPUTS, accused or out(LIAR, "bafyLie"),
                  truth or out(TRUSTED, "bafyGood", trusted=True), reason="differs from a trusted re-execution")


def test_a_true_accusation_is_opened_and_judged_guilty_by_a_peer_that_recomputes():
    acc, why = open_accusation(mismatch())
    assert why is None and acc.accused == LIAR.peer_id and acc.kind == "mismatch"
    mine = Outcome.of(OTHER.peer_id, {"C": "bafyGood"})
    assert judge(acc, own=mine).guilty
    assert not judge(acc).guilty                                      # no own work: no verdict against anyone


def test_a_lying_accuser_with_a_sybil_witness_gets_nowhere():
    for accuser in (ACCUSER, SYBIL):
        acc, why = open_accusation(mismatch(accused=out(HONEST, "bafyGood"), truth=out(SYBIL, "bafyLie"),
                                            accuser=accuser))
        assert why is None                                            # consistent, but...
        verdict = judge(acc, own=Outcome.of(OTHER.peer_id, {"C": "bafyGood"}))
        assert not verdict.guilty and "the accusation is false" in verdict.reason
    acc, why = open_accusation(mismatch(accuser=LIAR))
    assert acc is None and why == "a peer accusing itself"


def test_an_honest_float_rounding_difference_is_never_guilty():
    a = np.linspace(-1, 1, 64)
    data = mismatch(accused=out(HONEST, "bafyC1"), truth=out(TRUSTED, "bafyC2", trusted=True),
                    strategy="tolerance(rtol=1e-9, atol=0.0, n=2)")
    acc, why = open_accusation(data)
    assert why is None
    mine = Outcome.of(OTHER.peer_id, {"C": "bafyC3"})
    verdict = judge(acc, accused_tensors={"C": a * (1 + 1e-14)}, own=mine, own_tensors={"C": a})
    assert not verdict.guilty
    assert not judge(acc, own=mine).guilty                            # tensors not loaded: no verdict
    bad = a.copy()
    bad[3] = 7.0
    assert judge(acc, accused_tensors={"C": bad}, own=mine, own_tensors={"C": a}).guilty
    # exactly compared, a non-portable graph's different CIDs are no proof either
    acc, _ = open_accusation(mismatch(accused=out(HONEST, "bafyC1")))
    assert not judge(acc, own=Outcome.of(OTHER.peer_id, {"C": "bafyGood"}), portable=False).guilty


def test_a_check_accusation_is_judged_by_rerunning_the_check_with_its_seed():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((32, 16)), rng.standard_normal((16, 8))
    wrong = a @ b
    wrong[2, 2] += 1
    data = accuse(ACCUSER, "job", "t1", "check", INPUTS, out(LIAR, "bafyLie"), check="matmul", seed=42)
    acc, why = open_accusation(data)
    assert why is None and acc.kind == "check"
    assert judge(acc, inputs={"A": a, "B": b}, accused_tensors={"C": wrong}).guilty
    assert not judge(acc, inputs={"A": a, "B": b}, accused_tensors={"C": a @ b}).guilty
    assert not judge(acc).guilty


def resign(acc: Accusation, signer: Identity = ACCUSER, **change) -> bytes:
    return wire.sign_claim(signer, dataclasses.replace(acc, **change))


def test_inconsistent_accusations_are_refused_with_a_reason():
    acc, _ = open_accusation(mismatch())
    cases = {
        "the accused outputs are not the ones its claim signs": dict(accused_outputs=(("C", "bafyOther"),)),
        "the accused claim is for other inputs": dict(inputs=("bafyA",)),
        "the accused claim is for another task": dict(task_id="t2"),
        "the accused claim is not signed by the accused": dict(accused=HONEST.peer_id),
        "the truth outputs are not the ones its claim signs": dict(truth_outputs=(("C", "bafyLie"),)),
        "the proof is the accused's own result": dict(truth_claim=out(LIAR, "bafyX").claim,
                                                      truth_outputs=(("C", "bafyX"),)),
        "the two results are the same: nothing to accuse": dict(truth_claim=out(TRUSTED, "bafyLie").claim,
                                                                 truth_outputs=(("C", "bafyLie"),)),
        "a check accusation names its check": dict(kind="check"),
        "unknown strategy": dict(strategy="majority"),
        "the truth claim is bad": dict(truth_claim=b"junk"),
    }
    for reason, change in cases.items():
        got, why = open_accusation(resign(acc, **change))
        assert got is None and why.startswith(reason), (reason, why)
    got, why = open_accusation(resign(acc, signer=OTHER))
    assert got is None and why == "signed by someone other than the accuser"


FIELDS = ["accuser", "accused", "job_id", "task_id", "inputs", "accused_claim", "accused_outputs",
          "accused_inline", "truth_claim", "truth_outputs", "truth_inline"]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(FIELDS), st.integers(0, 7), st.binary(max_size=40), st.text(min_size=1, max_size=20))
def test_a_forged_or_inconsistent_accusation_is_always_refused(field, who, blob, text):
    """Change any field of a true accusation and re-sign it (a lying accuser can sign anything): it is
    refused unless the change made it another true accusation, which only the accused's signatures allow."""
    acc, _ = open_accusation(mismatch())
    value = {"accuser": IDS[who].peer_id, "accused": IDS[who].peer_id, "job_id": text, "task_id": text,
             "inputs": (text,), "accused_claim": blob, "truth_claim": blob, "accused_outputs": (("C", text),),
             "truth_outputs": (("C", text),), "accused_inline": blob, "truth_inline": blob}[field]
    if value == getattr(acc, field):
        return
    try:
        data = resign(acc, signer=IDS[who] if field == "accuser" else ACCUSER, **{field: value})
    except ValueError:
        return                                                      # not even encodable
    got, why = open_accusation(data)
    if field == "accuser" and IDS[who] not in (LIAR,):
        assert why is None                                          # anyone may forward a true accusation
        return
    assert got is None and why


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 100_000), st.integers(1, 255))
def test_flipped_bytes_are_refused_or_change_nothing_signed(pos, flip):
    data = bytearray(mismatch())
    original, _ = open_accusation(bytes(data))
    pos %= len(data)
    data[pos] ^= flip
    got, why = open_accusation(bytes(data))
    assert got is None and why or got == original


# --- Sybil limits ------------------------------------------------------------------------------------

def test_replicas_never_share_a_subnet_or_a_join_window():
    a = PeerFacts("a", ("/ip4/203.0.113.7/tcp/4001",), joined=0.0)
    b = PeerFacts("b", ("203.0.113.200",), joined=1000.0)
    c = PeerFacts("c", ("198.51.100.1",), joined=1030.0)
    d = PeerFacts("d", ("2001:db8:1:2::1",), joined=5000.0)
    e = PeerFacts("e", ("/ip6/2001:db8:1:ffff::9/tcp/1",), joined=9000.0)
    assert conflict(a, b) == "share the subnet 203.0.113.0/24"
    assert conflict(b, c) == "joined 30s apart (under 60s)"
    assert conflict(a, c) is None and conflict(d, e) == "share the subnet 2001:db8:1::/48"
    assert allowed(c, [a]) is None and allowed(b, [a, d]).endswith("with a peer running this task")
    assert allowed(a, [a]) == "already runs this task"
    assert conflict(a, b, SybilRules(v4_prefix=0)) is None


def test_loopback_and_unparsable_addresses_are_ignored():
    assert subnets(["127.0.0.1", "/ip4/127.0.0.1/tcp/1", "::1", "/dns4/example.org/tcp/1", "0.0.0.0"]) == set()
    assert conflict(PeerFacts("x", ("127.0.0.1",)), PeerFacts("y", ("127.0.0.1",))) is None


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 255), st.floats(0, 1000)), min_size=1, max_size=30),
       st.integers(1, 8), st.integers(0, 2**32))
def test_picked_replicas_never_conflict(peers, k, seed):
    facts = [PeerFacts(i, (f"10.0.{net}.{host}",), joined=t) for i, (net, host, t) in enumerate(peers)]
    picked = pick_replicas(facts, k, [], random.Random(seed), SybilRules(join_window_s=10.0))
    assert len(picked) <= k and picked
    for i, x in enumerate(picked):
        for y in picked[i + 1:]:
            assert conflict(x, y, SybilRules(join_window_s=10.0)) is None


def test_a_coordinator_accuses_from_its_own_verification_and_another_peer_convicts():
    from p2pcompute.scheduler.verification.accusation import accusation_for

    # replication: the trusted re-execution is the proof
    v = TaskVerification(TaskInfo("job", "t1", INPUTS), parse("replicate(2, agree=2)"), random.Random(1))
    v.start()
    v.result(out(HONEST, "bafyGood"))
    v.result(out(LIAR, "bafyLie"))
    cmds = v.result(out(TRUSTED, "bafyGood", trusted=True))
    reject = next(c for c in cmds if isinstance(c, Reject))
    acc, why = open_accusation(accusation_for(ACCUSER, v, reject))
    assert why is None and acc.accused == LIAR.peer_id and acc.kind == "mismatch"
    assert judge(acc, own=Outcome.of(OTHER.peer_id, {"C": "bafyGood"})).guilty
    assert accusation_for(ACCUSER, v, dataclasses.replace(reject, proven=False)) is None

    # a check: its seed is the proof, and the judge reruns it
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((40, 30)), rng.standard_normal((30, 20))
    wrong = a @ b
    wrong[0, 0] += 3
    v = TaskVerification(TaskInfo("job", "t1", INPUTS, check="matmul"), parse("check"), random.Random(1))
    v.start()
    v.result(out(LIAR, "bafyLie"))
    cmds = v.loaded(0, {"C": wrong}, {"A": a, "B": b})
    reject = next(c for c in cmds if isinstance(c, Reject))
    acc, why = open_accusation(accusation_for(ACCUSER, v, reject))
    assert why is None and acc.kind == "check" and acc.check == "matmul"
    assert judge(acc, inputs={"A": a, "B": b}, accused_tensors={"C": wrong}).guilty
    assert not judge(acc, inputs={"A": a, "B": b}, accused_tensors={"C": a @ b}).guilty

    # an unsigned result cannot be shown to others
    v = TaskVerification(TaskInfo("job", "t1", INPUTS), parse("replicate(2, agree=2)"), random.Random(1))
    v.start()
    v.result(Outcome.of(HONEST.peer_id, {"C": "bafyGood"}))
    v.result(Outcome.of(LIAR.peer_id, {"C": "bafyLie"}))
    cmds = v.result(out(TRUSTED, "bafyGood", trusted=True))
    assert accusation_for(ACCUSER, v, next(c for c in cmds if isinstance(c, Reject))) is None


def test_a_peer_id_proof_of_work_is_found_checked_and_bound_to_its_peer():
    from p2pcompute.scheduler.verification.sybil import mint, pow_ok

    peer = bytes(LIAR.peer_id)
    nonce = mint(peer, 12)
    assert pow_ok(peer, nonce, 12) and pow_ok(peer, nonce, 0)
    assert not pow_ok(bytes(HONEST.peer_id), nonce, 12)                 # another ID needs its own work
    assert mint(peer, 12, start=nonce + 1) > nonce
    assert not any(pow_ok(peer, n, 12) for n in range(nonce))          # mint finds the first one
    assert not pow_ok(peer, -1, 0) and not pow_ok(peer, 2**64, 0) and not pow_ok(peer, "1", 0)
    assert not pow_ok(peer, nonce, 33) and mint(peer, 20, tries=10) is None
    work = [mint(bytes([i]) * 38, 8) for i in range(64)]
    assert 64 * 2**8 / 4 < sum(work) + 64 < 64 * 2**8 * 4              # about 2**bits tries on average
