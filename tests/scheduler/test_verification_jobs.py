"""JobState with a verification policy (verification/replicated.py): replicas, trusted re-executions, bans."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pcompute.scheduler import events as ev
from p2pcompute.scheduler.job_state import JobState
from p2pcompute.scheduler.model import JobPlan
from p2pcompute.scheduler.verification.replicated import BanPeer, PeerBanned, VerifyEnv
from p2pcompute.scheduler.verification.reputation import Ledger
from p2pcompute.scheduler.verification.sybil import PeerFacts

from sm_harness import chain_plan, of, plan, task

PEERS = tuple(f"p{i}" for i in range(10))


def vplan(strategy: str, n_tasks: int = 1, **kw) -> JobPlan:
    p = chain_plan(n_tasks, **kw) if n_tasks > 1 else plan(task("t0"), outputs=(("t0", "out"),), **kw)
    return JobPlan(p.job_id, p.name, p.tasks, p.retry, outputs=p.outputs, verification=strategy)


def env(trusted=("sub",), **kw) -> VerifyEnv:
    return VerifyEnv(ledger=Ledger(threshold=3), trusted=lambda job: list(trusted),
                     traits=lambda spec: (True, None), **kw)


class World:
    """A JobState and a tiny world of executors: ``liars`` answer ``bad`` (all the same: colluding)."""

    def __init__(self, strategy: str, liars=(), n_tasks=1, trusted=("sub",), seed=0, e=None):
        self.env = e or env(trusted)
        self.js = JobState(vplan(strategy, n_tasks), 0.0, random.Random(seed), verify=self.env)
        self.liars = set(liars)
        self.now = 0.0
        self.out = self.js.start(0.0)
        self.log = list(self.out)

    def feed(self, e):
        self.out = self.js.handle(e, self.now)
        self.log += self.out
        return self.out

    def place(self, tid, peers=PEERS):
        d = [c for c in self.out if isinstance(c, ev.Dispatch) and c.task == tid]
        assert d, self.out
        return self.feed(ev.Placed(tid, tuple(peers)))

    def answer(self, tid):
        """Every offer of ``tid`` in the last batch is accepted and answered (liars lie): the commands."""
        offers = [c for c in self.out if isinstance(c, ev.SendOffer) and c.task == tid]
        out = []
        for o in offers:
            g = self.feed(ev.OfferAccepted(tid, o.peer, o.lease_id))
            assert of(g, ev.GrantLease)
        for o in offers:
            cid = f"bad-{tid}" if o.peer in self.liars else f"good-{tid}"
            out += self.feed(ev.ResultReady(tid, o.peer, o.lease_id, {"out": cid}))
        self.out = out
        return out


def test_replicate_places_n_distinct_peers_and_accepts_when_they_agree():
    w = World("replicate(3, agree=2)")
    assert of(w.out, ev.Dispatch)[0].wanted >= 3
    w.place("t0")
    offers = of(w.out, ev.SendOffer)
    assert len(offers) == 3 and len({o.peer for o in offers}) == 3
    out = w.answer("t0")
    fetch = of(out, ev.FetchResult)
    assert len(fetch) == 1 and dict(fetch[0].cids) == {"out": "good-t0"}
    w.feed(ev.Fetched("t0", fetch[0].lease_id))
    assert w.js.state == "done" and w.js.outputs() == (("t0", "out", "good-t0"),)
    ver = w.js.tasks["t0"].verified
    assert ver["how"].startswith("3 of 3 agree") and len(ver["peers"]) == 3 and ver["executions"] == 3
    assert w.js.describe()[0]["verification"]["accepted"]["how"] == ver["how"]


def test_a_dissent_goes_to_the_trusted_peer_and_the_liar_is_banned():
    w = World("replicate(3, agree=2)", liars={"p0", "p1", "p2", "p3", "p4"})
    w.place("t0", peers=("p0", "p5", "p6"))                  # one liar among three
    out = w.answer("t0")
    trusted = [o for o in of(out, ev.SendOffer) if o.peer == "sub"]
    assert len(trusted) == 1 and not of(out, ev.FetchResult)
    w.feed(ev.OfferAccepted("t0", "sub", trusted[0].lease_id))
    out = w.feed(ev.ResultReady("t0", "sub", trusted[0].lease_id, {"out": "good-t0"}))
    assert [b.peer for b in of(out, BanPeer)] == ["p0"]
    assert dict(of(out, ev.FetchResult)[0].cids) == {"out": "good-t0"}
    assert w.env.ledger.banned("p0") and not w.env.ledger.banned("p5")
    ver = w.js.tasks["t0"].verified
    assert ver["rejected"] == [["p0", True, ver["rejected"][0][2]]] and ver["trusted"] == ["sub"]


def test_a_colluding_pair_is_caught_by_the_honest_dissent_and_banned_both():
    w = World("replicate(3, agree=2)", liars={"p0", "p1"})
    w.place("t0", peers=("p0", "p1", "p5"))
    out = w.answer("t0")
    lease = [o for o in of(out, ev.SendOffer) if o.peer == "sub"][0].lease_id
    w.feed(ev.OfferAccepted("t0", "sub", lease))
    out = w.feed(ev.ResultReady("t0", "sub", lease, {"out": "good-t0"}))
    assert sorted(b.peer for b in of(out, BanPeer)) == ["p0", "p1"]
    assert dict(of(out, ev.FetchResult)[0].cids) == {"out": "good-t0"}


def test_without_a_trusted_peer_the_majority_wins_and_the_minority_is_only_counted():
    w = World("replicate(3, agree=2)", liars={"p0"}, trusted=())
    w.place("t0", peers=("p0", "p5", "p6"))
    out = w.answer("t0")
    assert dict(of(out, ev.FetchResult)[0].cids) == {"out": "good-t0"} and not of(out, BanPeer)
    assert not w.env.ledger.banned("p0") and w.env.ledger.record("p0").invalid == 1


def test_banned_peers_are_never_chosen_again():
    e = env()
    e.ledger.ban("p0", "caught", 0.0)
    w = World("replicate(2, agree=2)", e=e)
    w.place("t0", peers=("p0", "p1", "p2"))
    assert "p0" not in {o.peer for o in of(w.out, ev.SendOffer)}


def test_sybil_rules_keep_replicas_off_one_subnet():
    facts = {p: PeerFacts(p, (f"/ip4/10.0.{0 if i < 5 else i}.{i + 1}",), None) for i, p in enumerate(PEERS)}
    w = World("replicate(3, agree=2)", e=env(facts=facts.__getitem__))
    w.place("t0")
    picked = [o.peer for o in of(w.out, ev.SendOffer)]
    assert len(picked) == 3 and sum(1 for p in picked if int(p[1:]) < 5) <= 1


def test_a_refused_offer_is_placed_again_and_a_lost_execution_asked_again():
    w = World("replicate(2, agree=2)")
    w.place("t0", peers=("p0", "p1"))
    o0, o1 = of(w.out, ev.SendOffer)
    w.feed(ev.TaskFailed("t0", o0.peer, o0.lease_id, ev.REJECTED, "busy"))
    w.now = 2.0
    out = w.feed(ev.Tick())
    assert of(out, ev.Dispatch)                              # placed again, not counted as an execution
    w.feed(ev.OfferAccepted("t0", o1.peer, o1.lease_id))
    w.feed(ev.TaskFailed("t0", o1.peer, o1.lease_id, ev.CRASH, "boom"))
    assert w.js.tasks["t0"].failures == 1 and w.js.state == "running"
    w.feed(ev.Placed("t0", ("p2",)))                          # the re-placed execution comes back alone
    o2 = of(w.out, ev.SendOffer)[0]
    w.feed(ev.OfferAccepted("t0", "p2", o2.lease_id))
    out = w.feed(ev.ResultReady("t0", "p2", o2.lease_id, {"out": "good-t0"}))
    assert of(out, ev.Dispatch) and not of(out, ev.FetchResult)   # the lost one is asked again


def test_adaptive_takes_a_trusted_peers_result_alone():
    e = env()
    for _ in range(3):
        e.ledger.valid("p1", 0.0)
    w = World("adaptive(threshold=3, rate=0)", e=e)
    w.place("t0", peers=("p5", "p6"))                          # placement names no vetted peer: its crew instead
    assert [o.peer for o in of(w.out, ev.SendOffer)] == ["p1"]
    out = w.answer("t0")
    assert of(out, ev.FetchResult) and w.js.tasks["t0"].verified["verified"] is False


def test_adaptive_sends_an_unvetted_peers_result_to_the_trusted_peer_and_credits_it():
    w = World("adaptive(threshold=3, rate=0)")
    w.place("t0", peers=("p4",))
    w.answer("t0")
    trusted = of(w.out, ev.SendOffer)
    assert [o.peer for o in trusted] == ["sub"]
    w.answer("t0")
    assert w.js.tasks["t0"].verified["trusted"] == ["sub"] and w.env.ledger.record("p4").consecutive == 1
    w2 = World("adaptive(threshold=3, rate=0)", e=w.env, seed=1)     # p4 is in this coordinator's crew now
    w2.place("t0", peers=("p5", "p6"))
    assert [o.peer for o in of(w2.out, ev.SendOffer)] == ["p4"]


def test_anchored_replicate_does_not_take_two_colluders_and_bans_them_by_the_trusted_peer():
    w = World("replicate(2, agree=2, anchor=1)", liars=PEERS)
    w.place("t0")
    w.answer("t0")                                            # two liars agree: no anchor among them
    assert [o.peer for o in of(w.out, ev.SendOffer)] == ["sub"] and not of(w.log, ev.FetchResult)
    out = w.answer("t0")
    assert len(of(out, BanPeer)) == 2 and dict(of(out, ev.FetchResult)[0].cids) == {"out": "good-t0"}


def test_anchored_replicate_puts_a_replica_on_a_vetted_peer_and_takes_what_agrees_with_it():
    e = env(trusted=())
    for _ in range(3):
        e.ledger.valid("v", 0.0)
    w = World("replicate(2, agree=2, anchor=1)", liars=("p1",), e=e)
    w.place("t0", peers=("p1", "p3"))                         # no vetted peer named: one replica on its crew
    offers = of(w.out, ev.SendOffer)
    assert len(offers) == 2 and offers[0].peer == "v"
    if offers[1].peer != "p1":                                # the other one: a liar, for this test
        w.feed(ev.TaskFailed("t0", offers[1].peer, offers[1].lease_id, ev.CRASH, "refused"))
        w.place("t0", peers=("p1",))
        w.out = [offers[0]] + of(w.out, ev.SendOffer)
    w.answer("t0")                                            # they disagree; no trusted peer to ask
    assert not of(w.log, ev.FetchResult) and of(w.out, ev.Dispatch)
    w.place("t0", peers=("p2",))
    out = w.answer("t0")
    fetch = of(out, ev.FetchResult)
    assert fetch[0].peer == "v" and dict(fetch[0].cids) == {"out": "good-t0"}
    assert w.js.tasks["t0"].verified["peers"] == ["v", "p2"] and not of(w.log, BanPeer)   # outvoted, not proven


def test_a_stale_result_after_acceptance_is_not_taken_again():
    w = World("replicate(2, agree=2)")
    w.place("t0")
    offers = of(w.out, ev.SendOffer)
    w.answer("t0")
    f = of(w.log, ev.FetchResult)[0]
    w.feed(ev.Fetched("t0", f.lease_id))
    for o in offers:
        w.feed(ev.ResultReady("t0", o.peer, o.lease_id, {"out": "good-t0"}))
    assert w.js.stats["results_accepted"] == 1 and w.js.state == "done"


def test_a_job_verified_survives_a_takeover_from_its_record():
    w = World("replicate(2, agree=2)", n_tasks=2)
    w.place("t0")
    w.answer("t0")
    f = of(w.log, ev.FetchResult)[0]
    w.feed(ev.Fetched("t0", f.lease_id))
    w.place("t1")
    rec = w.js.to_record()
    js2 = JobState.from_record(rec, 5.0, random.Random(9), verify=w.env)
    out = js2.start(5.0)
    assert js2.tasks["t0"].state == "done" and js2.tasks["t0"].verified["executions"] == 2
    assert [d.task for d in of(out, ev.Dispatch)] == ["t1"]


# --- properties: a random world of executors --------------------------------------------------------

def run_world(strategy, liars, trusted, seed, n_tasks=3, fail_p=0.1, peers=PEERS, ban_p=0.0):
    """Drive a job to its end with executors answering in a random order (some failing, some lapsing);
    with ``ban_p``, a liar is banned from elsewhere (``PeerBanned``) at random moments."""
    rng = random.Random(seed)
    e = env(trusted)
    js = JobState(vplan(strategy, n_tasks), 0.0, random.Random(seed), verify=e)
    now, queue, fetched = 0.0, list(js.start(0.0)), []
    offers: dict = {}
    for _ in range(3000):
        if js.state != "running":
            break
        more = []
        for c in queue:
            if isinstance(c, ev.Dispatch):
                more += js.handle(ev.Placed(c.task, tuple(rng.sample(peers, len(peers)))), now)
            elif isinstance(c, ev.SendOffer):
                offers[c.lease_id] = c
            elif isinstance(c, ev.Revoke):
                offers.pop(c.lease_id, None)
            elif isinstance(c, ev.FetchResult):
                fetched.append((c.task, dict(c.cids)))
                more += js.handle(ev.Fetched(c.task, c.lease_id), now)
        queue = more
        if queue:
            continue
        if not offers:
            now += 5.0
            queue = js.handle(ev.Tick(), now)
            continue
        if ban_p and rng.random() < ban_p and liars - set(e.ledger.bans):
            p = rng.choice(sorted(liars - set(e.ledger.bans)))
            e.ledger.ban(p, "caught elsewhere", now)
            queue = js.handle(PeerBanned(p), now)
            continue
        lease = rng.choice(sorted(offers))
        o = offers.pop(lease)
        queue = js.handle(ev.OfferAccepted(o.task, o.peer, lease), now)
        r = rng.random()
        if r < fail_p:
            queue += js.handle(ev.TaskFailed(o.task, o.peer, lease, ev.CRASH, "boom"), now)
        else:
            cid = f"bad-{o.task}" if o.peer in liars else f"good-{o.task}"
            queue += js.handle(ev.ResultReady(o.task, o.peer, lease, {"out": cid}), now)
    return js, e, fetched


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), n_liars=st.integers(0, 1), trusted=st.booleans())
def test_no_wrong_result_with_an_honest_majority_under_replicate(seed, n_liars, trusted):
    liars = set(random.Random(seed).sample(PEERS[:3], n_liars))
    js, e, fetched = run_world("replicate(3, agree=2)", liars, ("sub",) if trusted else (), seed,
                               peers=PEERS[:3] + ("p8", "p9"))
    assert js.state in ("done", "failed")
    assert all(cids["out"].startswith("good") for _, cids in fetched)
    assert len(fetched) == len({t for t, _ in fetched}) == js.stats["results_accepted"]
    assert not any(e.ledger.banned(p) for p in PEERS if p not in liars)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), n_liars=st.integers(0, 9),
       strategy=st.sampled_from(["replicate(3, agree=2)", "replicate(2, agree=2)", "adaptive(threshold=2)",
                                 "spot-check(0.5)"]))
def test_no_task_accepted_twice_none_lost_and_honest_peers_never_banned(seed, n_liars, strategy):
    liars = set(random.Random(seed).sample(PEERS, n_liars))
    js, e, fetched = run_world(strategy, liars, ("sub",), seed)
    assert js.state in ("done", "failed"), js.describe()
    done = [t for t in js.tasks.values() if t.state == "done"]
    assert len(fetched) == len({t for t, _ in fetched}) == len(done) == js.stats["results_accepted"]
    if js.state == "done":
        assert len(done) == 3
    assert not any(e.ledger.banned(p) for p in PEERS if p not in liars)
    # a wrong result is taken only when no honest result was ever seen for that task (no dissent to act on)
    for tid, cids in fetched:
        if cids["out"].startswith("bad"):
            assert all(p in liars for p in js.tasks[tid].verified["peers"])


def test_a_ban_retracts_done_tasks_resting_on_the_peer_and_what_read_them():
    w = World("replicate(2, agree=2)", liars={"p0", "p1"}, n_tasks=2, trusted=())
    w.place("t0", peers=("p0", "p1"))                       # two colluders agree: accepted, nothing to see
    w.answer("t0")
    f = of(w.log, ev.FetchResult)[0]
    assert dict(f.cids) == {"out": "bad-t0"}
    w.feed(ev.Fetched("t0", f.lease_id))
    w.place("t1", peers=("p5", "p6"))
    w.answer("t1")
    f1 = [c for c in of(w.log, ev.FetchResult) if c.task == "t1"][0]
    assert w.js.tasks["t1"].state == "fetching"
    out = w.feed(PeerBanned("p0"))
    assert w.js.tasks["t0"].state in ("ready", "running") and w.js.stats["results_retracted"] == 1
    assert w.js.stats["results_accepted"] == 0
    assert of(out, ev.Dispatch) and of(out, ev.Dispatch)[0].task == "t0"
    w.feed(ev.Fetched("t1", f1.lease_id))                    # a fetch of a task that waits again: stale
    assert w.js.tasks["t1"].state != "done"
    w.feed(ev.Placed("t0", ("p5", "p6")))
    w.answer("t0")
    f = [c for c in of(w.log, ev.FetchResult) if c.task == "t0"][-1]
    assert dict(f.cids) == {"out": "good-t0"}


def test_peer_banned_leaves_tasks_a_trusted_execution_settled():
    w = World("replicate(3, agree=2)", liars={"p0"})
    w.place("t0", peers=("p0", "p5", "p6"))
    out = w.answer("t0")
    lease = [o for o in of(out, ev.SendOffer) if o.peer == "sub"][0].lease_id
    w.feed(ev.OfferAccepted("t0", "sub", lease))
    out = w.feed(ev.ResultReady("t0", "sub", lease, {"out": "good-t0"}))
    w.feed(ev.Fetched("t0", of(out, ev.FetchResult)[0].lease_id))
    assert w.js.state == "done"
    w.feed(PeerBanned("p5"))
    assert w.js.stats["results_retracted"] == 0


def test_a_banned_peers_running_execution_is_revoked_and_asked_elsewhere():
    w = World("replicate(2, agree=2)")
    w.place("t0", peers=("p0", "p1"))
    o = {c.peer: c.lease_id for c in of(w.out, ev.SendOffer)}
    w.feed(ev.OfferAccepted("t0", "p0", o["p0"]))
    w.env.ledger.ban("p0", "caught elsewhere", 0.0)
    out = w.feed(PeerBanned("p0"))
    assert [r.peer for r in of(out, ev.Revoke)] == ["p0"]
    w.feed(ev.OfferAccepted("t0", "p1", o["p1"]))
    out = w.feed(ev.ResultReady("t0", "p1", o["p1"], {"out": "good-t0"}))
    d = of(out, ev.Dispatch)                                 # the lost execution is asked again, not of p0
    assert d and "p0" in d[0].avoid and not of(out, ev.FetchResult)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), n_liars=st.integers(1, 6))
def test_bans_from_elsewhere_mid_job_keep_every_task_accepted_once_and_retract_only_what_rests_on_liars(seed, n_liars):
    liars = set(random.Random(seed).sample(PEERS, n_liars))
    js, e, fetched = run_world("replicate(2, agree=2)", liars, (), seed, ban_p=0.2)
    assert js.state in ("done", "failed")
    done = [t for t in js.tasks.values() if t.state == "done"]
    assert js.stats["results_accepted"] == len(done)
    assert len(fetched) == len(done) + js.stats["results_lost"]    # a retraction takes ResultLost's path
    assert not any(e.ledger.banned(p) for p in PEERS if p not in liars)
    for t in done:                         # what is accepted at the end rests on no banned peer
        assert not set(t.verified["peers"]) & set(e.ledger.bans) or t.verified["trusted"]
