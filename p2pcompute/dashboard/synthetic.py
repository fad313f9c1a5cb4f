"""Synthetic state for the dashboard's bench and tests: many members, a job of many tasks, a node to serve them.

``members`` and ``job_tasks`` make rows of the shapes views.py reads (node.peers() rows and TaskRun-like
objects), from an injected ``random.Random``; ``verify_tasks`` gives a job's done tasks the signed evidence
of a verified job (evidence.py reads it). ``SyntheticNode`` has the parts of a Node the dashboard's
service reads (``status``, ``peers``, ``services``, ``transport.stats``, ``ping``), so the real service and
the real control API serve the synthetic state to a real browser (bench/bench_dashboard.py).
"""

from __future__ import annotations

import random
from collections import Counter
from types import SimpleNamespace
from typing import Any

from ..node.transport import TransportStats

OUTCOMES = ("ok",) * 18 + ("failed", "lost")


def peer_id(rng: random.Random) -> str:
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    return "12D3KooW" + "".join(rng.choice(alphabet) for _ in range(44))


def members(n: int, rng: random.Random) -> list[dict[str, Any]]:
    """``n`` peer rows as ``Node.peers()`` gives them: mostly alive, some suspect, dead and left."""
    rows = []
    for i in range(n):
        state = rng.choices(("alive", "suspect", "dead", "left"), (90, 3, 5, 2))[0]
        rows.append({"peer_id": peer_id(rng), "state": state, "connected": state == "alive" and i < 32,
                     "addresses": [f"/ip4/10.{i // 250}.{i % 250}.{rng.randrange(1, 250)}/tcp/4001"],
                     "cpus": float(rng.choice((2, 4, 8, 16))), "memory": rng.choice((4, 8, 16, 32)) << 30,
                     "labels": {"region": rng.choice(("eu", "us", "asia"))}, "agent": "p2pcompute/0.1.0",
                     "bootstrap": i == 0, "last_seen_s_ago": round(rng.random() * 5, 1), "failures": 0,
                     "last_error": "", "arch": "x86_64", "free_slots": rng.randrange(0, 9),
                     "load": round(rng.random(), 2), "opsets": ["ops/v1", "ops/v2"], "wasm": True})
    return rows


