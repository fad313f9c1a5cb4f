"""Fetch the data a ``DataRef`` names into a block store, verified on the way in.

Theory of operation
-------------------
``fetch(ref, store)`` picks a fetcher by the ref's kind. Whatever the source,
nothing is trusted and every byte reaches the store through a hash:

* **http(s)** and **file**: the bytes stream through the UnixFS importer
  (the same DAG as ``ipfs add``), so the result is a CID. A byte range is a
  ``Range`` request (a server that ignores it and answers 200 is handled by
  skipping and cutting). ``expect=sha256:...`` is computed over the stream;
  ``expect=CID`` picks the import options that CID implies (v0, or v1 with
  raw leaves) and compares the root. Sizes are bounded (``Limits``).
* **gateway** (``/ipfs/CID?format=car``, the trustless gateway protocol that
  Filecoin retrieval providers also serve): the CAR is read by ``car.py``,
  which checks every block against its CID; a block is stored only if a
  block already received links to it (the root first), so a gateway cannot
  slip unrelated blocks in, and the DAG must be complete at the end.
* **kubo** (``kubo-rpc://host:port/CID``): the DAG is walked with
  ``/api/v0/block/get``, a few blocks at a time, each checked against the CID
  that named it. ``KuboRpc`` also offers ``add`` and ``cat``.
* **ipfs**: the local store if it holds the whole DAG, else ``network(cid)``
  (the daemon's bitswap, which verifies every block itself).

Network reading is async (httpx); hashing and disk writes run in a worker
thread, fed through a bounded channel (``_pipe``). For CID sources a path is
resolved through UnixFS directories after the fetch; a byte range narrows
what readers read (``read_ref``), the whole DAG is fetched. On success the
target is pinned (``pin=False`` to skip); after a mismatch nothing is pinned,
so GC reclaims what was stored.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, TypeVar

import httpx
import trio

from ..errors import BadBlock, BlockNotFound, HashMismatch, P2PComputeError, UserError
from . import dagpb, exporter
from .blockstore import MAX_BLOCK_SIZE, Blockstore
from .car import CarReader
from .cid import DAG_PB, Cid
from .dataref import DataRef, resolve_credentials
from .importer import ImportResult, import_stream

T = TypeVar("T")
Progress = Callable[[int], None]
PIPE_DEPTH = 16  # chunks in flight between the network task and the hashing thread
CAR_ACCEPT = "application/vnd.ipld.car"


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 64 << 30  # bytes taken from one source
    max_blocks: int = 1 << 22  # blocks of one DAG
    timeout: float = 30.0  # seconds per network operation (connect, each read)
    parallel: int = 8  # kubo block/get requests in flight
    max_redirects: int = 5


@dataclass(frozen=True)
class FetchResult:
    cid: Cid  # what the ref names (after its path)
    root: Cid  # what was fetched or imported
    size: int  # file bytes under ``cid`` (0 for a directory)
    kind: str  # the ref's kind
    transferred: int  # bytes that came from the source
    pinned: bool


async def fetch(ref: DataRef, store: Blockstore, *, data_dir: Any = None, limits: Limits = Limits(),
                progress: Progress | None = None, network: Callable[[Cid], Awaitable[Any]] | None = None,
                pin: bool = True, environ: dict[str, str] | None = None) -> FetchResult:
    """Bring what ``ref`` names into ``store``, verified; see the module doc."""
    progress = progress or (lambda n: None)
    headers = resolve_credentials(ref, data_dir, environ)
    kind = ref.kind
    if kind in ("http", "file"):
        result, transferred = await (_fetch_http(ref, store, headers, limits, progress) if kind == "http"
                                     else _fetch_file(ref, store, limits, progress))
        root = target = result.cid
    else:
        root = ref.cid
        if kind == "gateway":
            transferred = await _fetch_gateway(ref, store, headers, limits, progress)
        elif kind == "kubo":
            async with KuboRpc(ref.api_base, headers, limits) as kubo:
                transferred = await kubo.fetch_dag(root, store, progress)
        else:
            transferred = await _fetch_ipfs(root, store, network)
        target = await trio.to_thread.run_sync(_resolve_path, store, root, ref.path)
    info = await trio.to_thread.run_sync(_check_expect, ref, store, target, kind in ("http", "file"))
    if pin:
        await trio.to_thread.run_sync(store.pin, target)
    return FetchResult(target, root, info.size, kind, transferred, pin)


def read_ref(store: Blockstore, cid: Cid, ref: DataRef) -> bytes:
    """The bytes of a fetched file, narrowed to the ref's range for CID sources."""
    if ref.range is None or ref.kind in ("http", "file"):
        return exporter.read_file(store.get, cid)
    size = exporter.stat(store.get, cid).size
    span = ref.range.clamp(size)
    return b"" if span is None else exporter.read_file(store.get, cid, *span)


