"""Import/export figures for the storage issue: a 1 GiB file through the UnixFS importer.

    python bench/bench_storage.py [--size 1GiB] [--dir /tmp] [--repeats 3] [--json]

Writes a file of random bytes (in 4 MiB pieces, never whole in memory), then
measures on it, each phase from a warm page cache:

  * plain ``hashlib.sha256`` over the file (1 MiB reads): the floor;
  * import, hash only (``--only-hash``: chunk, encode, hash; nothing stored):
    MB/s and the ratio to plain SHA-256;
  * import into a fresh block store (atomic file per block, no fsync);
  * export: stream the file back out of the block store (every block
    re-hashed against its CID), and check its SHA-256;

with the peak RSS growth of each phase over its starting RSS (sampled every
5 ms by a thread). The two CPU-bound phases run ``--repeats`` times each, best
time kept, since the machine may be shared. MB = 10^6 bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from p2pcompute.node.config import parse_size  # noqa: E402
from p2pcompute.storage import exporter  # noqa: E402
from p2pcompute.storage.blockstore import Blockstore  # noqa: E402
from p2pcompute.storage.importer import import_path  # noqa: E402


class PeakRss:
    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.start = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.start) / 2**20


def make_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            piece = os.urandom(min(left, 4 << 20))
            digest.update(piece)
            f.write(piece)
            left -= len(piece)
    return digest.hexdigest()


def phase(name: str, size: int, fn, results: dict, repeats: int = 1) -> object:
    """Run ``fn`` ``repeats`` times; keep the best time (the machine is shared) and the worst RSS growth."""
    seconds, growth = float("inf"), 0.0
    for _ in range(repeats):
        with PeakRss() as rss:
            started = time.perf_counter()
            value = fn()
            seconds = min(seconds, time.perf_counter() - started)
        growth = max(growth, rss.growth_mib)
    results[name] = {"seconds": round(seconds, 3), "MB_per_s": round(size / seconds / 1e6, 1),
                     "peak_rss_growth_MiB": round(growth, 1)}
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1GiB", help="file size (default 1GiB)")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where to put the file and the block store")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of the in-memory phases (sha256, hash-only import); best time kept (default 3)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    size = parse_size(args.size)
    work = Path(tempfile.mkdtemp(prefix="bench-storage-", dir=args.dir))
    results: dict = {"size_bytes": size}
    try:
        src = work / "input.bin"
        want = make_file(src, size)

        def sha256_file() -> str:
            digest = hashlib.sha256()
            with open(src, "rb") as f:
                while piece := f.read(1 << 20):
                    digest.update(piece)
            return digest.hexdigest()

        assert phase("sha256", size, sha256_file, results, args.repeats) == want
        hashed = phase("import_only_hash", size, lambda: import_path(src), results, args.repeats)
        store = Blockstore(work / "blocks")
        stored = phase("import_to_blockstore", size,
                       lambda: import_path(src, lambda c, b: store.put(c, b, verified=True)), results)
        assert stored.cid == hashed.cid

        def export() -> str:
            digest = hashlib.sha256()
            for piece in exporter.iter_file(store.get, stored.cid):
                digest.update(piece)
            return digest.hexdigest()

        assert phase("export_from_blockstore", size, export, results) == want
        results["cid"] = str(hashed.cid)
        results["blocks"] = hashed.blocks
        sha = results["sha256"]["MB_per_s"]
        for name in ("import_only_hash", "import_to_blockstore", "export_from_blockstore"):
            results[name]["ratio_to_sha256"] = round(results[name]["MB_per_s"] / sha, 2)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{size / 2**20:.0f} MiB file, root {results['cid']} ({results['blocks']} blocks)")
    for name in ("sha256", "import_only_hash", "import_to_blockstore", "export_from_blockstore"):
        r = results[name]
        ratio = f"  {r['ratio_to_sha256']:.2f}x of sha256" if "ratio_to_sha256" in r else ""
        print(f"  {name:24s} {r['MB_per_s']:8.1f} MB/s  {r['seconds']:7.2f} s  "
              f"peak RSS +{r['peak_rss_growth_MiB']:.1f} MiB{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
