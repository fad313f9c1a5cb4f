"""Bitswap fetch throughput on loopback: our peers, the embedded kubo, 3 providers vs 1, memory.

Each provider is its own OS process (as a devnet runs peers) holding the same
file (same seed, so the same CID); the fetcher runs here, with a fresh block
store per run, and samples its RSS while it fetches. The kubo run adds the
file to the embedded kubo (in this process, loopback only) and fetches it
from there over bitswap.

    python bench/bench_bitswap.py [--mib 100] [--skip-kubo]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def make_chunks(mib: int, seed: int = 5):
    """The benchmark's data, 1 MiB at a time (never all of it in memory)."""
    rng = random.Random(seed)
    for _ in range(mib):
        yield rng.randbytes(1 << 20)


class _ChunkReader:
    def __init__(self, chunks) -> None:
        self._chunks, self._buf = chunks, b""

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buf) < n:
            piece = next(self._chunks, b"")
            if not piece:
                break
            self._buf += piece
        out, self._buf = (self._buf, b"") if n < 0 else (self._buf[:n], self._buf[n:])
        return out


def make_peer(blocks_dir: Path):
    from p2pcompute.node.identity import Identity
    from p2pcompute.node.libp2p_transport import Libp2pTransport, quiet_libp2p_logging
    from p2pcompute.node.messages import Resources
    from p2pcompute.node.node import Node
    from p2pcompute.storage.bitswap_service import BitswapService
    from p2pcompute.storage.blockstore import Blockstore

    quiet_libp2p_logging()
    store = Blockstore(blocks_dir)
    service = BitswapService(store)
    transport = Libp2pTransport(Identity.generate(), ["/ip4/127.0.0.1/tcp/0"])
    node = Node(transport, resources=Resources(1.0, 1 << 30, {}), services=[service], target_peers=0)
    return node, service, store


# --- provider process --------------------------------------------------------------------


def serve(mib: int, blocks_dir: str) -> None:
    from p2pcompute.storage.importer import import_stream

    async def main() -> None:
        node, _, store = make_peer(Path(blocks_dir))
        root = import_stream(_ChunkReader(make_chunks(mib)), store.put).cid
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            print(f"{node.transport.listen_addresses()[0]}/p2p/{node.peer_id} {root}", flush=True)
            await trio.sleep_forever()

    trio.run(main)


def spawn_providers(n: int, mib: int, workdir: Path) -> tuple[list[subprocess.Popen], list[str], str]:
    procs, addrs, root = [], [], ""
    for i in range(n):
        procs.append(subprocess.Popen([sys.executable, __file__, "--serve", str(mib), str(workdir / f"p{i}")],
                                      stdout=subprocess.PIPE, text=True))
    for p in procs:
        addr, root = p.stdout.readline().split()
        addrs.append(addr)
    return procs, addrs, root


# --- fetcher -----------------------------------------------------------------------------


def cpu_of(procs: list) -> float:
    return sum(sum(psutil.Process(p.pid).cpu_times()[:2]) for p in procs)


async def timed_fetch(workdir: Path, root: str, providers: list[str], label: str, procs: list = ()) -> dict:
    node, service, store = make_peer(workdir / f"fetch-{label}")
    proc = psutil.Process()
    rss = {"before": 0, "peak": 0}

    async def sample() -> None:
        while True:
            rss["peak"] = max(rss["peak"], proc.memory_info().rss)
            await trio.sleep(0.05)

    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        peers = [await service.connect(a) for a in providers]  # dial before the clock starts
        rss["before"] = rss["peak"] = proc.memory_info().rss  # libp2p loaded, host running
        nursery.start_soon(sample)
        started, cpu, remote = time.perf_counter(), time.process_time(), cpu_of(procs)
        last = await service.fetch(root, peers)
        seconds = time.perf_counter() - started
        cpu, remote = time.process_time() - cpu, cpu_of(procs) - remote
        nursery.cancel_scope.cancel()
    return {"label": label, "bytes": last.bytes, "seconds": seconds, "mb_s": last.bytes / seconds / 1e6, "cpu": cpu, "remote_cpu": remote,
            "rss_growth_mib": (rss["peak"] - rss["before"]) / 2**20}


def show(r: dict) -> None:
    print(f"{r['label']:<28} {r['bytes'] / 2**20:7.1f} MiB in {r['seconds']:6.2f} s = {r['mb_s']:7.1f} MB/s"
          f"  CPU s: fetcher {r['cpu']:5.2f}, providers {r['remote_cpu']:5.2f};"
          f" RSS growth {r['rss_growth_mib']:5.1f} MiB")


async def bench(mib: int, skip_kubo: bool) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-bitswap-"))
    print(f"{mib} MiB random file, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
          " (kubo's CPU counts as the fetcher's: same process)")
    procs, addrs, root = spawn_providers(3, mib, workdir)
    try:
        one = await timed_fetch(workdir, root, addrs[:1], "our peer -> our peer", procs[:1])
        show(one)
        three = await timed_fetch(workdir, root, addrs, "3 providers at once", procs)
        show(three)
        print(f"speed-up 3 providers vs 1: {one['seconds'] / three['seconds']:.2f}x")
    finally:
        for p in procs:
            p.kill()
    if not skip_kubo:
        from kubo import KuboNode

        (workdir / "kubo").mkdir()
        kubo = KuboNode(workdir / "kubo")
        try:
            data_file = workdir / "data.bin"
            with open(data_file, "wb") as fh:
                for chunk in make_chunks(mib):
                    fh.write(chunk)
            kubo_root = kubo.add(data_file)
            assert kubo_root == root, (kubo_root, root)  # same bytes, same CID
            from_kubo = await timed_fetch(workdir, root, [kubo.multiaddr], "kubo -> our peer")
            show(from_kubo)
            print(f"ratio our peer / kubo as provider: {one['mb_s'] / from_kubo['mb_s']:.2f}")
        finally:
            kubo.close()


def main() -> None:
    if len(sys.argv) >= 2 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=100)
    parser.add_argument("--skip-kubo", action="store_true")
    args = parser.parse_args()
    trio.run(bench, args.mib, args.skip_kubo)


if __name__ == "__main__":
    main()