# --- the thread pipe --------------------------------------------------------------------------


class _ThreadReader:
    """A blocking file-like over a trio channel, for code running in a worker thread."""

    def __init__(self, recv: trio.MemoryReceiveChannel) -> None:
        self._recv = recv
        self._buf = bytearray()
        self._eof = False

    def read(self, n: int = -1) -> bytes:
        while (n < 0 or len(self._buf) < n) and not self._eof:
            try:
                self._buf += trio.from_thread.run(self._recv.receive)
            except trio.EndOfChannel:
                self._eof = True
        n = len(self._buf) if n < 0 else min(n, len(self._buf))
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out


async def _pipe(chunks: AsyncIterator[bytes], consume: Callable[[BinaryIO], T]) -> T:
    """Run ``consume(reader)`` in a thread while ``chunks`` are fed to it; its result."""
    send, recv = trio.open_memory_channel(PIPE_DEPTH)
    out: list[T] = []

    async def produce() -> None:
        async with send:
            async for chunk in chunks:
                if chunk:
                    await send.send(chunk)

    with _first_error():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            out.append(await trio.to_thread.run_sync(consume, _ThreadReader(recv)))
            nursery.cancel_scope.cancel()  # the consumer read to the end; nothing more is needed
    return out[0]


@contextlib.contextmanager
def _first_error() -> Iterator[None]:
    """Raise the error that stopped a nursery itself, not the group (the others are its consequences)."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        ours = [e for e in leaves if isinstance(e, P2PComputeError)]
        if ours or len(leaves) == 1:
            raise (ours or leaves)[0] from None
        raise


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    out = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


class _Metered:
    """Wraps a reader: counts, bounds and (optionally) SHA-256s what passes."""

    def __init__(self, stream: BinaryIO, limit: int, progress: Progress, what: str) -> None:
        self.stream, self.limit, self.progress, self.what = stream, limit, progress, what
        self.count = 0
        self.sha = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        self.count += len(data)
        if self.count > self.limit:
            raise UserError(f"{self.what} is over the size limit of {self.limit} bytes")
        self.sha.update(data)
        self.progress(len(data))
        return data


def _import_options(ref: DataRef) -> dict:
    cid = ref.expect_cid
    if cid is None or cid.version == 0:
        return {"cid_version": 0}
    return {"cid_version": 1, "raw_leaves": True}


def _import(ref: DataRef, store: Blockstore, stream: BinaryIO, limits: Limits,
            progress: Progress) -> tuple[ImportResult, int]:
    metered = _Metered(stream, limits.max_bytes, progress, str(ref.uri)[:120])
    with store.session():
        result = import_stream(metered, lambda cid, data: store.put(cid, data, verified=True), **_import_options(ref))
    sha = ref.expect_sha256
    if sha is not None and metered.sha.hexdigest() != sha:
        raise HashMismatch(f"{ref.uri}: the bytes have sha256 {metered.sha.hexdigest()}, expected {sha}")
    return result, metered.count


# --- files and http ------------------------------------------------------------------------------


async def _fetch_file(ref: DataRef, store: Blockstore, limits: Limits, progress: Progress) -> tuple[ImportResult, int]:
    path = ref.file_path

    def run() -> tuple[ImportResult, int]:
        try:
            f = open(path, "rb")
        except OSError as exc:
            raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
        with f:
            if ref.range is not None:
                f.seek(ref.range.start)
            stream: BinaryIO = f if ref.range is None or ref.range.end is None else _Cut(f, ref.range.length)
            return _import(ref, store, stream, limits, progress)

    return await trio.to_thread.run_sync(run)


class _Cut:
    def __init__(self, stream: BinaryIO, length: int) -> None:
        self.stream, self.left = stream, length

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.stream.read(n)
        self.left -= len(data)
        return data


def _client(limits: Limits, headers: dict[str, str]) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=httpx.Timeout(limits.timeout), headers=headers, follow_redirects=True,
                             max_redirects=limits.max_redirects)


async def _fetch_http(ref: DataRef, store: Blockstore, headers: dict[str, str], limits: Limits,
                      progress: Progress) -> tuple[ImportResult, int]:
    if ref.range is not None:
        headers = headers | {"Range": ref.range.header()}
    async with _client(limits, headers) as client:
        try:
            async with client.stream("GET", ref.uri) as resp:
                skip, keep = _range_plan(ref, resp)
                chunks = _window(resp.aiter_bytes(), skip, keep)
                return await _pipe(chunks, lambda stream: _import(ref, store, stream, limits, progress))
        except httpx.HTTPError as exc:
            raise UserError(f"{ref.uri}: {type(exc).__name__}: {exc}") from None


def _range_plan(ref: DataRef, resp: httpx.Response) -> tuple[int, int | None]:
    """(bytes to skip, bytes to keep or None) for a response to our (ranged) request."""
    status = resp.status_code
    if status == 416:
        raise UserError(f"{ref.uri}: the server says range {ref.range} is outside the data")
    if status not in (200, 206):
        raise UserError(f"{ref.uri}: the server answered HTTP {status} {resp.reason_phrase}")
    rng = ref.range
    if rng is None:
        if status == 206:
            raise UserError(f"{ref.uri}: the server sent part of the data (206) to a request for all of it")
        return 0, None
    if status == 200:  # the server ignored Range: take the range from the whole body
        return rng.start, rng.length
    content_range = resp.headers.get("content-range", "")
    try:
        unit, _, span = content_range.partition(" ")
        first, last = (int(x) for x in span.split("/")[0].split("-"))
    except ValueError:
        raise UserError(f"{ref.uri}: a 206 answer with a bad Content-Range {content_range!r}") from None
    if unit != "bytes" or first != rng.start or (rng.end is not None and last > rng.end):
        raise UserError(f"{ref.uri}: asked for bytes {rng}, the server sent {content_range!r}")
    return 0, last - first + 1


async def _window(chunks: AsyncIterator[bytes], skip: int, keep: int | None) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        if skip:
            cut = min(skip, len(chunk))
            chunk, skip = chunk[cut:], skip - cut
        if keep is not None:
            chunk, keep = chunk[:keep], keep - min(keep, len(chunk))
        if chunk:
            yield chunk
        if keep == 0:
            return


# --- trustless gateway --------------------------------------------------------------------------------


async def _fetch_gateway(ref: DataRef, store: Blockstore, headers: dict[str, str], limits: Limits,
                         progress: Progress) -> int:
    headers = headers | {"Accept": CAR_ACCEPT}
    root = ref.cid
    async with _client(limits, headers) as client:
        try:
            async with client.stream("GET", ref.uri) as resp:
                if resp.status_code != 200:
                    raise UserError(f"{ref.uri}: the gateway answered HTTP {resp.status_code} {resp.reason_phrase}")
                return await _pipe(resp.aiter_bytes(), lambda s: _store_car(s, root, store, limits, progress))
        except httpx.HTTPError as exc:
            raise UserError(f"{ref.uri}: {type(exc).__name__}: {exc}") from None


def _store_car(stream: BinaryIO, root: Cid, store: Blockstore, limits: Limits, progress: Progress) -> int:
    """Store a gateway CAR's blocks (each verified by CarReader); only blocks the DAG links to."""
    metered = _Metered(stream, limits.max_bytes, progress, f"the CAR for {root}")
    reader = CarReader(metered)
    if root.multihash not in {r.multihash for r in reader.roots}:
        raise BadBlock(f"the gateway's CAR has roots {[str(r) for r in reader.roots]}, not {root}")
    wanted = {root.multihash}
    with store.session():
        for cid, data in reader:
            if cid.multihash not in wanted:
                raise BadBlock(f"the gateway sent block {cid}, which no block before it links to")
            if len(wanted) > limits.max_blocks:
                raise BadBlock(f"the DAG of {root} has over {limits.max_blocks} blocks")
            store.put(cid, data, verified=True)
            if cid.codec == DAG_PB:
                wanted.update(link.hash.multihash for link in dagpb.decode(data).links)
    return metered.count


