"""Helpers of the scheduler state-machine tests (test_sm_*): small plans and a driver that records commands."""

from __future__ import annotations

import random

from p2pcompute.scheduler import events as ev
from p2pcompute.scheduler.job_state import JobState
from p2pcompute.scheduler.model import InputRef, JobPlan, Requirements, RetryPolicy, TaskSpec


def task(tid, deps=(), inputs=(), cond=None, req=None) -> TaskSpec:
    return TaskSpec(tid, "s", "graph", b"", inputs=tuple(inputs), deps=tuple(deps), condition=cond,
                    requirements=req or Requirements())


def plan(*tasks, retries=3, same=2, backoff=1.0, backoff_max=60.0, outputs=(), job_id="job1") -> JobPlan:
    return JobPlan(job_id, "test", tuple(tasks), RetryPolicy(retries, backoff, backoff_max, same), outputs=outputs)


def chain_plan(n=3, **kw) -> JobPlan:
    """t0 -> t1 -> ... each consuming the previous task's output ``out``."""
    ts = [task("t0")] + [task(f"t{i}", inputs=[InputRef("in", task=f"t{i-1}", output="out")]) for i in range(1, n)]
    return plan(*ts, outputs=((f"t{n-1}", "out"),), **kw)


def of(cmds, cls):
    return [c for c in cmds if isinstance(c, cls)]


class Coord:
    """A JobState and the commands it gave, with shorthands for the executor's side of a task's life."""

    def __init__(self, p: JobPlan, seed=0, config=None, now=0.0, js=None):
        self.js = js or JobState(p, now, random.Random(seed), config)
        self.now = now
        self.log: list = []
        self.last = self.feed_start() if js is None else []

    def feed_start(self):
        out = self.js.start(self.now)
        self.log += out
        return out

    def feed(self, event, now=None):
        if now is not None:
            self.now = now
        self.last = self.js.handle(event, self.now)
        self.log += self.last
        return self.last

    def tick(self, now):
        return self.feed(ev.Tick(), now)

    def offers(self, tid):
        """peer -> lease id of the offers of ``tid`` in the last command batch."""
        return {c.peer: c.lease_id for c in of(self.last, ev.SendOffer) if c.task == tid}

    def dispatched(self, cmds=None):
        return [c.task for c in of(self.last if cmds is None else cmds, ev.Dispatch)]

    def grant(self, tid, peer, peers=None):
        """Place ``tid`` at ``peers`` (default: just ``peer``) and let ``peer`` accept; return the lease id."""
        self.feed(ev.Placed(tid, tuple(peers or (peer,))))
        lease = self.offers(tid)[peer]
        out = self.feed(ev.OfferAccepted(tid, peer, lease))
        assert of(out, ev.GrantLease)[0].lease_id == lease
        return lease

    def finish(self, tid, peer, lease, outputs=None, inline=None):
        outputs = {"out": f"cid-{tid}"} if outputs is None else outputs
        out = self.feed(ev.ResultReady(tid, peer, lease, outputs, inline or {}))
        if outputs:
            assert of(out, ev.FetchResult), out
            out = self.feed(ev.Fetched(tid, lease))
        return out

    def run(self, tid, peer="p1", **kw):
        lease = self.grant(tid, peer)
        return self.finish(tid, peer, lease, **kw)

    def state(self, tid):
        return self.js.tasks[tid].state
