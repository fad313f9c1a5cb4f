"""Peers on different addresses (network namespaces): transfer rate with and without loss + delay, detection times.

    sudo python bench/bench_netns.py [--peers 5] [--mib 50] [--loss 0.05] [--delay-ms 50]

Builds the multi-host harness of ``tests/netns/netns_harness.py`` (root
needed): N ``p2pcompute join`` daemons, each in its own namespace at
10.77.0.<i+1>, on one bridge. Then:
  1. ``p2pcompute add`` of MIB random MiB on daemon 1, fetched by daemon N-1
     through its control API (``POST /v1/fetch``: DHT providers + bitswap,
     every block verified); the rate is MiB / wall seconds of the fetch;
  2. the same with a new file while every daemon's link loses LOSS of the
     frames it sends and delays them DELAY ms (a round trip: 2 x DELAY);
  3. with the network clean again, SIGKILL daemon N-1 and measure the time
     until every other daemon's membership says it is dead; then SIGSTOP
     daemon N-2 (its connections stay open) and measure the same.
Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "netns"))

import netns_harness  # noqa: E402

ALIVE = ("alive",)
GONE = ("dead", "left")


def fetch_rate(net, tmp: Path, mib: int, src: int, dst: int, name: str) -> dict:
    data = tmp / f"{name}.bin"
    with open(data, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
    added = net.cli(src, "add", str(data), "--json")
    if added.returncode != 0:
        raise SystemExit(f"add failed: {added.stderr.decode()}")
    cid = json.loads(added.stdout)["cid"]
    start = time.monotonic()
    net.api(dst, "POST", "/v1/fetch", {"cid": cid}, timeout=1800)
    took = time.monotonic() - start
    return {"mib": mib, "seconds": round(took, 2), "mib_per_s": round(mib / took, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", type=int, default=5)
    parser.add_argument("--mib", type=int, default=50)
    parser.add_argument("--loss", type=float, default=0.05)
    parser.add_argument("--delay-ms", type=float, default=50.0)
    args = parser.parse_args()
    reason = netns_harness.unavailable_reason()
    if reason:
        raise SystemExit(f"cannot run: {reason}")
    netns_harness.cleanup_leftovers()
    n = args.peers
    everyone = list(range(n))
    with tempfile.TemporaryDirectory() as tmp, netns_harness.Net(Path(tmp), n) as net:
        net.start()
        formed = net.wait_until("membership forms", lambda: net.all_see(everyone, everyone, ALIVE), 120, poll=0.1)
        clean = fetch_rate(net, Path(tmp), args.mib, 1, n - 1, "clean")
        net.impair(loss=args.loss, delay_ms=args.delay_ms)
        rtts = sorted(net.api(0, "POST", "/v1/ping", {"peer": net.daemons[1].peer_id}, timeout=30)["rtt_ms"]
                      for _ in range(7))
        impaired = fetch_rate(net, Path(tmp), args.mib, 1, n - 2, "impaired")
        net.clear_impairment()
        net.wait_until("membership whole again", lambda: net.all_see(everyone, everyone, ALIVE), 120, poll=0.1)
        detection = {}
        for victim, sig in ((n - 1, signal.SIGKILL), (n - 2, signal.SIGSTOP)):
            watchers = [i for i in everyone if net.daemons[i].running() and not net.daemons[i].stopped and i != victim]
            net.signal(victim, sig)
            detection[f"{sig.name.lower()}_seen_dead_by_all_s"] = round(net.wait_until(
                f"{sig.name} detected", lambda w=watchers, v=victim: net.all_see(w, [v], GONE), 60, poll=0.1), 2)
        print(json.dumps({
            "peers": n, "membership_formed_s": round(formed, 2),
            "transfer_clean": clean,
            "transfer_impaired": impaired | {"loss": args.loss, "one_way_delay_ms": args.delay_ms,
                                             "ping_rtt_ms_median_of_7": rtts[3]},
            **detection,
        }, indent=2))


if __name__ == "__main__":
    main()
