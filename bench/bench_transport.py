"""Transport figures for the closing note of the peer-daemon issue.

    python bench/bench_transport.py [--requests 2000] [--connections 200] [--idle 200]

Prints, between two libp2p peers on loopback (TCP + Noise + yamux, our
framing and CBOR envelope):
  * round trip of a small request (Ping, 64 B) on an open connection: median, p99;
  * round trip with a new connection for every request (dial + Noise + yamux +
    request), and the connection set-up alone: median, p99;
  * memory per idle peer: RSS growth per extra idle transport in one process,
    and the RSS of one whole daemon process (`p2pcompute join`).
Both peers share this one process (and its one trio loop), as an integration
test does; between two processes the figures are of the same order.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

from p2pcompute.node.identity import Identity
from p2pcompute.node.libp2p_transport import Libp2pTransport, quiet_libp2p_logging
from p2pcompute.node.messages import Ping, Pong
from p2pcompute.node.transport import percentile


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def ms(values: list[float]) -> dict:
    return {"median_ms": round(percentile(values, 0.5) * 1000, 3), "p99_ms": round(percentile(values, 0.99) * 1000, 3),
            "n": len(values)}


async def pong(peer, msg):
    return Pong(msg.nonce, msg.payload)


async def rtt_figures(requests: int, connections: int) -> dict:
    server = Libp2pTransport(Identity.generate(), ["/ip4/127.0.0.1/tcp/0"])
    server.on_request(Ping, pong)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        addr = server.listen_addresses()[0]
        client = Libp2pTransport(Identity.generate(), ["/ip4/127.0.0.1/tcp/0"])
        await nursery.start(client.run)
        peer = await client.connect(addr)
        for i in range(100):  # warm up
            await client.request(peer, Ping(i, b"x" * 64))
        open_rtts = []
        for i in range(requests):
            t0 = time.perf_counter()
            await client.request(peer, Ping(i, b"x" * 64))
            open_rtts.append(time.perf_counter() - t0)
        setup, fresh_rtts = [], []
        for i in range(connections):
            fresh = Libp2pTransport(Identity.generate(), ["/ip4/127.0.0.1/tcp/0"])
            async with trio.open_nursery() as inner:
                await inner.start(fresh.run)
                t0 = time.perf_counter()
                await fresh.connect(addr)
                t1 = time.perf_counter()
                await fresh.request(peer, Ping(i, b"x" * 64))
                t2 = time.perf_counter()
                setup.append(t1 - t0)
                fresh_rtts.append(t2 - t0)
                inner.cancel_scope.cancel()
        nursery.cancel_scope.cancel()
    return {"open_connection": ms(open_rtts), "new_connection_per_request": ms(fresh_rtts),
            "connection_setup": ms(setup)}


async def idle_memory(n: int) -> dict:
    async with trio.open_nursery() as nursery:
        first = Libp2pTransport(Identity.generate(), ["/ip4/127.0.0.1/tcp/0"])
        await nursery.start(first.run)  # imports and one-time costs paid here
        gc.collect()
        before = rss_bytes()
        for _ in range(n):
            await nursery.start(Libp2pTransport(Identity.generate(), ["/ip4/127.0.0.1/tcp/0"]).run)
        gc.collect()
        after = rss_bytes()
        nursery.cancel_scope.cancel()
    return {"idle_transports": n, "rss_per_idle_peer_kib": round((after - before) / n / 1024, 1)}


def daemon_rss() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen([sys.executable, "-m", "p2pcompute", "join", "--data-dir", tmp, "--listen",
                                 "/ip4/127.0.0.1/tcp/0", "--log-level", "warning"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while not (Path(tmp) / "api").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(2.0)
            status = Path(f"/proc/{proc.pid}/status").read_text()
            rss = next(int(l.split()[1]) for l in status.splitlines() if l.startswith("VmRSS:"))
            return {"daemon_process_rss_mib": round(rss / 1024, 1)}
        finally:
            proc.terminate()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--idle", type=int, default=200)
    args = parser.parse_args()
    quiet_libp2p_logging()
    figures = trio.run(rtt_figures, args.requests, args.connections)
    figures["memory"] = trio.run(idle_memory, args.idle) | daemon_rss()
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
