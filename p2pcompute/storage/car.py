"""CARv1 files: a DAG's blocks in one stream (``ipfs dag export`` / ``dag import``, gateways).

Format::

    varint(len(header)) header            header = dag-cbor {"roots": [CID...], "version": 1}
    varint(len(cid)+len(data)) cid data   ... one section per block

CIDs inside the header are dag-cbor tag 42 around ``0x00 + binary CID``.

``CarReader`` reads a stream section by section (memory: one block) and
checks every block against its CID before yielding it, so bytes from a
gateway, a retrieval provider or a file on disk are never trusted. Sizes are
bounded (header 1 MiB, block 2 MiB); anything malformed raises ``BadBlock``,
``BadCid`` or ``HashMismatch`` (all ``WireError``). CARv2 is recognised and
refused with a clear message.

``CarWriter`` writes the header then blocks; ``export_dag`` writes a DAG in
depth-first order, each block once, as ``ipfs dag export`` does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO

import cbor2

from ..errors import BadBlock, BadCid
from . import dagpb
from .cid import DAG_PB, Cid, encode_varint

MAX_HEADER = 1 << 20
MAX_SECTION = 2 * 1024 * 1024 + 128  # a 2 MiB block plus its CID


def encode_header(roots: Iterable[Cid]) -> bytes:
    """The dag-cbor header, canonical (keys length-first: "roots" before "version")."""
    body = {"roots": [cbor2.CBORTag(42, b"\x00" + cid.to_bytes()) for cid in roots], "version": 1}
    return cbor2.dumps(body)


def _read_varint(stream: BinaryIO, limit: int) -> int | None:
    """A section length from the stream; None at a clean end of stream."""
    value = shift = 0
    for i in range(10):
        b = stream.read(1)
        if not b:
            if i == 0:
                return None
            raise BadBlock("CAR: truncated varint")
        byte = b[0]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and i:
                raise BadBlock("CAR: non-minimal varint")
            if value > limit:
                raise BadBlock(f"CAR: section of {value} bytes is over the {limit} byte limit")
            return value
        shift += 7
    raise BadBlock("CAR: varint too long")


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    data = stream.read(n)
    while len(data) < n:
        more = stream.read(n - len(data))
        if not more:
            raise BadBlock("CAR: truncated section")
        data += more
    return data


def decode_header(raw: bytes) -> list[Cid]:
    try:
        header = cbor2.loads(raw)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError, EOFError):
        raise BadBlock("CAR: header is not valid CBOR") from None
    if not isinstance(header, dict) or "version" not in header:
        raise BadBlock("CAR: header is not a map with a version")
    if header["version"] == 2:
        raise BadBlock("CAR: this is a CARv2 file; only CARv1 is supported (convert it with `car` tools)")
    if header["version"] != 1 or set(header) != {"roots", "version"} or not isinstance(header["roots"], list):
        raise BadBlock("CAR: header must be {roots: [...], version: 1}")
    roots = []
    for item in header["roots"]:
        if not isinstance(item, cbor2.CBORTag) or item.tag != 42 or not isinstance(item.value, bytes) \
                or item.value[:1] != b"\x00":
            raise BadBlock("CAR: a root is not a CID (tag 42)")
        try:
            roots.append(Cid.decode(item.value[1:]))
        except BadCid as exc:
            raise BadBlock(f"CAR: bad root CID ({exc})") from None
    return roots


class CarReader:
    """Iterate ``(cid, data)`` over a CARv1 stream, every block verified."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        n = _read_varint(stream, MAX_HEADER)
        if not n:
            raise BadBlock("CAR: empty stream or empty header")
        self.roots = decode_header(_read_exact(stream, n))
        self.blocks = 0
        self.bytes = 0

    def __iter__(self) -> Iterator[tuple[Cid, bytes]]:
        while True:
            n = _read_varint(self.stream, MAX_SECTION)
            if n is None:
                return
            section = _read_exact(self.stream, n)
            cid, pos = Cid.decode_prefix(section)
            data = section[pos:]
            cid.verify(data)
            self.blocks += 1
            self.bytes += len(data)
            yield cid, data


class CarWriter:
    def __init__(self, out: BinaryIO, roots: Iterable[Cid]) -> None:
        self.out = out
        header = encode_header(roots)
        out.write(encode_varint(len(header)) + header)
        self.blocks = 0

    def write(self, cid: Cid, data: bytes) -> None:
        raw = cid.to_bytes()
        self.out.write(encode_varint(len(raw) + len(data)) + raw)
        self.out.write(data)
        self.blocks += 1


def iter_dag(get: Callable[[Cid], bytes], root: Cid) -> Iterator[tuple[Cid, bytes]]:
    """Blocks of the DAG under ``root``, depth-first in link order, each once."""
    seen: set[bytes] = set()
    stack = [root]
    while stack:
        cid = stack.pop()
        if cid.multihash in seen:
            continue
        seen.add(cid.multihash)
        data = get(cid)
        yield cid, data
        if cid.codec == DAG_PB:
            stack.extend(link.hash for link in reversed(dagpb.decode(data).links))


def export_dag(get: Callable[[Cid], bytes], root: Cid, out: BinaryIO,
               progress: Callable[[int], None] | None = None) -> int:
    """Write the DAG under ``root`` as a CARv1 with that root; return the number of blocks."""
    writer = CarWriter(out, [root])
    for cid, data in iter_dag(get, root):
        writer.write(cid, data)
        if progress is not None:
            progress(len(data))
    return writer.blocks
