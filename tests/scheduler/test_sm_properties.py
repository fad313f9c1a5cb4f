"""Hypothesis on JobState: random results, failures, deaths, duplicates, stale leases, takeovers and ticks.

Invariants: no exception escapes; terminal task states never change, except a done task whose result is
lost (``ResultLost``); no task becomes done twice (across takeovers from the latest record too; a lost result
starts a new line); a taken result is always one of a lease granted to that peer; the
counts match the tasks. Then a final run where every offer succeeds: the job always ends, no task is lost.
"""

from __future__ import annotations

import random

import cbor2
from hypothesis import event, given, settings
from hypothesis import strategies as st

from p2pcompute.scheduler import events as ev
from p2pcompute.scheduler.events import JobConfig
from p2pcompute.scheduler.job_state import JobState
from p2pcompute.scheduler.model import Condition, InputRef
from p2pcompute.scheduler.task_run import TERMINAL
from sm_harness import plan, task

PEERS = ["p0", "p1", "p2", "p3"]
KINDS = ["place"] * 3 + ["accept"] * 3 + ["result"] * 3 + ["fetched"] * 2 + [
    "fail", "beat", "fetch_failed", "died", "tick", "tick", "takeover", "stale", "cancel", "lost"] + ["advance"] * 6
FAIL_KINDS = sorted(ev.FAILURE_KINDS)
CONFIG = JobConfig(lease_s=10.0, offer_timeout_s=30.0, placement_retry_s=1.0, placement_timeout_s=100.0,
                   max_in_flight=3, max_declines=20)


@st.composite
def plans(draw):
    n = draw(st.integers(1, 6))
    tasks = []
    for i in range(n):
        deps = sorted(set(draw(st.lists(st.integers(0, i - 1), max_size=2)))) if i else []
        inputs = [InputRef(f"in{d}", task=f"t{d}", output="out") for d in deps[:1]]
        cond = None
        if deps and draw(st.booleans()):
            cond = Condition(f"t{deps[-1]}", "v", ">", 0.5)
        tasks.append(task(f"t{i}", deps=[f"t{d}" for d in deps], inputs=inputs, cond=cond))
    return plan(*tasks, retries=draw(st.integers(0, 3)), same=draw(st.integers(1, 3)), backoff=2.0,
                backoff_max=8.0, outputs=((f"t{n - 1}", "out"),))


