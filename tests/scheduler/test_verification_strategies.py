"""Each verification strategy on crafted results: what it asks for, what it accepts, whom it rejects and why."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pcompute.scheduler.verification.engine import (Accept, Execute, GiveUp, Load, Outcome, Reject, TaskInfo,
                                                      TaskVerification)
from p2pcompute.scheduler.verification.policy import parse

TASK = TaskInfo("job", "tile/0-0", ("cidA", "cidB"))


def tv(text: str, task: TaskInfo = TASK, seed: int = 1, trusted=lambda p: False) -> TaskVerification:
    return TaskVerification(task, parse(text), random.Random(seed), trusted)


def res(peer: str, cid: str = "good", trusted: bool = False, **inline) -> Outcome:
    return Outcome.of(peer, {"out": cid}, inline, trusted=trusted)


def of(cmds, kind):
    return [c for c in cmds if isinstance(c, kind)]


def test_none_takes_the_first_result_unverified_and_refuses_later_ones():
    v = tv("none")
    assert v.start() == [Execute(1, frozenset(), False, "first")]
    out = v.result(res("p1"))
    assert out == [Accept(0, (0,), "single result, not verified", verified=False)] and v.state == "accepted"
    assert v.result(res("p2")) == [] and v.refused == 1


def test_none_asks_again_when_its_execution_is_lost():
    v = tv("none")
    v.start()
    assert of(v.lost(), Execute)[0].n == 1


def test_replicate_accepts_when_k_agree_once_every_execution_is_in():
    v = tv("replicate(3, agree=2)")
    assert v.start()[0].n == 3
    assert v.result(res("p1")) == []
    assert v.result(res("p2")) == []                    # 2 agree, but the third may yet dissent
    out = v.lost()                                      # it is lost: 2 of 2 is enough
    assert of(out, Accept) == [Accept(0, (0, 1), "2 of 2 agree (exact)")] and v.state == "accepted"
    assert v.result(res("p3", "bad")) == [] and v.refused == 1


def test_replicate_dissent_goes_to_a_trusted_peer_which_proves_the_liar_wrong():
    v = tv("replicate(2, agree=2)")
    v.start()
    v.result(res("p1"))
    out = v.result(res("p2", "bad"))
    assert out == [Execute(1, frozenset({"p1", "p2"}), True, "results disagree")]
    out = v.result(res("me", "good", trusted=True))
    rej = of(out, Reject)
    assert [(r.peer, r.proven, r.against) for r in rej] == [("p2", True, 2)]
    assert of(out, Accept)[0].index == 2 and of(out, Accept)[0].agreeing == (2, 0)


def test_replicate_catches_a_colluding_majority_when_one_honest_peer_dissents():
    v = tv("replicate(3, agree=2)")
    v.start()
    for p, cid in (("m1", "lie"), ("h1", "good"), ("m2", "lie")):
        out = v.result(res(p, cid))
    assert of(out, Execute) == [] and v.pending_trusted == 1          # asked once, at the dissent
    out = v.result(res("me", "good", trusted=True))
    assert sorted(r.peer for r in of(out, Reject) if r.proven) == ["m1", "m2"]
    assert v.results[of(out, Accept)[0].index].outputs == (("out", "good"),)


def test_replicate_without_a_trusted_peer_takes_the_majority_and_outvotes_the_rest():
    v = tv("replicate(3, agree=2)")
    v.start()
    v.result(res("p1"))
    v.result(res("p2", "bad"))
    v.lost(trusted=True)                                  # no trusted peer could be found
    out = v.result(res("p3"))
    assert of(out, Accept)[0].agreeing == (0, 2) and of(out, Accept)[0].how == "2 of 3 agree (exact)"
    assert [(r.peer, r.proven) for r in of(out, Reject)] == [("p2", False)]


def test_replicate_asks_for_more_when_executions_are_lost_and_gives_up_at_its_bound():
    v = tv("replicate(2, agree=2)")
    v.start()
    v.result(res("p1"))
    out = v.lost()
    assert out == [Execute(1, frozenset({"p1"}), False, "1 of 2 results to compare")]
    for _ in range(2):
        assert of(v.lost(), Execute)
    out = v.lost()                                        # 5 = 2n + 1 asked: no more
    assert out == [GiveUp("no 2 agreeing results in 1 executions")] and v.state == "failed"


def test_a_peer_cannot_answer_twice_and_unasked_results_are_refused():
    v = tv("replicate(3, agree=2)")
    v.start()
    v.result(res("p1"))
    assert v.result(res("p1")) == [] and v.refused == 1
    assert v.result(res("me", trusted=True)) == [] and v.refused == 2   # no trusted execution was asked


def test_adaptive_replicates_untrusted_peers_and_trusts_trusted_ones_mostly():
    v = tv("adaptive(threshold=5, rate=0.1)")
    v.start()
    out = v.result(res("new"))                        # an unvetted peer: the trusted peer re-executes it
    assert out == [Execute(1, frozenset({"new"}), True, "an unvetted peer's result")]
    acc = of(v.result(res("me", trusted=True)), Accept)[0]
    assert acc.agreeing == (1, 0) and acc.anchored
    v = tv("adaptive(threshold=5, rate=0.1)", trusted=lambda p: p == "old")
    v.start()
    v.result(res("new"))
    out = v.lost(trusted=True)                        # no trusted peer: a second execution
    assert out == [Execute(1, frozenset({"new"}), False, "1 of 2 results to compare")]
    out = v.result(res("other"))                      # two unvetted peers agreeing is what colluders do too
    assert out == [Execute(1, frozenset({"new", "other"}), False, "agreement without an anchor; no trusted peer",
                           vetted=True)]
    acc = of(v.result(res("old")), Accept)[0]         # ... asked of a vetted peer, whose result anchors it
    assert acc.agreeing == (2, 0, 1) and acc.anchored
    v = tv("adaptive(threshold=5, rate=0.1)", trusted=lambda p: p == "old")
    v.start()
    v.result(res("new"))
    v.lost(trusted=True)
    acc = of(v.result(res("old")), Accept)[0]         # a vetted peer anchors the agreement
    assert acc.index == 1 and acc.agreeing == (1, 0) and acc.anchored and "anchored by a vetted peer" in acc.how
    taken = replicated = 0
    for seed in range(400):
        v = tv("adaptive(threshold=5, rate=0.1)", seed=seed, trusted=lambda p: p == "old")
        v.start()
        out = v.result(res("old"))
        taken += bool(of(out, Accept))
        replicated += bool(of(out, Execute))
    assert taken + replicated == 400 and 15 <= replicated <= 70         # about 10% replicated


def test_adaptive_a_trusted_peer_caught_when_replicated_is_proven_wrong():
    seed = next(s for s in range(100) if random.Random(s).random() < 0.5)
    v = tv("adaptive(threshold=5, rate=0.5)", seed=seed, trusted=lambda p: p == "old")
    v.start()
    v.result(res("old", "lie"))
    out = v.result(res("h", "good"))
    assert of(out, Execute)[0].trusted
    out = v.result(res("me", trusted=True))
    assert [(r.peer, r.proven) for r in of(out, Reject)] == [("old", True)]


def test_spot_check_holds_the_drawn_share_until_a_trusted_peer_agrees():
    drawn = 0
    for seed in range(300):
        v = tv("spot-check(0.2)", seed=seed)
        v.start()
        out = v.result(res("p"))
        if of(out, Execute):
            drawn += 1
            assert out == [Execute(1, frozenset({"p"}), True, "spot check")] and v.state == "running"
            out = v.result(res("me", trusted=True))
            assert of(out, Accept)[0].agreeing == (1, 0) and not of(out, Reject)
        else:
            assert of(out, Accept)[0].verified is False
    assert 35 <= drawn <= 90


def test_spot_check_proves_a_lie_and_takes_the_trusted_result():
    seed = next(s for s in range(100) if random.Random(s).random() < 0.2)
    v = tv("spot-check(0.2)", seed=seed)
    v.start()
    v.result(res("liar", "lie"))
    out = v.result(res("me", "good", trusted=True))
    assert [(r.peer, r.proven) for r in of(out, Reject)] == [("liar", True)]
    assert of(out, Accept)[0].index == 1


def test_exact_disagreement_on_a_non_portable_graph_is_not_proof():
    task = TaskInfo("job", "t", portable=False)
    v = tv("replicate(2, agree=2)", task=task)
    v.start()
    v.result(res("p1", "x"))
    v.result(res("p2", "y"))
    out = v.result(res("me", "x", trusted=True))
    assert [(r.peer, r.proven) for r in of(out, Reject)] == [("p2", False)]


def test_tolerance_compares_tensors_and_forgives_rounding_but_not_errors():
    v = tv("tolerance(rtol=1e-9, atol=0)")
    assert v.start()[0].n == 2
    assert v.result(res("p1", "c1")) == []
    out = v.result(res("p2", "c2"))
    assert out == [Load(0), Load(1)]
    a = np.linspace(0, 1, 100)
    assert v.loaded(0, {"out": a}) == []
    out = v.loaded(1, {"out": a * (1 + 1e-13)})                      # last-bit differences: agreement
    assert of(out, Accept)[0].agreeing == (0, 1) and not of(out, Reject)

    v = tv("tolerance(rtol=1e-9, atol=0)")
    v.start()
    v.result(res("h", "c1"))
    v.result(res("liar", "c2"))
    v.loaded(0, {"out": a})
    bad = a.copy()
    bad[7] += 1e-3
    out = v.loaded(1, {"out": bad})
    assert out == [Execute(1, frozenset({"h", "liar"}), True, "results disagree")]
    out = v.result(res("me", "c3", trusted=True))
    assert out == [Load(2)]
    out = v.loaded(2, {"out": a * (1 - 1e-13)})
    assert [(r.peer, r.proven) for r in of(out, Reject)] == [("liar", True)]
    assert of(out, Accept)[0].agreeing == (2, 0)


def test_tolerance_compares_inline_values_too():
    v = tv("tolerance(rtol=1e-6)")
    v.start()
    v.result(Outcome.of("p1", inline={"mean": 0.5}))
    out = v.result(Outcome.of("p2", inline={"mean": 0.5 + 1e-9}))
    assert of(out, Accept)


def test_check_runs_freivalds_on_each_result_and_reruns_after_a_wrong_one():
    task = TaskInfo("job", "tile/0-0", ("cidA", "cidB"), check="matmul")
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((64, 48)), rng.standard_normal((48, 32))
    v = tv("check", task=task)
    assert v.start()[0].n == 1
    assert v.result(res("liar", "bad")) == [Load(0, True)]
    wrong = a @ b
    wrong[5, 6] += 0.5
    out = v.loaded(0, {"product": wrong}, {"A": a, "B": b})
    rej = of(out, Reject)
    assert [(r.peer, r.proven) for r in rej] == [("liar", True)] and "freivalds" in rej[0].reason
    assert of(out, Execute) == [Execute(1, frozenset({"liar"}), False, "previous result failed its check")]
    assert v.result(res("h", "good")) == [Load(1, True)]
    out = v.loaded(1, {"product": a @ b}, {"A": a, "B": b})
    assert of(out, Accept)[0].index == 1 and of(out, Accept)[0].how.startswith("freivalds r=20 seed=")


def test_check_without_a_declared_check_falls_back_to_replication():
    v = tv("check")
    assert v.start()[0].n == 2
    v.result(res("p1"))
    assert of(v.result(res("p2")), Accept)[0].how == "2 of 2 agree (exact) (no check declared)"


@pytest.mark.parametrize("text", ["none", "replicate(3, agree=2)", "adaptive", "spot-check(0.3)", "check",
                                  "tolerance(rtol=1e-6, atol=1e-9)", "replicate(2, rtol=1e-6)"])
def test_every_strategy_accepts_honest_results_and_rejects_no_one(text):
    for seed in range(30):
        v = tv(text, seed=seed, trusted=lambda p: p.startswith("old"))
        cmds = v.start()
        n = 0
        while v.state == "running":
            ex = of(cmds, Execute)
            loads = of(cmds, Load)
            cmds = []
            for e in ex:
                for _ in range(e.n):
                    n += 1
                    cmds += v.result(res(f"me{n}" if e.trusted else f"old{n}" if n % 2 else f"p{n}",
                                         "good", trusted=e.trusted))
            for ld in loads:
                cmds += v.loaded(ld.index, {"out": np.ones(3)})
            assert n < 20
        assert v.state == "accepted" and not v.rejected


STRATEGIES = ["none", "replicate(3, agree=2)", "replicate(2, agree=2)", "adaptive(threshold=1, rate=0.3)",
              "spot-check(0.5)", "tolerance(rtol=1e-9)", "replicate(3, agree=2, rtol=1e-9)"]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(STRATEGIES), st.integers(0, 2**32), st.data())
def test_no_strategy_takes_a_lie_that_an_honest_result_or_a_trusted_peer_contradicted(text, seed, data):
    """Any mix of honest results (equal up to rounding), colluding lies, lazy results (outputs that
    cannot be fetched) and lost executions: a lie is
    taken only if no honest result or trusted peer was there to contradict it; no honest peer is ever
    proven wrong; executions stay within the strategy's bound; after the end nothing more happens."""
    v = tv(text, seed=seed, trusted=lambda p: p.endswith("0"))
    trusted_available = data.draw(st.booleans())
    cmds, n, kinds, lazy = v.start(), 0, {}, {}
    steps = 0
    while v.state == "running" and (of(cmds, Execute) or of(cmds, Load)):
        steps += 1
        assert steps < 100
        pending, cmds = cmds, []
        for c in pending:
            if isinstance(c, Load):
                lie = kinds[c.index] == "lie"
                cmds += v.unavailable(c.index) if lazy.get(c.index) else \
                    v.loaded(c.index, {"out": np.full(4, 2.0 if lie else 1.0 + 1e-15 * c.index)})
                continue
            if not isinstance(c, Execute):
                continue                                      # decisions: checked below, as they come
            for _ in range(c.n):
                n += 1
                if c.trusted and not trusted_available:
                    cmds += v.lost(trusted=True)
                    continue
                if c.trusted:
                    kinds[len(v.results)] = "good"
                    cmds += v.result(res(f"me{n}", f"good{n}" if "tol" in text else "good", trusted=True))
                    continue
                kind = data.draw(st.sampled_from(["good", "lie", "lost", "lazy"]))
                if kind == "lost":
                    cmds += v.lost()
                    continue
                cid = ("good" if kind == "good" else "lie") + (str(n) if "tol" in text or kind == "lazy" else "")
                before = len(v.results)
                cmds += v.result(res(f"p{n}", cid))
                if len(v.results) > before:
                    kinds[before] = "good" if kind == "good" else "lie"
                    lazy[before] = kind == "lazy"
        for c in cmds:
            if isinstance(c, Reject) and (c.proven or "fetched" in c.reason):
                assert kinds[c.index] == "lie" and (c.proven or lazy[c.index])
        assert v.asked <= v.strategy.max_executions
    assert v.state in ("accepted", "failed")
    if v.state == "accepted":
        acc = v.accepted
        seen = [kinds[i] for i in range(len(v.results))]
        if kinds[acc.index] == "lie":
            assert "good" not in seen or not trusted_available
            assert all(kinds[i] == "lie" for i in acc.agreeing)
    assert v.result(res("late")) == [] and v.lost() == []


