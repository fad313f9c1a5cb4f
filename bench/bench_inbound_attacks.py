"""Inbound-connection attacks on one peer: its RSS, CPU and an honest peer's round trip.

    python bench/bench_inbound_attacks.py [--silent 600] [--churn 600] [--pings 100]

A victim transport runs in its own process (listening on 127.0.0.1,
answering Ping). From this process an honest peer pings it while attackers
(a) open ``--silent`` TCP sockets and never handshake, (b) make ``--churn``
short-lived connections, each from a fresh identity. Prints, per phase, the
honest median / p99 round trip, whether a newcomer could still connect,
and the victim's RSS and CPU seconds. Before issue 9 both attacks locked
newcomers out for good (py-libp2p held every inbound slot).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
from pathlib import Path

import trio

from p2pcompute.node.identity import Identity
from p2pcompute.node.libp2p_transport import Libp2pTransport, quiet_libp2p_logging
from p2pcompute.node.messages import Ping
from p2pcompute.node.transport import percentile

VICTIM = textwrap.dedent("""
    import trio
    from p2pcompute.node.identity import Identity
    from p2pcompute.node.libp2p_transport import Libp2pTransport, quiet_libp2p_logging
    from p2pcompute.node.messages import Ping, Pong
    quiet_libp2p_logging()
    async def main():
        t = Libp2pTransport(Identity.generate(), ["/ip4/127.0.0.1/tcp/0"])
        async def pong(peer, msg):
            return Pong(msg.nonce)
        t.on_request(Ping, pong)
        async with trio.open_nursery() as n:
            await n.start(t.run)
            print(t.listen_addresses()[0], flush=True)
            await trio.sleep_forever()
    trio.run(main)
""")


def usage(pid: int) -> tuple[float, float]:
    """(RSS MiB, CPU seconds) of process ``pid``."""
    rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmRSS:")) / 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return rss, (int(fields[11]) + int(fields[12])) / 100


async def newcomer(addr: str) -> bool:
    t = Libp2pTransport(Identity.generate(), ["/ip4/127.0.0.1/tcp/0"], dial_timeout=10.0)
    async with trio.open_nursery() as n:
        await n.start(t.run)
        try:
            peer = await t.connect(addr)
            await t.request(peer, Ping(1), timeout=10)
            return True
        except Exception:
            return False
        finally:
            n.cancel_scope.cancel()


async def honest_pings(t: Libp2pTransport, peer, count: int) -> list[float]:
    rtts = []
    for i in range(count):
        start = trio.current_time()
        try:
            await t.request(peer, Ping(i), timeout=10)
            rtts.append(trio.current_time() - start)
        except Exception:
            rtts.append(float("inf"))
        await trio.sleep(0.02)
    return rtts


def report(phase: str, rtts: list[float], ok: bool, pid: int) -> None:
    rss, cpu = usage(pid)
    print(f"{phase:<28} honest rtt median {percentile(rtts, 0.5) * 1000:7.2f} ms  p99 "
          f"{percentile(rtts, 0.99) * 1000:8.2f} ms  newcomer {'connects' if ok else 'LOCKED OUT'}  "
          f"victim rss {rss:6.1f} MiB  cpu {cpu:6.1f} s", flush=True)


async def main(args: argparse.Namespace) -> None:
    quiet_libp2p_logging()
    victim = subprocess.Popen([sys.executable, "-c", VICTIM], stdout=subprocess.PIPE, text=True)
    try:
        addr = victim.stdout.readline().strip()
        port = int(addr.split("/tcp/")[1].split("/")[0])
        honest = Libp2pTransport(Identity.generate(), ["/ip4/127.0.0.1/tcp/0"])
        async with trio.open_nursery() as nursery:
            await nursery.start(honest.run)
            peer = await honest.connect(addr)
            report("unloaded", await honest_pings(honest, peer, args.pings), await newcomer(addr), victim.pid)

            sockets = []
            for _ in range(args.silent):
                s = trio.socket.socket()
                await s.connect(("127.0.0.1", port))
                sockets.append(s)
            report(f"{args.silent} silent sockets", await honest_pings(honest, peer, args.pings),
                   await newcomer(addr), victim.pid)
            for s in sockets:
                s.close()

            rtts: list[float] = []

            async def churn() -> None:
                for _ in range(args.churn):
                    await newcomer(addr)

            async with trio.open_nursery() as inner:
                inner.start_soon(churn)
                while len(rtts) < args.pings:
                    rtts += await honest_pings(honest, peer, 10)
            report(f"{args.churn} fresh identities", rtts, await newcomer(addr), victim.pid)
            report("after", await honest_pings(honest, peer, args.pings), await newcomer(addr), victim.pid)
            nursery.cancel_scope.cancel()
    finally:
        victim.kill()
        victim.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--silent", type=int, default=600)
    parser.add_argument("--churn", type=int, default=600)
    parser.add_argument("--pings", type=int, default=100)
    trio.run(main, parser.parse_args())