class World:
    def __init__(self, p, seed):
        self.js = JobState(p, 0.0, random.Random(seed), CONFIG)
        self.seed = seed
        self.snapshot = None                                  # a record a lagging replica holds
        self.epoch_start: dict[int, dict] = {0: {}}           # epoch -> task -> (state, lease) it began with
        self.now = 0.0
        self.offers: list[tuple[str, str, str]] = []     # (task, peer, lease) of every SendOffer
        self.granted: set[tuple[str, str, str]] = set()
        self.fetches: list[tuple[str, str]] = []
        self.dispatches: list[str] = []
        self.done_count = {t: 0 for t in self.js.tasks}
        self.states = {t: x.state for t, x in self.js.tasks.items()}
        self.reopened: str | None = None                    # the task of the ResultLost being fed
        self.losses = 0                                     # results lost, taken again since
        self.absorb(self.js.start(0.0))

    def absorb(self, out):
        for c in out:
            if isinstance(c, ev.SendOffer):
                self.offers.append((c.task, c.peer, c.lease_id))
            elif isinstance(c, ev.GrantLease):
                self.granted.add((c.task, c.peer, c.lease_id))
            elif isinstance(c, ev.FetchResult):
                self.fetches.append((c.task, c.lease_id))
            elif isinstance(c, ev.Dispatch):
                self.dispatches.append(c.task)
        self.check()

    def feed(self, e):
        self.absorb(self.js.handle(e, self.now))

    def check(self):
        js = self.js
        for tid, t in js.tasks.items():
            old = self.states[tid]
            if tid == self.reopened and old == "done" and t.state != "done":
                # placed again, or queued to be (behind tasks waiting for room): either way not done, unkept
                assert t.state in ("placing", "ready") and not t.outputs and t.accepted is None
                self.done_count[tid] = 0                     # a new result will be taken
                self.losses += 1
            elif old in TERMINAL:
                assert t.state == old, f"{tid} left terminal state {old} for {t.state}"
            elif t.state == "done":
                self.done_count[tid] += 1
            assert self.done_count[tid] <= 1
            self.states[tid] = t.state
            if t.accepted is not None:
                assert (tid, t.peer, t.accepted) in self.granted
                # a coordinator takes only results of its own leases, or one its record had taken already
                own = t.accepted.startswith(js._lease_prefix)
                assert own or self.epoch_start[js.epoch].get(tid, (None, None))[1] == t.accepted
        assert sum(js.counts.values()) == len(js.tasks)
        for s, n in js.counts.items():
            assert n == sum(1 for t in js.tasks.values() if t.state == s)

    def takeover(self, record=None):
        """A replica takes over from the latest record, or (``record``) from one that lags behind."""
        record = record or cbor2.loads(cbor2.dumps(self.js.to_record()))
        if record is not None and record["version"] < self.js.version:
            # what the old coordinator took since that record is lost with it: count in the new line only
            self.done_count = {t["id"]: int(t["state"] == "done") for t in record["tasks"]}
            self.states = {t["id"]: t["state"] for t in record["tasks"]}
            before = {t["id"]: (t["state"], t["lease"]) for t in record["tasks"]}
        else:
            before = {tid: (t.state, t.lease) for tid, t in self.js.tasks.items()}
        self.js = JobState.from_record(record, self.now, random.Random(len(self.offers)), CONFIG)
        if len(self.offers) % 2:          # half the takeovers hold the job's end until its results are found
            self.js.hold_results()
        self.epoch_start[self.js.epoch] = before
        self.absorb(self.js.start(self.now))

    def live(self, state):
        """What a well-behaved peer would answer now: (task, peer, lease) of open offers or current leases."""
        js = self.js
        if state == "offered":
            return [(tid, p, lease) for tid, t in js.tasks.items() for lease, p in t.offers.items()]
        return [(tid, t.peer, t.lease) for tid, t in js.tasks.items() if t.state == state]

    def step(self, kind, i, j, x):
        """Two in three picks are of live offers and leases, the rest of any ever issued (stale, duplicate)."""
        pick = lambda seq: seq[i % len(seq)] if seq else None   # noqa: E731
        fresh = j % 3 != 2
        if kind == "place" and self.dispatches:
            placing = [tid for tid, t in self.js.tasks.items() if t.state == "placing"]
            peers = tuple(PEERS[(j + k) % len(PEERS)] for k in range(0 if x < 4 else 1 + i % 3))
            self.feed(ev.Placed(pick(placing if fresh and placing else self.dispatches), peers, "none free"))
        elif kind == "accept" and self.offers:
            t, p, lease = pick(fresh and self.live("offered") or self.offers)
            self.feed(ev.OfferAccepted(t, p, lease))
        elif kind == "result" and self.offers:
            t, p, lease = pick(fresh and self.live("running") or sorted(self.granted) or self.offers)
            outputs = {} if j % 5 == 4 else {"out": f"cid-{lease}"}
            self.feed(ev.ResultReady(t, p, lease, outputs, {"v": x / 40}))
        elif kind == "fail" and self.offers:
            t, p, lease = pick(fresh and self.live("running") or self.offers)
            self.feed(ev.TaskFailed(t, p, lease, FAIL_KINDS[j % len(FAIL_KINDS)], f"msg{j % 2}"))
        elif kind == "beat" and self.offers:
            t, p, lease = pick(fresh and self.live("running") or self.offers)
            self.feed(ev.Heartbeat(t, p, lease))
        elif kind in ("fetched", "fetch_failed") and self.fetches:
            live = [(t, lease) for t, _, lease in self.live("fetching")]
            t, lease = pick(fresh and live or self.fetches)
            self.feed(ev.Fetched(t, lease) if kind == "fetched" else ev.FetchFailed(t, lease, "gone"))
        elif kind == "advance":
            self.advance(pick(list(self.js.tasks)), f"p{j % 6}")
        elif kind == "died":
            self.feed(ev.MemberDied(PEERS[j % len(PEERS)]))
        elif kind == "tick":
            self.now += x
            self.feed(ev.Tick())
        elif kind == "takeover" and i % 3 == 1:
            self.takeover()
        elif kind == "takeover" and i % 3 == 2:
            if self.snapshot is None or j % 2:
                self.snapshot = cbor2.loads(cbor2.dumps(self.js.to_record()))
            else:
                self.takeover(self.snapshot)
                self.snapshot = None
        elif kind == "stale":
            self.feed(ev.ResultReady(f"t{i % 7}", "p9", f"9.{j}", {"out": "x"}, {}))
        elif kind == "cancel" and self.seed % 8 == 1:
            self.feed(ev.Cancel())
        elif kind == "lost":
            self.reopened = pick([tid for tid, t in self.js.tasks.items() if t.state == "done"] or list(self.js.tasks))
            self.feed(ev.ResultLost(self.reopened, "not found"))
            self.reopened = None

    def advance(self, tid, peer, v=1.0):
        """The next step of ``tid`` as a well-behaved peer takes it; False if it waits for nothing we do."""
        t = self.js.tasks[tid]
        if t.state == "placing":
            self.feed(ev.Placed(tid, (peer,)))
        elif t.state == "offered":
            lease, p = next(iter(t.offers.items()))
            self.feed(ev.OfferAccepted(tid, p, lease))
        elif t.state == "running":
            self.feed(ev.ResultReady(tid, t.peer, t.lease, {"out": f"cid-{t.lease}"}, {"v": v}))
        elif t.state == "fetching":
            self.feed(ev.Fetched(tid, t.lease))
        elif t.state == "done" and tid in self.js._unconfirmed:     # found again after a takeover
            self.feed(ev.Fetched(tid, t.accepted))
        else:
            return False
        return True

    def drain(self):
        """Every offer succeeds from now on: place on a good peer, accept, succeed, fetch."""
        for n in range(1000):
            js = self.js
            if js.state != "running":
                return n
            progressed = False
            for tid in list(js.tasks):
                progressed |= self.advance(tid, f"good{n}")
                if self.js.state != "running":
                    break
            if not progressed:
                deadline = js.next_deadline()
                assert deadline is not None, "a running job with nothing to do and no timer: a task is lost"
                self.now = max(self.now, deadline)
                self.feed(ev.Tick())
        raise AssertionError("the job did not end")