# --- kubo RPC -------------------------------------------------------------------------------------------


class KuboRpc:
    """A small client of a kubo daemon's RPC API (``/api/v0``, plain HTTP POST)."""

    def __init__(self, base: str, headers: dict[str, str] | None = None, limits: Limits = Limits()) -> None:
        self.base = base.rstrip("/")
        self.limits = limits
        self._http = _client(limits, headers or {})

    async def __aenter__(self) -> KuboRpc:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._http.aclose()

    async def _post(self, command: str, params: dict, *, limit: int, files: dict | None = None) -> bytes:
        url = f"{self.base}/api/v0/{command}"
        try:
            async with self._http.stream("POST", url, params=params, files=files) as resp:
                body = bytearray()
                async for chunk in resp.aiter_bytes():
                    body += chunk
                    if len(body) > limit:
                        raise UserError(f"kubo {command}: answer over {limit} bytes")
        except httpx.ConnectError:
            raise UserError(f"no kubo RPC API answers at {self.base}: is `ipfs daemon` running there?") from None
        except httpx.HTTPError as exc:
            raise UserError(f"kubo at {self.base}: {command}: {type(exc).__name__}: {exc}") from None
        if resp.status_code != 200:
            try:
                message = json.loads(body)["Message"]
            except (ValueError, KeyError, TypeError):
                message = bytes(body[:200]).decode(errors="replace")
            raise UserError(f"kubo at {self.base}: {command} failed (HTTP {resp.status_code}): {message}")
        return bytes(body)

    async def add(self, data: bytes, *, cid_version: int = 0, raw_leaves: bool | None = None) -> Cid:
        params = {"cid-version": str(cid_version), "pin": "true"}
        if raw_leaves is not None:
            params["raw-leaves"] = "true" if raw_leaves else "false"
        body = await self._post("add", params, limit=1 << 20, files={"file": ("file", data)})
        try:
            return Cid.parse(json.loads(body.splitlines()[-1])["Hash"])
        except (ValueError, KeyError, IndexError) as exc:
            raise BadBlock(f"kubo add: unexpected answer ({exc})") from None

    async def cat(self, cid: Cid, offset: int = 0, length: int | None = None) -> bytes:
        params = {"arg": str(cid), "offset": str(offset)}
        if length is not None:
            params["length"] = str(length)
        return await self._post("cat", params, limit=self.limits.max_bytes)

    async def block_get(self, cid: Cid) -> bytes:
        """One block, checked against ``cid`` (``HashMismatch`` otherwise)."""
        data = await self._post("block/get", {"arg": str(cid)}, limit=MAX_BLOCK_SIZE)
        cid.verify(data)
        return data

    async def fetch_dag(self, root: Cid, store: Blockstore, progress: Progress = lambda n: None) -> int:
        """Walk the DAG under ``root`` with block/get into ``store``; bytes transferred."""
        seen: set[bytes] = set()
        limiter = trio.CapacityLimiter(self.limits.parallel)
        total = 0

        async def one(cid: Cid, nursery: trio.Nursery) -> None:
            nonlocal total
            if cid.multihash in seen:
                return
            seen.add(cid.multihash)
            if len(seen) > self.limits.max_blocks:
                raise BadBlock(f"the DAG of {root} has over {self.limits.max_blocks} blocks")
            async with limiter:
                data = await self.block_get(cid)
                await trio.to_thread.run_sync(lambda: store.put(cid, data, verified=True))
            total += len(data)
            progress(len(data))
            if cid.codec == DAG_PB:
                for link in dagpb.decode(data).links:
                    nursery.start_soon(one, link.hash, nursery)

        with store.session(), _first_error():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(one, root, nursery)
        return total


