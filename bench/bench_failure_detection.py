"""Failure detection on a real devnet: SIGKILL one peer, SIGSTOP another.

    python bench/bench_failure_detection.py [--peers 10]

Starts a devnet (one OS process per peer, libp2p on loopback), waits until
every peer sees every other alive, kills one peer with SIGKILL and measures
the time until every other peer reports it dead (through each daemon's
control API), then freezes another with SIGSTOP (its connections stay open)
and measures the same. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import time
from pathlib import Path

from p2pcompute.node.client import ControlClient
from p2pcompute.node.devnet import Devnet


def members(peer) -> dict[str, str]:
    client = ControlClient(peer.data_dir, timeout=10)
    try:
        return {m["peer_id"]: m["state"] for m in client._call("GET", "/v1/members")["members"]}
    finally:
        client.close()


def wait_all(net: Devnet, watchers, predicate, timeout: float) -> float | None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if all(predicate(members(p)) for p in watchers):
            return time.monotonic() - start
        time.sleep(0.1)
    return None


def detect(net: Devnet, victim, sig: int, timeout: float) -> float | None:
    victim_id = victim.status["peer_id"]
    watchers = [p for p in net.peers if p is not victim and p.process.poll() is None and not getattr(p, "frozen", False)]
    os.kill(victim.process.pid, sig)
    victim.frozen = True
    return wait_all(net, watchers, lambda m: m.get(victim_id) in ("dead", "left"), timeout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        net = Devnet(Path(tmp), args.peers, log_level="warning")
        try:
            net.start()
            everyone = {p.status["peer_id"] for p in net.peers}
            formed = wait_all(net, net.peers, lambda m: sum(s == "alive" for s in m.values()) >= len(everyone) - 1, 60)
            killed = detect(net, net.peers[-1], signal.SIGKILL, args.timeout)
            stopped = detect(net, net.peers[-2], signal.SIGSTOP, args.timeout)
            print(json.dumps({"peers": args.peers, "membership_formed_s": formed, "sigkill_seen_dead_by_all_s": killed,
                              "sigstop_seen_dead_by_all_s": stopped}, indent=2))
        finally:
            for p in net.peers:
                if getattr(p, "frozen", False) and p.process.poll() is None:
                    os.kill(p.process.pid, signal.SIGCONT)
            net.stop()


if __name__ == "__main__":
    main()
