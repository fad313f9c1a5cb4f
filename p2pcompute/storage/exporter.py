"""Streaming UnixFS exporter: file bytes (whole or a byte range) and directory listings.

Theory of operation
-------------------
``iter_file(get, root, offset, length)`` walks a file's DAG depth-first with
an explicit stack of ``(cid, start offset, expected size)`` and yields the
bytes in order, one block at a time, so memory holds one block plus the
stack (at most 174 entries per level, depth bounded by ``MAX_DEPTH``).
A node's ``blocksizes`` say how many file bytes lie under each child, so
children wholly outside the range are never fetched: reading the last byte
of a 1 GiB file touches one block per level.

``get(cid) -> bytes`` supplies blocks (a ``Blockstore`` verifies them against
their CID). Blocks are untrusted: every size the DAG claims is checked
(a node's filesize against its data plus blocksizes, each child's actual
size against the blocksize its parent gave), so a malformed DAG raises
``BadBlock`` instead of yielding wrong bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..errors import BadBlock
from . import dagpb, unixfs
from .cid import DAG_PB, RAW, Cid

MAX_DEPTH = 32
Get = Callable[[Cid], bytes]


@dataclass(frozen=True, slots=True)
class Entry:
    name: str
    cid: Cid
    tsize: int | None


@dataclass(frozen=True, slots=True)
class Stat:
    kind: str  # "file", "directory", "symlink" or "raw" (a raw-codec block: a file too)
    size: int  # file bytes (0 for directories and symlinks)


def _decode_node(cid: Cid, block: bytes) -> tuple[dagpb.PBNode, unixfs.UnixFSData]:
    if cid.codec != DAG_PB:
        raise BadBlock(f"{cid}: codec {cid.codec_name} is not UnixFS")
    node = dagpb.decode(block)
    if node.data is None:
        raise BadBlock(f"{cid}: dag-pb node without UnixFS data")
    return node, unixfs.decode(node.data)


def stat(get: Get, cid: Cid) -> Stat:
    """What ``cid`` is, from its root block alone."""
    block = get(cid)
    if cid.codec == RAW:
        return Stat("raw", len(block))
    node, fs = _decode_node(cid, block)
    if fs.type in (unixfs.FILE, unixfs.RAW):
        return Stat("file", _node_size(cid, node, fs))
    if fs.type == unixfs.DIRECTORY:
        return Stat("directory", 0)
    if fs.type == unixfs.SYMLINK:
        return Stat("symlink", 0)
    raise BadBlock(f"{cid}: UnixFS {unixfs.TYPE_NAMES[fs.type]} is not supported yet")


def _node_size(cid: Cid, node: dagpb.PBNode, fs: unixfs.UnixFSData) -> int:
    if len(fs.blocksizes) != len(node.links):
        raise BadBlock(f"{cid}: {len(node.links)} links but {len(fs.blocksizes)} blocksizes")
    size = len(fs.data or b"") + sum(fs.blocksizes)
    if fs.filesize is not None and fs.filesize != size:
        raise BadBlock(f"{cid}: filesize {fs.filesize} but data and blocksizes add up to {size}")
    return size


def iter_file(get: Get, root: Cid, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
    """Yield the bytes ``[offset, offset+length)`` of the file at ``root`` (to the end if no length)."""
    if offset < 0 or (length is not None and length < 0):
        raise ValueError("offset and length must not be negative")
    end = None if length is None else offset + length
    stack: list[tuple[Cid, int, int | None, int]] = [(root, 0, None, 0)]
    while stack:
        cid, start, expected, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise BadBlock(f"{root}: DAG deeper than {MAX_DEPTH}")
        block = get(cid)
        if cid.codec == RAW:
            data, children = block, ()
            size = len(block)
        else:
            node, fs = _decode_node(cid, block)
            if fs.type not in (unixfs.FILE, unixfs.RAW):
                raise BadBlock(f"{cid}: UnixFS {unixfs.TYPE_NAMES[fs.type]} inside a file, or not a file")
            size = _node_size(cid, node, fs)
            data = fs.data or b""
            children = node.links
        if expected is not None and size != expected:
            raise BadBlock(f"{cid}: holds {size} bytes, its parent says {expected}")
        lo = max(offset - start, 0)
        hi = len(data) if end is None else min(end - start, len(data))
        if lo < hi:
            yield data[lo:hi] if (lo, hi) != (0, len(data)) else data
        if not children:
            continue
        child_start = start + len(data)
        pending = []
        for link, bsize in zip(children, fs.blocksizes):
            if child_start + bsize > offset and (end is None or child_start < end):
                pending.append((link.hash, child_start, bsize, depth + 1))
            child_start += bsize
        stack.extend(reversed(pending))


def read_file(get: Get, root: Cid, offset: int = 0, length: int | None = None) -> bytes:
    return b"".join(iter_file(get, root, offset, length))


def list_directory(get: Get, cid: Cid) -> list[Entry]:
    """The entries of a plain UnixFS directory."""
    node, fs = _decode_node(cid, get(cid))
    if fs.type == unixfs.HAMT_SHARD:
        raise BadBlock(f"{cid}: HAMT-sharded directories are not supported yet")
    if fs.type != unixfs.DIRECTORY:
        raise BadBlock(f"{cid} is not a directory")
    entries = []
    for link in node.links:
        name = link.name or ""
        if not name or name in (".", "..") or "/" in name or "\0" in name:
            raise BadBlock(f"{cid}: unsafe directory entry name {name!r}")
        entries.append(Entry(name, link.hash, link.tsize))
    return entries


def read_symlink(get: Get, cid: Cid) -> bytes:
    _, fs = _decode_node(cid, get(cid))
    if fs.type != unixfs.SYMLINK:
        raise BadBlock(f"{cid} is not a symlink")
    return fs.data or b""