# --- ipfs:// -----------------------------------------------------------------------------------------


async def _fetch_ipfs(root: Cid, store: Blockstore, network: Callable[[Cid], Awaitable[Any]] | None) -> int:
    if await trio.to_thread.run_sync(_complete, store, root):
        return 0
    if network is None:
        raise UserError(f"{root} is not (wholly) in the local block store and no daemon is running to fetch it "
                        "from peers: start one with `p2pcompute join`, or give --ipfs-api for a kubo daemon")
    await network(root)
    return 0


def _complete(store: Blockstore, root: Cid) -> bool:
    try:
        for _ in store.walk(root):
            pass
    except BlockNotFound:
        return False
    return True


# --- after the fetch ---------------------------------------------------------------------------------------


def _resolve_path(store: Blockstore, root: Cid, path: tuple[str, ...]) -> Cid:
    cid = root
    for i, name in enumerate(path):
        entries = {e.name: e.cid for e in exporter.list_directory(store.get, cid)}
        if name not in entries:
            raise UserError(f"{root}/{'/'.join(path[:i + 1])} does not exist")
        cid = entries[name]
    if not _complete(store, cid):
        raise BadBlock(f"the source did not deliver the whole DAG of {cid}")
    return cid


def _check_expect(ref: DataRef, store: Blockstore, target: Cid, imported: bool) -> exporter.Stat:
    info = exporter.stat(store.get, target)
    want = ref.expect_cid
    if want is not None and (want.codec, want.multihash) != (target.codec, target.multihash):
        raise HashMismatch(f"{ref.uri}: the data is {target}, expected {want}")
    sha = ref.expect_sha256
    if sha is not None and not imported:  # imported bytes were hashed on the way in
        if info.kind not in ("file", "raw"):
            raise UserError(f"{ref.uri}: a sha256 checksum needs a file, {target} is a {info.kind}")
        digest = hashlib.sha256()
        for piece in exporter.iter_file(store.get, target):
            digest.update(piece)
        if digest.hexdigest() != sha:
            raise HashMismatch(f"{ref.uri}: the data has sha256 {digest.hexdigest()}, expected {sha}")
    return info