def test_unfetchable_outputs_do_not_count_and_another_execution_is_asked():
    v = tv("tolerance(rtol=1e-9)")
    v.start()
    v.result(res("h", "c1"))
    assert v.result(res("lazy", "c2")) == [Load(0), Load(1)]
    v.loaded(0, {"out": np.ones(2)})
    out = v.unavailable(1)
    assert out[0] == Reject("lazy", 1, False, "its outputs could not be fetched")
    assert of(out, Execute) == [Execute(1, frozenset({"h", "lazy"}), False, "1 of 2 results to compare")]
    assert v.unavailable(1) == [] and v.refused == 1                 # not loading any more
    out = v.result(res("h2", "c3"))
    assert out == [Load(2)]
    out = v.loaded(2, {"out": np.ones(2) * (1 + 1e-12)})
    assert of(out, Accept)[0].agreeing == (0, 2)


@pytest.mark.parametrize("text", ["replicate(3, agree=2)", "spot-check(1)", "check", "tolerance(rtol=1e-9)",
                                  "adaptive(threshold=1, rate=1)"])
def test_a_replica_taking_over_goes_on_from_the_record(text):
    task = TaskInfo("job", "t", ("a", "b"), check="matmul" if text == "check" else None)
    v = tv(text, task=task)
    v.start()
    v.result(res("p1"))
    rec = v.to_record()
    import cbor2
    rec = cbor2.loads(cbor2.dumps(rec))                              # as the job record carries it
    w = TaskVerification.from_record(rec, task, parse(text), random.Random(9))
    assert w.results == v.results and w.memo == v.memo and w.asked == v.asked
    out = w.resume()
    assert w.asked <= w.strategy.max_executions and w.pending + w.pending_trusted + len(w.loading) > 0
    assert all(c.n >= 1 for c in of(out, Execute)) and (of(out, Execute) or of(out, Load))
    with pytest.raises(ValueError):
        TaskVerification.from_record({"results": "x"}, task, parse(text), random.Random(9))
    done = tv("none")
    done.start()
    done.result(res("p"))
    again = TaskVerification.from_record(done.to_record(), TASK, parse("none"), random.Random(1))
    assert again.state == "accepted" and again.accepted == done.accepted and again.resume() == []


