"""Streaming UnixFS importer that makes the same DAG, block for block, as ``ipfs add``.

Theory of operation
-------------------
kubo's defaults: fixed 256 KiB chunks, a *balanced* dag-pb tree with at most
174 links per node, CIDv0 (``Qm...``). ``--cid-version 1`` switches every
node to CIDv1 and, unless ``--raw-leaves=false``, makes leaves raw blocks
(codec 0x55, the chunk bytes themselves). ``raw_leaves=None`` follows that
rule; ``raw_leaves=True`` with CIDv0 gives raw leaves under CIDv0 parents,
as kubo does.

A leaf is ``PBNode(Data=UnixFS{File, Data=chunk, filesize=len})`` (or the
raw chunk). An internal node is ``PBNode(links, Data=UnixFS{File,
filesize=sum, blocksizes=[file bytes under each child]})``, each link
``{Hash, Name: "", Tsize: cumulative size of the child's DAG}``.

kubo builds the tree top-down (the first leaf, then a depth-1 node filled
with 174 leaves, then a depth-2 node whose first child is that one, ...).
The result is identical to grouping bottom-up: leaves in runs of 174 under
depth-1 nodes, those in runs of 174 under depth-2 nodes, and so on, every
node full except along the right edge, and a lone root child is never
collapsed except at the top. We build it bottom-up and streaming: one list
of at most 174 pending links per level, a node is emitted as soon as its
level fills, so memory stays at one chunk plus 174 links per level, whatever
the file size. ``finish`` closes the right edge. A single chunk is its own
root; an empty file is one empty leaf.

Blocks go to ``put(cid, block)`` as they are made (``None``: only hash).
Directories (``import_path`` on a directory, as ``ipfs add -r``) become plain
UnixFS directory nodes, links sorted by name; hidden files are skipped unless
``hidden=True`` (kubo's ``--hidden``); symlinks become UnixFS symlink nodes.
Directories big enough for kubo to shard them (HAMT, > 256 KiB of link
names and CIDs) are refused.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..errors import UserError
from . import dagpb, unixfs
from .cid import DAG_PB, RAW, Cid, encode_varint, sha256_multihash

CHUNK_SIZE = 256 * 1024
MAX_LINKS = 174
HAMT_THRESHOLD = 256 * 1024  # kubo shards a directory whose estimated node size exceeds this

Put = Callable[[Cid, bytes], None]


@dataclass(frozen=True, slots=True)
class ImportResult:
    cid: Cid
    size: int  # file bytes (for a directory: sum over its files)
    tsize: int  # cumulative size of the DAG's blocks, as in a parent's link Tsize
    blocks: int  # blocks made (for a directory: including its files')


@dataclass(frozen=True, slots=True)
class _Link:
    cid: Cid
    tsize: int
    filesize: int


def leaf_block(chunk: bytes) -> bytes:
    """``PBNode(Data=UnixFS{File, Data=chunk, filesize})``, built with one copy of the chunk (hot path)."""
    if not chunk:
        return dagpb.encode(dagpb.PBNode((), unixfs.encode(unixfs.UnixFSData(unixfs.FILE, None, filesize=0))))
    n = encode_varint(len(chunk))
    inner_len = 3 + len(n) + len(chunk) + 1 + len(n)  # 08 02 | 12 len chunk | 18 len
    return b"".join((b"\x0a", encode_varint(inner_len), b"\x08\x02\x12", n, chunk, b"\x18", n))


class FileImporter:
    """Feed chunks with ``add_chunk`` (all but the last exactly ``chunk_size``), then ``finish``."""

    def __init__(self, put: Put | None = None, *, cid_version: int = 0, raw_leaves: bool | None = None,
                 chunk_size: int = CHUNK_SIZE, max_links: int = MAX_LINKS) -> None:
        if cid_version not in (0, 1):
            raise UserError(f"CID version must be 0 or 1, not {cid_version}")
        if not 1 <= chunk_size <= 1024 * 1024 or max_links < 2:
            raise UserError("chunk size must be 1 B..1 MiB and max links at least 2")
        self.put = put
        self.cid_version = cid_version
        self.raw_leaves = cid_version == 1 if raw_leaves is None else raw_leaves
        self.chunk_size = chunk_size
        self.max_links = max_links
        self.levels: list[list[_Link]] = [[]]
        self.size = 0
        self.blocks = 0
        self._finished = False

    def _store(self, codec: int, block: bytes) -> Cid:
        mh = sha256_multihash(block)
        cid = Cid(0, DAG_PB, mh) if codec == DAG_PB and self.cid_version == 0 else Cid(1, codec, mh)
        if self.put is not None:
            self.put(cid, block)
        self.blocks += 1
        return cid

    def _leaf(self, chunk: bytes) -> _Link:
        if self.raw_leaves:
            return _Link(self._store(RAW, chunk), len(chunk), len(chunk))
        block = leaf_block(chunk)
        return _Link(self._store(DAG_PB, block), len(block), len(chunk))

    def _parent(self, children: list[_Link]) -> _Link:
        filesize = sum(c.filesize for c in children)
        data = unixfs.encode(unixfs.UnixFSData(unixfs.FILE, None, filesize=filesize,
                                               blocksizes=tuple(c.filesize for c in children)))
        links = tuple(dagpb.PBLink(c.cid, "", c.tsize) for c in children)
        block = dagpb.encode(dagpb.PBNode(links, data))
        return _Link(self._store(DAG_PB, block), len(block) + sum(c.tsize for c in children), filesize)

    def _push(self, level: int, link: _Link) -> None:
        while True:
            if level == len(self.levels):
                self.levels.append([])
            pending = self.levels[level]
            if len(pending) < self.max_links:
                pending.append(link)
                return
            # Full level and more coming: close it, carry its node one level up.
            self.levels[level] = [link]
            link = self._parent(pending)
            level += 1

    def add_chunk(self, chunk: bytes) -> None:
        if self._finished:
            raise RuntimeError("importer already finished")
        if len(chunk) > self.chunk_size:
            raise ValueError("chunk larger than chunk_size")
        self.size += len(chunk)
        self._push(0, self._leaf(chunk))

    def finish(self) -> ImportResult:
        if self._finished:
            raise RuntimeError("importer already finished")
        self._finished = True
        if not self.levels[0] and len(self.levels) == 1:
            self.levels[0].append(self._leaf(b""))
        level = 0
        while True:  # close the right edge, bottom-up; every level below the top is non-empty
            pending = self.levels[level]
            if level == len(self.levels) - 1 and len(pending) == 1:
                root = pending[0]
                break
            self.levels[level] = []
            self._push(level + 1, self._parent(pending))
            level += 1
        return ImportResult(root.cid, self.size, root.tsize, self.blocks)


def read_chunks(stream: BinaryIO, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Exact ``chunk_size`` pieces of a stream (short reads from pipes are joined), the last shorter."""
    while True:
        chunk = stream.read(chunk_size)
        if not chunk:
            return
        while len(chunk) < chunk_size:
            more = stream.read(chunk_size - len(chunk))
            if not more:
                break
            chunk += more
        yield chunk
        if len(chunk) < chunk_size:
            return


