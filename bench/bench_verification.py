"""Verification strategies under malicious peers: a pure Monte Carlo of the real strategy code.

Each task runs through ``TaskVerification`` with the real strategy and a
shared ``Ledger`` (bans, adaptive trust); executions go to peers drawn at
random among those not banned and not already used by the task; a malicious
peer answers by its behaviour (collude: all return the same wrong CID;
wrong: each its own; sometimes: a wrong one on 10% of tasks); a trusted
execution (the submitter's own peer) is always right. Anchored strategies'
executions go to a vetted peer when there is one (as replicated.py's
placement does). One ledger, one coordinator: vetting builds up as for a
user who submits every task. No network, no time:
this measures what the strategies decide, not the scheduler.

    python bench/bench_verification.py [--tasks 10000] [--peers 100] [--seed 1] [--tile 1024]

Prints one line per (strategy, malicious share, behaviour): wrong results
accepted by the strategy, wrong results left once every banned peer's
accepted results are re-verified (as if all tasks were one job still running
when the bans came: optimistic), executions per task (untrusted), trusted
re-executions per task (the strategy's, then the re-verifications'),
malicious peers banned, honest peers banned. Then the cost of Freivalds' check
of one float64 tile (20 rounds) beside recomputing it (on a loaded machine,
OPENBLAS_NUM_THREADS=1 gives steadier figures).
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np

from p2pcompute.scheduler.verification.checks import freivalds
from p2pcompute.scheduler.verification.engine import Execute, Outcome, TaskInfo, TaskVerification
from p2pcompute.scheduler.verification.policy import parse
from p2pcompute.scheduler.verification.reputation import Ledger

STRATEGIES = ["none", "replicate(2, agree=2)", "replicate(3, agree=2)", "replicate(2, agree=2, anchor=1)",
              "adaptive", "adaptive(threshold=100)", "spot-check(0.05)"]


def run(strategy: str, tasks: int, peers: int, malicious: float, behaviour: str, seed: int) -> dict:
    rng = random.Random(seed)
    bad = set(rng.sample(range(peers), int(peers * malicious)))
    ledger = Ledger(threshold=10)
    strat = parse(strategy)
    wrong = executions = trusted_runs = gave_up = 0
    taken: list[tuple[frozenset, bool]] = []        # per accepted task: the untrusted peers it rests on, a lie?
    for t in range(tasks):
        threshold = getattr(strat, "threshold", None)
        v = TaskVerification(TaskInfo("job", f"t{t}"), strat, random.Random(rng.getrandbits(64)),
                             lambda p: ledger.is_trusted(p, threshold))
        lies = behaviour != "sometimes" or rng.random() < 0.1
        cmds = v.start()
        while v.state == "running":
            todo, cmds = [c for c in cmds if isinstance(c, Execute)], []
            assert todo, "a strategy stopped without a decision"
            for c in todo:
                for _ in range(c.n):
                    if c.trusted:
                        trusted_runs += 1
                        cmds += v.result(Outcome.of("me", {"o": "good"}, trusted=True))
                        continue
                    free = [p for p in range(peers) if p not in c.exclude and not ledger.banned(p)]
                    used = {r.peer for r in v.results}
                    free = [p for p in free if p not in used]
                    if c.vetted or strat.anchored:      # an escalation, or a first execution: on a vetted peer
                        vetted = [p for p in free if ledger.is_trusted(p, threshold)]
                        free = vetted if vetted or c.vetted else free
                    if not free:
                        cmds += v.lost()
                        continue
                    p = rng.choice(free)
                    executions += 1
                    cid = "good" if p not in bad or not lies else "lie" if behaviour != "wrong" else f"lie{p}"
                    cmds += v.result(Outcome.of(p, {"o": cid}))
            ledger.learn(v.results, cmds, float(t))
        if v.state == "accepted":
            acc = v.accepted
            lie = v.results[acc.index].outputs != (("o", "good"),)
            wrong += lie
            taken.append((frozenset(v.results[i].peer for i in acc.agreeing if not v.results[i].trusted), lie))
        else:
            gave_up += 1
    # a ban re-verifies every accepted result that rests on the banned peer (one trusted re-execution each)
    redo = [lie for peers_, lie in taken if any(ledger.banned(p) for p in peers_)]
    return {"wrong_accepted": wrong, "reverified": len(redo), "wrong_left": wrong - sum(redo),
            "executions_per_task": executions / tasks,
            "trusted_per_task": trusted_runs / tasks, "gave_up": gave_up,
            "malicious_banned": sum(ledger.banned(p) for p in bad), "malicious": len(bad),
            "honest_banned": sum(ledger.banned(p) for p in range(peers) if p not in bad)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--peers", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tile", type=int, default=1024)
    args = ap.parse_args()
    print(f"{args.tasks} tasks, {args.peers} peers, seed {args.seed}")
    print(f"{'strategy':22} {'mal':>4} {'behaviour':9} {'wrong':>5} {'left':>4} {'exec/task':>9} {'trusted/task':>12} "
          f"{'reverify/task':>13} {'banned':>6} {'honest banned':>13} {'gave up':>7}")
    for behaviour, share in (("collude", 0.1), ("sometimes", 0.1), ("collude", 0.49), ("wrong", 0.49)):
        for s in STRATEGIES:
            r = run(s, args.tasks, args.peers, share, behaviour, args.seed)
            print(f"{s:22} {share:4.2f} {behaviour:9} {r['wrong_accepted']:5d} {r['wrong_left']:4d} "
                  f"{r['executions_per_task']:9.3f} {r['trusted_per_task']:12.4f} {r['reverified'] / args.tasks:13.4f} "
                  f"{r['malicious_banned']:>3}/{r['malicious']:<2} {r['honest_banned']:13d} {r['gave_up']:7d}")

    rng = np.random.default_rng(args.seed)
    a, b = rng.standard_normal((args.tile, args.tile)), rng.standard_normal((args.tile, args.tile))
    c = a @ b
    best = {}
    for name, fn in (("recompute a @ b", lambda: a @ b), ("freivalds r=20", lambda: freivalds(a, b, c, seed=1))):
        times = []
        for _ in range(21):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        best[name] = min(times)
        print(f"{args.tile}x{args.tile} float64 {name:18} best of 21: {best[name] * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