# --- anchored strategies: agreement needs an anchor (a trusted execution or a vetted peer) -------------

def test_anchored_replicate_does_not_take_two_colluders_agreeing_and_escalates_to_the_trusted_peer():
    v = tv("replicate(2, agree=2, anchor=1)")
    v.start()
    v.result(res("m1", "lie"))
    out = v.result(res("m2", "lie"))                    # replicate(2, agree=2) would take this
    assert out == [Execute(1, frozenset({"m1", "m2"}), True, "agreement without an anchor")]
    out = v.result(res("me", "good", trusted=True))
    assert sorted(r.peer for r in of(out, Reject) if r.proven) == ["m1", "m2"]
    acc = of(out, Accept)[0]
    assert v.results[acc.index].outputs == (("out", "good"),) and acc.anchored


def test_anchored_replicate_without_a_trusted_peer_asks_a_vetted_one_and_gives_up_rather_than_guess():
    v = tv("replicate(2, agree=2, anchor=1)", trusted=lambda p: p == "vet")
    v.start()
    v.result(res("m1", "lie"))
    v.result(res("m2", "lie"))
    out = v.lost(trusted=True)
    assert out == [Execute(1, frozenset({"m1", "m2"}), False, "agreement without an anchor; no trusted peer",
                           vetted=True)]
    out = v.result(res("vet", "good"))                 # the vetted peer disagrees: no anchored group of 2 yet
    assert of(out, Execute) and of(out, Execute)[0].n == 1 and not of(out, Accept)
    out = v.result(res("h", "good"))
    acc = of(out, Accept)[0]
    assert v.results[acc.index].peer == "vet" and acc.agreeing == (2, 3) and acc.anchored
    assert sorted((r.peer, r.proven) for r in of(out, Reject)) == [("m1", False), ("m2", False)]
    v = tv("replicate(2, agree=2, anchor=1)")          # nobody vetted, no trusted peer: it never takes a guess
    cmds, n, steps = v.start(), 0, 0
    while v.state == "running" and steps < 20:
        steps += 1
        pending, cmds = of(cmds, Execute), []
        for c in pending:
            for _ in range(c.n):
                cmds += v.lost(trusted=True) if c.trusted else v.result(res(f"m{n}", "lie"))
                n += 1
    assert v.state == "failed" and "no trusted peer" in of(cmds, GiveUp)[0].reason