def job_tasks(n: int, peers: list[str], rng: random.Random, created: float = 0.0,
              running: float = 0.1) -> dict[str, Any]:
    """A two-stage job of ``n`` tasks (a map, then a combine per 100), as TaskRun-like objects: most done,
    ``running`` of them running, a few failed attempts retried."""
    tasks: dict[str, Any] = {}
    first = n - max(1, n // 100)
    clock = created
    for i in range(n):
        stage = "map" if i < first else "combine"
        tid = f"{stage}/{i if stage == 'map' else i - first:05d}"
        deps = () if stage == "map" else tuple(f"map/{j:05d}" for j in range((i - first) * 100, min(first, (i - first + 1) * 100)))
        attempts = []
        t = created + rng.random() * 600
        state = "running" if rng.random() < running else "done"
        for k in range(1 + (rng.random() < 0.05)):
            end = None if state == "running" and k == 0 else t + rng.random() * 20
            outcome = None if end is None else ("failed" if k == 0 and rng.random() < 0.05 else "ok")
            attempts.append({"peer": rng.choice(peers), "lease": f"0.1.{i}.{k}", "start": t, "end": end,
                             "outcome": outcome, "message": "" if outcome != "failed" else "exit status 1"})
            if end is None:
                break
            clock = max(clock, end)
            t = end + 0.5
        outputs = {} if state == "running" else {f"y/{i:05d}": f"Qm{rng.getrandbits(200):050x}"[:46]}
        tasks[tid] = SimpleNamespace(spec=SimpleNamespace(stage=stage, deps=deps), state=state, reason="",
                                     attempts=attempts, attempts_dropped=0, outputs=outputs,
                                     story=[(created, "start", "waiting", "ready")])
    return tasks


STRATEGY = "replicate(2, agree=2)"


def verify_tasks(tasks: dict[str, Any], rng: random.Random, job_id: str = "jsynthetic", executors: int = 8) -> None:
    """Make each done task of ``tasks`` verified under ``STRATEGY``: two executions on distinct (real,
    generated) peers that signed claims of its outputs, and the coordinator's signed evidence in its
    ``verified``, as scheduler/verification/replicated.py leaves it (a few thousand signatures a second)."""
    from ..node import wire
    from ..node.identity import Identity
    from ..scheduler.verification import signed

    coordinator = Identity.from_seed(rng.randbytes(32))
    pool = [Identity.from_seed(rng.randbytes(32)) for _ in range(executors)]
    inputs = signed.digest_inputs([])
    for tid, t in tasks.items():
        t.verified = None
        if t.state != "done" or not t.attempts:
            continue
        last = t.attempts[-1]
        a, b = rng.sample(pool, 2)
        t.attempts = t.attempts[:-1] + [dict(last, peer=str(x.peer_id), lease=f"{last['lease']}.{n}")
                                        for n, x in enumerate((a, b))]
        claims = tuple(signed.sign_result(x, job_id, tid, f"{last['lease']}.{n}", [], t.outputs)
                       for n, x in enumerate((a, b)))
        ev = signed.Evidence(job_id, tid, coordinator.peer_id, STRATEGY, "2 of 2 agree (exact)", True, inputs,
                             signed.digest_outputs(t.outputs), claims)
        t.verified = {"strategy": STRATEGY, "how": "2 of 2 agree (exact)", "verified": True,
                      "peers": [str(a.peer_id), str(b.peer_id)], "trusted": [], "rejected": [], "executions": 2,
                      "evidence": wire.sign_claim(coordinator, ev)}


class SyntheticNode:
    """What the dashboard's service reads of a Node, over synthetic members and one synthetic job."""

    def __init__(self, n_members: int, n_tasks: int, seed: int = 1, verified: bool = False) -> None:
        rng = random.Random(seed)
        self.peer_id = peer_id(rng)
        self.data_dir = ""
        self.rows = members(n_members, rng)
        alive = [r["peer_id"] for r in self.rows if r["state"] == "alive"][:64] or [self.peer_id]
        self.tasks = job_tasks(n_tasks, alive, rng)
        if verified:                  # the job runs under STRATEGY: each done task with signed evidence
            verify_tasks(self.tasks, rng)
        self.created = 0.0
        counts = Counter(t.state for t in self.tasks.values())
        js = SimpleNamespace(tasks=self.tasks, created=0.0, stats=Counter({"dispatched": n_tasks}), state="running",
                             plan=SimpleNamespace(verification=STRATEGY if verified else "none"), verify=None)
        progress = {"done": counts["done"], "running": counts["running"], "queued": 0, "failed": 0, "skipped": 0,
                    "cancelled": 0, "total": n_tasks}
        job = SimpleNamespace(js=js)
        summaries = {"jsynthetic": {"job_id": "jsynthetic", "name": f"synthetic-{n_tasks}", "coordinator": self.peer_id,
                                    "state": "running", "reason": "", "progress": progress, "epoch": 0,
                                    "replicas": [], "outputs": []}}
        for i in range(200):  # a list of older jobs to page through
            summaries[f"jold{i:04d}"] = {"job_id": f"jold{i:04d}", "name": f"old-{i}", "coordinator": self.peer_id,
                                         "state": "done", "reason": "", "progress": dict(progress, done=10, running=0,
                                                                                         total=10), "outputs": []}
        self.scheduler = SimpleNamespace(jobs={"jsynthetic": job}, summary=lambda j: summaries[j], api_routes=dict)
        self.scheduler.jobs = {j: job for j in list(summaries)[::-1]}   # oldest first, as a scheduler keeps them
        async def find_job(job_id: str) -> None:   # no other coordinator knows it either
            return None

        self.scheduler._find_job = find_job
        self.services: dict[str, Any] = {"scheduler": self.scheduler}
        self.transport = SimpleNamespace(stats=TransportStats(), connected_peers=lambda: [])

    def status(self) -> dict[str, Any]:
        counts = Counter(r["state"] for r in self.rows)
        return {"peer_id": self.peer_id, "agent": "p2pcompute/0.1.0", "addresses": [], "uptime_s": 3600.0,
                "connected_peers": sum(r["connected"] for r in self.rows), "known_peers": len(self.rows),
                "resources": {"cpus": 8.0, "memory": 16 << 30, "labels": {}}, "messages_sent": 0,
                "messages_received": 0,
                "membership": {"members": {s: counts.get(s, 0) for s in ("alive", "suspect", "dead", "left")}},
                "dht": {"routing_table": 160, "buckets": {str(i): min(20, 2 ** (i - 2)) for i in range(2, 12)}},
                "scheduler": {"jobs": {"running": 1, "done": 200}, "slots": {"total": 8, "busy": 8, "queued": 3}},
                "storage": {"blocks_bytes": 0, "pins": 0, "announced": 0}, "bitswap": {"sessions": []},
                "compute": {"workers": {"slots": 8, "workers": 8, "busy": 8}, "tasks": {"ok": 0, "failed": 0}}}

    def peers(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.rows]

    async def ping(self, peer: Any) -> float:
        return 0.001