ops = st.lists(st.tuples(st.sampled_from(KINDS), st.integers(0, 60), st.integers(0, 60),
                         st.floats(0.0, 40.0, allow_nan=False)), min_size=20, max_size=150)


@settings(max_examples=300, deadline=None)
@given(plans(), ops, st.integers(0, 2**16))
def test_random_event_sequences_keep_the_invariants_and_the_job_ends(p, steps, seed):
    w = World(p, seed)
    for step in steps:
        w.step(*step)
    done, epoch = min(2, sum(w.done_count.values())), min(w.js.epoch, 2)
    event(f"before the final run: {w.js.state}, {done}+ done, epoch {epoch}+")
    w.drain()
    js = w.js
    event(f"job {js.state}")
    assert js.state in ("done", "failed", "cancelled")
    assert all(t.state in TERMINAL for t in js.tasks.values())
    if js.state == "done":
        assert all(t.state in ("done", "skipped") for t in js.tasks.values())
        assert all(cid is not None or js.tasks[tid].state == "skipped" for tid, _, cid in js.outputs())
    elif js.state == "failed":
        assert any(t.state == "failed" for t in js.tasks.values()) and js.reason
    if not any(n for n in w.epoch_start if n):        # results_accepted counts over every coordinator
        assert js.stats["results_accepted"] == sum(w.done_count.values()) + w.losses


@settings(max_examples=100, deadline=None)
@given(plans(), st.integers(0, 2**16))
def test_without_faults_every_job_succeeds(p, seed):
    w = World(p, seed)
    w.drain()
    assert w.js.state == "done" and w.js.stats["refused"] == 0