def test_anchored_credit_only_an_anchored_acceptance_credits_the_ledger():
    from p2pcompute.scheduler.verification.reputation import Ledger
    led = Ledger(threshold=1)
    v = tv("replicate(3, agree=2)")                    # unanchored: a plain majority
    cmds = v.start()
    cmds = v.result(res("a")) + v.result(res("b")) + v.result(res("c"))
    assert of(cmds, Accept) and not of(cmds, Accept)[0].anchored
    led.learn(v.results, cmds, 1.0)
    assert not any(led.is_trusted(p) for p in "abc")   # colluders agreeing vet nobody


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["adaptive(threshold=3, rate=0.5)", "replicate(2, agree=2, anchor=1)",
                        "replicate(3, agree=2, anchor=1)"]), st.integers(0, 2**32), st.data())
def test_an_anchored_strategy_takes_a_lie_only_from_a_vetted_liar(text, seed, data):
    """Colluding liars (any number, agreeing), honest peers, lost executions, a trusted peer that may be
    unavailable, some peers vetted (honest or not): a lie is accepted only if a vetted peer told it."""
    vetted = set(data.draw(st.sets(st.sampled_from([f"p{i}" for i in range(12)]), max_size=4)))
    v = tv(text, seed=seed, trusted=lambda p: p in vetted)
    trusted_available = data.draw(st.booleans())
    cmds, kinds, steps, n = v.start(), {}, 0, 0
    while v.state == "running" and of(cmds, Execute):
        steps += 1
        assert steps < 60
        pending, cmds = of(cmds, Execute), []
        for c in pending:
            for _ in range(c.n):
                if c.trusted:
                    cmds += v.result(res("me", "good", trusted=True)) if trusted_available \
                        else v.lost(trusted=True)
                    continue
                pool = [f"p{i}" for i in range(12) if f"p{i}" not in c.exclude]
                if c.vetted:
                    pool = [p for p in pool if p in vetted]
                if not pool or data.draw(st.integers(0, 9)) == 0:
                    cmds += v.lost()
                    continue
                peer = data.draw(st.sampled_from(pool))
                lie = data.draw(st.booleans())
                before = len(v.results)
                cmds += v.result(res(peer, "lie" if lie else "good"))
                if len(v.results) > before:
                    kinds[before] = lie
        n += 1
    if v.state == "accepted" and kinds.get(v.accepted.index):
        assert any(v.results[i].peer in vetted and kinds.get(i) for i in v.accepted.agreeing)
