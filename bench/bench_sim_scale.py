"""How the churn simulation scales: set-up time, memory and wall time per virtual second.

    python bench/bench_sim_scale.py --peers 10000 --seconds 60

Builds a converged network of N peers (every membership table full, routing
tables filled), then runs the issue's churn scenario (10% replaced every 10
minutes, 1% loss, 20-120 ms) for a few virtual seconds, printing the RSS and
the wall time every 10 virtual seconds, then one JSON line. Churn starts after
the 30 s warm-up, so run past 30 s to see its cost.

Figures (stop 8, this 2-core machine, shared with another run):
  5,000 peers: set-up 140 s, 4.2 GiB, 0.79 s per virtual second before churn;
  10,000 peers: set-up 573 s, 16.0 GiB, 1.5 s per virtual second before churn
  and about 18 s under churn (each peer hears of 1.7 crashes and 1.7 joins per
  second, ten times the news of a 1000-peer network).
"""

from __future__ import annotations

import argparse
import json
import time

from p2pcompute.simulations.churn import ChurnRun, Scenario


def rss_gib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**30


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--peers", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=60.0, help="virtual seconds to run (warm-up is 30)")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    t0, c0 = time.perf_counter(), time.process_time()
    run = ChurnRun(Scenario(peers=args.peers, duration=3600.0, seed=args.seed))
    run.engine.run_until(0.5)
    t1 = time.perf_counter()
    print(f"{args.peers} peers: set-up {t1 - t0:.0f} s, RSS {rss_gib():.2f} GiB", flush=True)
    t, marks = 0.5, []
    while t < args.seconds:
        e0, w0 = run.engine.events, time.perf_counter()
        t = min(args.seconds, t + 10.0)
        run.engine.run_until(t)
        wall = time.perf_counter() - w0
        marks.append((t, wall))
        print(f"  virtual {t:5.0f} s: {wall:6.1f} wall s for the last 10, {run.engine.events - e0} events, "
              f"RSS {rss_gib():.2f} GiB", flush=True)
    print(json.dumps({
        "peers": args.peers, "setup_s": round(t1 - t0, 1), "virtual_s": args.seconds,
        "wall_s": round(time.perf_counter() - t1, 1), "rss_gib": round(rss_gib(), 2),
        "cpu_s": round(time.process_time() - c0, 1), "events": run.engine.events,
    }))


if __name__ == "__main__":
    main()
