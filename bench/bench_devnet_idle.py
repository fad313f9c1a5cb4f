"""What idle daemons cost, and whether a crowded machine keeps its membership right.

    python bench/bench_devnet_idle.py [--peers 30] [--seconds 120]

Starts a devnet of N real daemons (one OS process each, libp2p on loopback),
waits until it forms (or a minute passes), then watches it for the given
time: each daemon's CPU (its process and its worker processes) and RSS,
the machine's load average, and at the end how many of its live neighbours
each peer holds as dead or suspect. Prints JSON. On a machine with fewer
cores than daemons this is the starved-host case: a peer whose own event
loop is late must doubt itself (Lifeguard's local health) rather than
accuse healthy peers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import psutil

from bench_failure_detection import members  # bench/ is on sys.path when a bench script runs
from p2pcompute.node.devnet import Devnet


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def rss_mib(procs: list[psutil.Process]) -> float:
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=120.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        net = Devnet(Path(tmp), args.peers, log_level="warning")
        try:
            t0 = time.monotonic()
            net.start(timeout=300)
            formed = net.wait_connected(timeout=120)
            formed_s = time.monotonic() - t0
            ids = {p.status["peer_id"] for p in net.peers}
            pids0 = {p.index: sorted(c.pid for c in tree(p.process.pid)[1:]) for p in net.peers}
            cpu0 = {p.index: cpu_seconds(tree(p.process.pid)) for p in net.peers}
            start = time.monotonic()
            loads = []
            while time.monotonic() - start < args.seconds:
                loads.append(os.getloadavg()[0])
                time.sleep(min(10.0, args.seconds / 4))
            elapsed = time.monotonic() - start
            cpu_share = [(cpu_seconds(tree(p.process.pid)) - cpu0[p.index]) / elapsed for p in net.peers]
            rss = [rss_mib(tree(p.process.pid)) for p in net.peers]
            pids1 = {p.index: sorted(c.pid for c in tree(p.process.pid)[1:]) for p in net.peers}
            wrong = []
            for p in net.peers:
                view = members(p)
                others = ids - {p.status["peer_id"]}
                wrong.append(sum(view.get(i) != "alive" for i in others))
            print(json.dumps({
                "peers": args.peers,
                "formed": formed,
                "formed_after_s": round(formed_s, 1),
                "watched_s": round(elapsed, 1),
                "cpu_per_daemon_percent": {"median": round(100 * statistics.median(cpu_share), 2),
                                           "max": round(100 * max(cpu_share), 2)},
                "rss_per_daemon_mib": {"median": round(statistics.median(rss), 1), "max": round(max(rss), 1)},
                "load_average_1min": {"max": round(max(loads), 2), "last": round(loads[-1], 2)},
                "worker_pids_stable": pids0 == pids1,
                "live_peers_not_seen_alive": {"total": sum(wrong), "max_per_peer": max(wrong)},
            }, indent=2))
        finally:
            net.stop()


if __name__ == "__main__":
    main()