def import_stream(stream: BinaryIO, put: Put | None = None, *, progress: Callable[[int], None] | None = None,
                  **options) -> ImportResult:
    """Import a file-like object; ``progress(n)`` is called with each chunk's length."""
    importer = FileImporter(put, **options)
    for chunk in read_chunks(stream, importer.chunk_size):
        importer.add_chunk(chunk)
        if progress is not None:
            progress(len(chunk))
    return importer.finish()


def import_bytes(data: bytes, put: Put | None = None, **options) -> ImportResult:
    importer = FileImporter(put, **options)
    step = importer.chunk_size
    for i in range(0, len(data), step):
        importer.add_chunk(data[i:i + step])
    return importer.finish()


def import_path(path: str | os.PathLike, put: Put | None = None, *, hidden: bool = False,
                progress: Callable[[int], None] | None = None, **options) -> ImportResult:
    """Import a file, or a directory tree as ``ipfs add -r`` does (the directory's own CID)."""
    path = Path(path)
    mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode):
        return _import_symlink(path, put, **options)
    if stat.S_ISDIR(mode):
        return _import_dir(path, put, hidden=hidden, progress=progress, **options)
    if not stat.S_ISREG(mode):
        raise UserError(f"{path} is not a regular file, directory or symlink")
    with open(path, "rb") as f:
        return import_stream(f, put, progress=progress, **options)


def _node_cid(block: bytes, cid_version: int) -> Cid:
    return Cid(cid_version, DAG_PB, sha256_multihash(block))


def _import_symlink(path: Path, put: Put | None, *, cid_version: int = 0, **_options) -> ImportResult:
    target = os.fsencode(os.readlink(path))
    block = dagpb.encode(dagpb.PBNode((), unixfs.encode(unixfs.UnixFSData(unixfs.SYMLINK, target))))
    cid = _node_cid(block, cid_version)
    if put is not None:
        put(cid, block)
    return ImportResult(cid, 0, len(block), 1)


def _import_dir(path: Path, put: Put | None, *, hidden: bool, progress, **options) -> ImportResult:
    links: list[dagpb.PBLink] = []
    size = blocks = 0
    estimate = 0
    with os.scandir(path) as it:
        names = sorted(e.name for e in it if hidden or not e.name.startswith("."))
    for name in names:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise UserError(f"{path / name!r}: file names must be valid UTF-8 to be added") from None
        child = import_path(path / name, put, hidden=hidden, progress=progress, **options)
        links.append(dagpb.PBLink(child.cid, name, child.tsize))
        size += child.size
        blocks += child.blocks
        estimate += len(name.encode("utf-8")) + len(child.cid.to_bytes())
        if estimate > HAMT_THRESHOLD:
            raise UserError(f"{path} has too many entries for a plain UnixFS directory; kubo would shard it "
                            "(HAMT), which is not supported yet: add its subdirectories separately")
    block = dagpb.encode(dagpb.PBNode(tuple(links), unixfs.DIRECTORY_DATA))
    cid = _node_cid(block, options.get("cid_version", 0))
    if put is not None:
        put(cid, block)
    return ImportResult(cid, size, len(block) + sum(link.tsize or 0 for link in links), blocks + 1)
