"""A real daemon under a bitswap flood: wants for absent CIDs, send-dont-have, from peers that never read.

The daemon is its own OS process (`p2pcompute join`); the attackers run here,
each a fresh libp2p identity that floods 4096-entry want-have messages and
never reads a reply, until the daemon drops it; then the next one starts.
Printed: the daemon's RSS and CPU before, during and after the flood, the
median round trip of its control API (its event loop's responsiveness), the
wants sent and the identities dropped, and an honest bitswap fetch's time.

    python bench/bench_bitswap_flood.py [--seconds 60]      (FLOOD_LOG=FILE keeps the daemon's log)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from p2pcompute.errors import P2PComputeError  # noqa: E402
from p2pcompute.node.framing import frame  # noqa: E402
from p2pcompute.node.identity import Identity  # noqa: E402
from p2pcompute.node.libp2p_transport import Libp2pTransport, quiet_libp2p_logging  # noqa: E402
from p2pcompute.node.messages import Resources  # noqa: E402
from p2pcompute.node.node import Node  # noqa: E402
from p2pcompute.storage import bitswap_pb as pb  # noqa: E402
from p2pcompute.storage.bitswap_service import INBOUND_PROTOCOLS, PROTOCOL, BitswapService  # noqa: E402
from p2pcompute.storage.blockstore import Blockstore  # noqa: E402
from p2pcompute.storage.cid import Cid  # noqa: E402


def node_with(services, seed):
    transport = Libp2pTransport(Identity.generate(), ["/ip4/127.0.0.1/tcp/0"], dial_timeout=5.0)
    return Node(transport, resources=Resources(1.0, 1 << 30, {}), rng=random.Random(seed), services=services,
                target_peers=0)


def wants(n):
    return frame(pb.encode(pb.Message(wants=tuple(
        pb.WantEntry(Cid.of(os.urandom(16)), 1, want_type=pb.WANT_HAVE, send_dont_have=True) for _ in range(n)))))


class Sampler:
    def __init__(self, pid, api, token):
        self.proc = psutil.Process(pid)
        self.http = httpx.Client(base_url=api, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def phase(self, seconds):
        """(max RSS MiB, CPU %, median API round trip ms) over ``seconds``."""
        rss, rtts = [], []
        cpu0, t0 = self.proc.cpu_times(), time.monotonic()
        while time.monotonic() - t0 < seconds:
            rss.append(self.proc.memory_info().rss)
            start = time.monotonic()
            self.http.get("/v1/status")
            rtts.append((time.monotonic() - start) * 1000)
            time.sleep(0.2)
        cpu1 = self.proc.cpu_times()
        cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / (time.monotonic() - t0) * 100
        return max(rss) / 2**20, cpu, statistics.median(rtts)


async def attack(address, stop, counts):
    message = wants(4096)
    while not stop.is_set():
        hostile = node_with([], random.getrandbits(32))
        for protocol in INBOUND_PROTOCOLS:
            async def deaf(peer, stream):
                await trio.sleep_forever()
            hostile.transport.on_stream(protocol, deaf)
        async with trio.open_nursery() as nursery:
            await nursery.start(hostile.run)
            counts["identities"] += 1
            try:
                victim = await hostile.transport.connect(address)
                failures = 0
                while not stop.is_set() and failures < 3:
                    try:
                        stream = await hostile.transport.open_stream(victim, PROTOCOL)
                        while not stop.is_set():
                            with trio.fail_after(10):
                                await stream.write(message)
                            counts["wants"] += 4096
                    except (P2PComputeError, trio.TooSlowError):
                        failures += 1  # reset: dropped (or just pushed back); three in a row: a new identity
                        await trio.sleep(0.1)
            except P2PComputeError:
                pass
            nursery.cancel_scope.cancel()


async def honest_fetch(address, cid, tmp):
    fetcher = BitswapService(Blockstore(Path(tmp) / f"honest{random.getrandbits(32)}"))
    node = node_with([fetcher], 7)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        start = trio.current_time()
        with trio.fail_after(60):
            await fetcher.fetch(cid, [address])
        nursery.cancel_scope.cancel()
    return trio.current_time() - start


def run_attacker(address: str, seconds: float) -> None:
    counts = {"wants": 0, "identities": 0}

    async def go():
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(attack, address, stop, counts)
            await trio.sleep(seconds)
            stop.set()
            nursery.cancel_scope.cancel()

    trio.run(go)
    print(json.dumps(counts), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="flood duration")
    parser.add_argument("--attacker", metavar="ADDRESS", help=argparse.SUPPRESS)  # the flooding process
    args = parser.parse_args()
    quiet_libp2p_logging(50)
    if args.attacker:
        run_attacker(args.attacker, args.seconds)
        return
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "daemon"
        (Path(tmp) / "f.bin").write_bytes(os.urandom(4 << 20))
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.Popen([sys.executable, "-m", "p2pcompute", "join", "--data-dir", str(data_dir),
                                 "--listen", "/ip4/127.0.0.1/tcp/0", "--json"], stdout=subprocess.PIPE,
                                stderr=open(os.environ.get("FLOOD_LOG", os.devnull), "w"), env=env, text=True)
        try:
            status = json.loads("".join(iter(proc.stdout.readline, "}\n")) + "}")
            address = next(a for a in status["addresses"] if "/tcp/" in a)
            if "/p2p/" not in address:
                address += f"/p2p/{status['peer_id']}"
            cid = json.loads(subprocess.run([sys.executable, "-m", "p2pcompute", "add", str(Path(tmp) / "f.bin"),
                                             "--json", "--data-dir", str(data_dir)], capture_output=True,
                                            text=True, env=env, check=True).stdout)["cid"]
            sampler = Sampler(proc.pid, status["api"], (data_dir / "api_token").read_text().strip())
            quiet = trio.run(honest_fetch, address, cid, tmp)
            print("phase    RSS MiB   CPU %   API median ms")
            print("before   %7.1f  %6.1f  %8.2f" % sampler.phase(8))
            attacker = subprocess.Popen([sys.executable, __file__, "--attacker", address, "--seconds",
                                         str(args.seconds)], stdout=subprocess.PIPE, text=True, env=env)
            time.sleep(3)
            loud = trio.run(honest_fetch, address, cid, tmp)
            during = sampler.phase(max(1.0, args.seconds - 3 - loud))
            counts = json.loads(attacker.communicate(timeout=120)[0].strip().splitlines()[-1])
            print("during   %7.1f  %6.1f  %8.2f" % during)
            print("after    %7.1f  %6.1f  %8.2f" % sampler.phase(8))
            served = sampler.http.get("/v1/status").json().get("bitswap", {})
            print(f"flood: {counts['wants']} wants written by {counts['identities']} identities; the daemon "
                  f"dropped {served.get('peers_dropped')} peer(s), refused {served.get('replies_refused')} replies")
            print(f"honest fetch of 4 MiB: {quiet:.2f} s unloaded, {loud:.2f} s during the flood")
        finally:
            proc.terminate()
            proc.wait(timeout=15)


if __name__ == "__main__":
    main()
