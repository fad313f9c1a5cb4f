"""A daemon's DHT under a hostile peer: its CPU and RSS, and an honest peer's kad round trip, per phase.

A victim daemon (``p2pcompute join``) runs in its own process. From this
process an honest peer sends a kad PING every 50 ms on one stream and
records the round trips, while an attacker (a third process), in turn:

* floods FIND_NODE on 8 streams (as fast as py-libp2p writes);
* floods ADD_PROVIDER, each message naming itself with eight 500 KiB
  "addresses" for a new key (4 MB per message).

Between the attacks the victim idles, to show what it keeps. Prints one row
per phase: the victim's CPU (percent of one core), RSS, and the honest
peer's median and p90 round trip. Under two minutes.

    python bench/bench_dht_hostile.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import trio

from p2pcompute.dht import pb
from p2pcompute.dht.driver import DEFAULT_PROTOCOL
from p2pcompute.node.framing import FrameReader
from p2pcompute.node.identity import Identity
from p2pcompute.node.libp2p_transport import Libp2pTransport, quiet_libp2p_logging, split_p2p_addr

CLI = [sys.executable, "-m", "p2pcompute"]


def start_victim(data_dir: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(CLI + ["join", "--data-dir", str(data_dir), "--listen", "/ip4/127.0.0.1/tcp/0",
                                   "--cpus", "1", "--memory", "1GiB"],
                            stdout=open(data_dir.parent / "victim.log", "w"), stderr=subprocess.STDOUT)
    while True:
        if (data_dir / "api").exists():
            res = subprocess.run(CLI + ["status", "--json", "--data-dir", str(data_dir)], capture_output=True, text=True)
            if res.returncode == 0:
                return proc, next(a for a in json.loads(res.stdout)["addresses"] if "/127.0.0.1/" in a)
        if proc.poll() is not None:
            raise SystemExit((data_dir.parent / "victim.log").read_text())
        time.sleep(0.2)


async def peer(seed: int, address: str):
    t = Libp2pTransport(Identity.from_seed(bytes([seed]) * 32), ["/ip4/127.0.0.1/tcp/0"], dial_timeout=10.0)
    victim, where = split_p2p_addr(address)
    t.add_addresses(victim, [where])
    return t, victim


async def honest_pings(t, victim, rtts: list[float]) -> None:
    while True:
        try:
            stream = await t.open_stream(victim, DEFAULT_PROTOCOL)
            reader = FrameReader(stream, pb.MAX_MESSAGE)
            while True:
                start = time.perf_counter()
                await stream.write(pb.frame(pb.request(pb.MessageType.PING)))
                if await reader.read_frame() is None:
                    break
                rtts.append(time.perf_counter() - start)
                await trio.sleep(0.05)
        except Exception:
            await trio.sleep(0.05)


async def flood(t, victim, messages) -> None:
    async def one() -> None:
        while True:
            try:
                stream = await t.open_stream(victim, DEFAULT_PROTOCOL)
                async with trio.open_nursery() as inner:
                    async def drain() -> None:
                        reader = FrameReader(stream, pb.MAX_MESSAGE)
                        while await reader.read_frame() is not None:
                            pass
                    inner.start_soon(drain)
                    for frame in messages():
                        await stream.write(frame)
            except Exception:
                await trio.sleep(0.01)

    async with trio.open_nursery() as nursery:
        for _ in range(8):
            nursery.start_soon(one)


def find_nodes(me: bytes):
    frame = pb.frame(pb.request(pb.MessageType.FIND_NODE, me))
    while True:
        yield frame * 20


_keys = iter(range(1 << 62))  # distinct keys across the attacker's streams


def huge_providers(me: bytes):
    huge = tuple(b"\x04" + bytes([i]) * (500 * 1024) for i in range(8))
    while True:
        n = next(_keys)
        yield pb.frame(pb.request(pb.MessageType.ADD_PROVIDER, b"key-%d" % n, provider_peers=(pb.KadPeer(me, huge),)))


async def main(seconds: float) -> None:
    quiet_libp2p_logging()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "victim"
        proc, address = start_victim(data_dir)
        ps = psutil.Process(proc.pid)
        rows = []
        try:
            async with trio.open_nursery() as nursery:
                honest, victim = await peer(0x21, address)
                await nursery.start(honest.run)
                rtts: list[float] = []
                nursery.start_soon(honest_pings, honest, victim, rtts)
                await trio.sleep(1.0)
                phases = [("idle", None), ("FIND_NODE flood", "find_node"), ("after", None),
                          ("ADD_PROVIDER 8x500KiB flood", "add_provider"), ("after", None)]
                for name, attack in phases:
                    rtts.clear()
                    ps.cpu_percent()
                    peak = ps.memory_info().rss
                    attacker = None
                    if attack is not None:  # its own process: its CPU is not the honest peer's
                        attacker = subprocess.Popen([sys.executable, __file__, "--attack", attack, "--address", address])
                    end = trio.current_time() + seconds
                    while trio.current_time() < end:
                        await trio.sleep(0.5)
                        peak = max(peak, ps.memory_info().rss)
                    if attacker is not None:
                        attacker.kill()
                        attacker.wait()
                    cpu = ps.cpu_percent()
                    got = sorted(rtts)
                    dht = await trio.to_thread.run_sync(victim_dht, data_dir)
                    rows.append((name, cpu, ps.memory_info().rss, peak,
                                 statistics.median(got) if got else float("nan"),
                                 got[int(len(got) * 0.9)] if got else float("nan"), len(got),
                                 sum(dht.get("served", {}).values()), sum(dht.get("rejected", {}).values()),
                                 dht.get("provider_bytes", _held_bytes(dht))))
                rows_final = await trio.to_thread.run_sync(victim_dht, data_dir)
                nursery.cancel_scope.cancel()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"{'phase':30} {'CPU %':>6} {'RSS MB':>7} {'peak MB':>8} {'RTT med ms':>11} {'p90 ms':>7} {'pings':>6}"
          f" {'served':>7} {'dropped':>8} {'providers MB':>13}")
    for name, cpu, rss, peak, med, p90, n, served, dropped, held in rows:
        held_mb = "?" if held is None else f"{held / 1e6:.1f}"
        print(f"{name:30} {cpu:6.0f} {rss / 1e6:7.0f} {peak / 1e6:8.0f} {med * 1e3:11.2f} {p90 * 1e3:7.2f} {n:6d}"
              f" {served:7d} {dropped:8d} {held_mb:>13}")
    print("at the end:", json.dumps({k: rows_final.get(k) for k in ("served", "rejected", "providers_stored",
                                                                   "provider_bytes", "providers_refused")}))
    print("served/dropped: kad requests the victim answered / streams it reset, since it started;"
          " providers MB: the memory its provider records account for")


def victim_dht(data_dir: Path) -> dict:
    res = subprocess.run(CLI + ["status", "--json", "--data-dir", str(data_dir)], capture_output=True, text=True)
    return json.loads(res.stdout).get("dht", {}) if res.returncode == 0 else {}


def _held_bytes(dht: dict) -> None:
    return None  # a daemon from before provider_bytes was reported


async def attack(kind: str, address: str) -> None:
    quiet_libp2p_logging()
    evil, victim = await peer(0x66, address)
    async with trio.open_nursery() as nursery:
        await nursery.start(evil.run)
        messages = {"find_node": find_nodes, "add_provider": huge_providers}[kind]
        await flood(evil, victim, lambda: messages(evil.local_id.raw))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--attack", help=argparse.SUPPRESS)  # run as the attacker process
    parser.add_argument("--address", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.attack:
        trio.run(attack, args.attack, args.address)
    else:
        trio.run(main, args.seconds)
