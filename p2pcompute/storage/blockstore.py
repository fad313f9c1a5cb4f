"""The block store: content-addressed blocks on disk in ``<data dir>/blocks``.

Theory of operation
-------------------
A block lives in one file named by its multihash, laid out as kubo's flatfs
does: ``blocks/<shard>/<KEY>.data``, KEY = base32 (upper, unpadded) of the
multihash, shard = its next-to-last two characters. Keying by multihash means
the same bytes under CIDv0, CIDv1 or another codec are stored once.

* **Writes are atomic**: bytes go to ``blocks/.tmp/`` and are hard-linked
  into place (never clobbering a racing writer of the same block), so a
  reader never sees half a block. ``put`` checks the bytes against
  the CID unless the caller made the hash itself (``verified=True``).
  ``fsync=True`` also syncs each file (slower; off by default).
* **Reads are verified**: ``get`` re-hashes the bytes; a block that no longer
  matches its CID (disk corruption, tampering) is deleted and
  ``CorruptBlock`` raised, so it can be fetched again.
* **Pins**: ``pin(root)`` records a recursive pin (the root and every block
  reachable from it through dag-pb links); it refuses a DAG with missing
  blocks. The pin set is ``blocks/pins.json`` (a snapshot, replaced
  atomically) plus ``blocks/pins.log``, one ``+CID`` or ``-CID`` line
  appended per change, so a pin costs one short append, not a rewrite of
  every pin (a daemon with 2,000 pins spent about 5 ms per pin rewriting and
  re-parsing the JSON). Each process reads only what was appended since it
  last looked (the snapshot's inode, size and mtime say whether it must read
  everything again); once the log has more lines than there are pins (and at
  least ``PIN_LOG_COMPACT``), the snapshot is rewritten and the log removed,
  under the same cross-process lock. A line cut short by a crash is ignored
  and the log compacted.
* **GC** deletes every block not reachable from a pin (and temp files of
  writers that died). It holds an exclusive
  ``flock`` on ``blocks/.lock``; importers hold it shared (``session()``)
  from the first block until they pin, so a GC in another process cannot
  sweep a DAG that is still being written.
* **Size limit**: ``max_bytes`` bounds the bytes of all blocks; a put that
  would exceed it raises ``StorageFull`` (nothing is written).

The byte total is counted by scanning the shards when the store opens, then
kept up to date in memory under a lock (threads of one process share it;
another process writing the same store is not counted until a reopen; the
files themselves are always consistent).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

from ..errors import BadBlock, BlockNotFound, CorruptBlock, P2PComputeError, StorageError, StorageFull
from . import dagpb
from .cid import DAG_PB, Cid, hash_matches, parse_cid

PINS_FILE = "pins.json"
PINS_LOG = "pins.log"
PIN_LOG_COMPACT = 1024        # the log is folded into the snapshot past this many lines (and past the pin count)
MAX_BLOCK_SIZE = 2 * 1024 * 1024  # kubo refuses larger blocks too


def _key(multihash: bytes) -> str:
    return base64.b32encode(multihash).decode("ascii").rstrip("=")


def _multihash(key: str) -> bytes | None:
    try:
        return base64.b32decode(key + "=" * (-len(key) % 8))
    except ValueError:
        return None


class Blockstore:
    def __init__(self, root: str | os.PathLike, *, max_bytes: int | None = None, fsync: bool = False) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.tmp = self.root / ".tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._mutex = threading.Lock()  # guards the byte count (puts may come from worker threads)
        self._shards: set[str] = set()  # shard dirs known to exist (saves a mkdir per block)
        self._pins: set[Cid] = set()     # replaced, never changed in place (threads read it while one pins)
        self._seen: tuple | None = None   # (snapshot's inode, size, mtime) and the log's (inode, bytes read, lines)
        self._pins = self._load_pins()
        self._total = sum(size for _, size in self._scan())

    @classmethod
    def for_data_dir(cls, data_dir: str | os.PathLike, **kwargs) -> Blockstore:
        return cls(Path(data_dir) / "blocks", **kwargs)

    # --- blocks -------------------------------------------------------------------

    def path(self, cid: Cid) -> Path:
        key = _key(cid.multihash)
        return self.root / key[-3:-1] / f"{key}.data"

    def has(self, cid: Cid) -> bool:
        return self.path(cid).exists()

    def put(self, cid: Cid, data: bytes, *, verified: bool = False) -> bool:
        """Store ``data`` under ``cid``; return False if it was already there."""
        if len(data) > MAX_BLOCK_SIZE:
            raise BadBlock(f"block of {len(data)} bytes is over the {MAX_BLOCK_SIZE} byte limit")
        if not verified:
            cid.verify(data)
        path = self.path(cid)
        if path.exists():
            return False
        self._reserve(len(data))
        tmp = self.tmp / uuid.uuid4().hex
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                if self.fsync:
                    f.flush()
                    os.fsync(f.fileno())
            if path.parent.name not in self._shards:
                path.parent.mkdir(exist_ok=True)
                self._shards.add(path.parent.name)
            return self._publish(tmp, path)
        except BaseException:
            with self._mutex:
                self._total -= len(data)
            raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _reserve(self, size: int) -> None:
        with self._mutex:
            if self.max_bytes is not None and self._total + size > self.max_bytes:
                raise StorageFull(
                    f"the block store {self.root} would grow past its limit of {self.max_bytes} bytes "
                    f"({self._total} used): unpin what you no longer need (`p2pcompute storage unpin`), "
                    "run `p2pcompute storage gc`, or raise the limit")
            self._total += size

    def _publish(self, tmp: Path, path: Path) -> bool:
        """Hard-link the temp file into place: atomic, and never clobbers (a racing writer of the same block)."""
        try:
            os.link(tmp, path)
        except FileExistsError:
            with self._mutex:
                self._total -= tmp.stat().st_size
            return False
        except FileNotFoundError:  # the shard dir was removed behind our back
            path.parent.mkdir(exist_ok=True)
            os.link(tmp, path)
        return True

    def get(self, cid: Cid) -> bytes:
        """The block's bytes, checked against ``cid``."""
        path = self.path(cid)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise BlockNotFound(f"block {cid} is not in {self.root}") from None
        if not hash_matches(cid.multihash, data):
            self._remove(path)
            raise CorruptBlock(f"block {cid} on disk did not match its hash and was removed; fetch it again")
        return data

    def delete(self, cid: Cid) -> bool:
        return self._remove(self.path(cid))

    def _remove(self, path: Path) -> bool:
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return False
        with self._mutex:
            self._total -= size
        return True

    def _scan(self) -> Iterator[tuple[Path, int]]:
        for shard in self.root.iterdir():
            if shard.name.startswith(".") or not shard.is_dir():
                continue
            with os.scandir(shard) as it:
                for entry in it:
                    if entry.name.endswith(".data"):
                        yield Path(entry.path), entry.stat().st_size

    def multihashes(self) -> Iterator[bytes]:
        for path, _ in self._scan():
            mh = _multihash(path.name[:-5])
            if mh is not None:
                yield mh

    @property
    def total_bytes(self) -> int:
        return self._total

    def __len__(self) -> int:
        return sum(1 for _ in self._scan())

    # --- DAGs, pins and GC -----------------------------------------------------------

    def walk(self, root: Cid) -> Iterator[Cid]:
        """Every CID of the DAG under ``root`` (depth-first, each once); raises if a block is missing.

        Unlike ``car.iter_dag`` it reads only dag-pb nodes: a raw leaf is checked with ``has``,
        so pinning or collecting a 1 GiB file does not read its 1 GiB of leaves.
        """
        seen: set[bytes] = set()
        stack = [root]
        while stack:
            cid = stack.pop()
            if cid.multihash in seen:
                continue
            seen.add(cid.multihash)
            yield cid
            if cid.codec == DAG_PB:
                links = dagpb.decode(self.get(cid)).links
                stack.extend(link.hash for link in reversed(links))
            elif not self.has(cid):
                raise BlockNotFound(f"block {cid} is not in {self.root}")

    def pin(self, root: Cid | str) -> int:
        """Pin ``root`` recursively; return the number of blocks it covers. The whole DAG must be here."""
        root = parse_cid(root)
        count = sum(1 for _ in self.walk(root))
        with self._pin_lock():  # read-modify-write: a daemon and a local `add` may both pin
            self._refresh_pins()
            if root not in self._pins:
                self._log_pin("+", root)
        return count

    def unpin(self, root: Cid | str) -> bool:
        root = parse_cid(root)
        with self._pin_lock():
            self._refresh_pins()
            if root not in self._pins:
                return False
            self._log_pin("-", root)
        return True

    @contextlib.contextmanager
    def _pin_lock(self) -> Iterator[None]:
        """Serialises pin-set updates across processes (apart from the GC lock, which
        importers hold shared while they pin)."""
        with open(self.root / ".pins.lock", "a") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def reload_pins(self) -> None:
        """Re-read the pin set from disk (another process of the same user may have pinned): what was
        appended since the last look, or everything if the snapshot was replaced."""
        with self._pin_lock():
            self._refresh_pins()

    @property
    def pins(self) -> frozenset[Cid]:
        return frozenset(self._pins)

    def gc(self) -> tuple[int, int]:
        """Delete every block no pin reaches; return (blocks removed, bytes freed)."""
        with self._lock(fcntl.LOCK_EX):
            self.reload_pins()
            keep: set[bytes] = set()
            for root in self._pins:
                with contextlib.suppress(BlockNotFound, CorruptBlock):
                    for cid in self.walk(root):
                        keep.add(cid.multihash)
            removed = freed = 0
            for path, size in list(self._scan()):
                if _multihash(path.name[:-5]) not in keep and self._remove(path):
                    removed += 1
                    freed += size
            self._clean_tmp()
            return removed, freed

    def _clean_tmp(self, max_age: float = 3600.0) -> None:
        """Remove temp files left by writers that died (older than ``max_age`` seconds)."""
        import time

        now = time.time()
        for entry in os.scandir(self.tmp):
            with contextlib.suppress(FileNotFoundError):
                if now - entry.stat().st_mtime > max_age:
                    os.unlink(entry.path)

    @contextlib.contextmanager
    def session(self) -> Iterator[Blockstore]:
        """Hold off GC (in any process) while a DAG is written and pinned."""
        with self._lock(fcntl.LOCK_SH):
            yield self

    @contextlib.contextmanager
    def _lock(self, mode: int) -> Iterator[None]:
        with open(self.root / ".lock", "a") as f:
            fcntl.flock(f.fileno(), mode)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def _load_pins(self) -> set[Cid]:
        """The pin set on disk, read whole (snapshot, then log)."""
        self._seen = None
        self._pins = set()
        self._refresh_pins()
        return self._pins

    def _stat(self, name: str) -> tuple | None:
        try:
            st = os.stat(self.root / name)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def _refresh_pins(self) -> None:
        """Bring ``_pins`` up to date with the disk: the log's new lines, or everything if the snapshot or the
        log was replaced since the last look. Callers hold the pin lock (or are the constructor)."""
        snap, log = self._stat(PINS_FILE), self._stat(PINS_LOG)
        seen = self._seen
        pins = None                              # a new set, never the one readers may be iterating
        if seen is None or seen[0] != snap or (log is None and seen[1] is not None) or (
                log is not None and seen[1] is not None and (log[0] != seen[1][0] or log[1] < seen[1][1])):
            pins, seen = self._read_snapshot(), (snap, None)
        start = seen[1][1] if seen[1] is not None else 0
        lines = seen[1][2] if seen[1] is not None else 0
        torn = False
        if log is not None and log[1] > start:
            with open(self.root / PINS_LOG, "rb") as fh:
                fh.seek(start)
                tail = fh.read()
            whole, _, rest = tail.rpartition(b"\n")
            torn = bool(rest)
            if whole:
                pins = set(self._pins) if pins is None else pins
                for line in whole.split(b"\n"):
                    _apply_line(pins, line, self.root / PINS_LOG)
                    lines += 1
                start += len(whole) + 1
        if pins is not None:
            self._pins = pins
        self._seen = (snap, (log[0], start, lines) if log is not None else None)
        if torn:                                 # a writer died mid-line: fold what is whole into a snapshot
            self._save_pins()

    def _read_snapshot(self) -> set[Cid]:
        try:
            raw = json.loads((self.root / PINS_FILE).read_text())
        except FileNotFoundError:
            return set()
        except ValueError:
            raise StorageError(f"{self.root / PINS_FILE} is not valid JSON; fix or remove it") from None
        return {parse_cid(text) for text in raw.get("recursive", [])}

    def _log_pin(self, op: str, root: Cid) -> None:
        """Append one change (the pin lock held, ``_pins`` fresh); fold the log into the snapshot when long."""
        seen = self._seen
        lines = seen[1][2] if seen is not None and seen[1] is not None else 0
        if lines + 1 > max(PIN_LOG_COMPACT, len(self._pins)):
            pins = set(self._pins)
            (pins.add if op == "+" else pins.discard)(root)
            self._pins = pins
            self._save_pins()
            return
        with open(self.root / PINS_LOG, "ab") as fh:
            fh.write(f"{op}{root}\n".encode("ascii"))
            if self.fsync:
                fh.flush()
                os.fsync(fh.fileno())
        self._refresh_pins()     # reads back this line (nothing else: the pin lock is held)

    def _save_pins(self) -> None:
        """The whole pin set as the snapshot (atomically), then no log: it is all in the snapshot."""
        tmp = self.tmp / f"pins.{uuid.uuid4().hex}"
        tmp.write_text(json.dumps({"recursive": sorted(str(c) for c in self._pins)}, indent=1))
        os.replace(tmp, self.root / PINS_FILE)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.root / PINS_LOG)
        self._seen = (self._stat(PINS_FILE), None)


def _apply_line(pins: set[Cid], line: bytes, path: Path) -> None:
    """One ``+CID`` or ``-CID`` line of the pin log applied to ``pins``."""
    try:
        op, cid = line[:1], parse_cid(line[1:].decode("ascii"))
    except (ValueError, UnicodeDecodeError, P2PComputeError):
        raise StorageError(f"{path} has a bad line {line[:80]!r}; fix or remove it") from None
    if op == b"+":
        pins.add(cid)
    elif op == b"-":
        pins.discard(cid)
    else:
        raise StorageError(f"{path} has a bad line {line[:80]!r}; fix or remove it")
