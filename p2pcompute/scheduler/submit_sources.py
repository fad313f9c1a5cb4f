"""Submit's inputs that are not local files: URLs and registry handles become CIDs on the submitting peer.

Theory of operation. ``resolve_remote(spec, node)`` runs before planning, on
the peer that takes the submission, for every distinct source of the job's
inputs that names data elsewhere:

* an ``http(s)://`` URL (or a trustless gateway's ``/ipfs/CID?format=car``,
  or ``kubo-rpc://``) is fetched here with ``storage.sources.fetch`` (httpx,
  the project's HTTP client): the bytes stream through the UnixFS importer,
  bounded in size (``max_bytes``) and in time (``timeout_s`` without data,
  ``deadline_s`` in all), then are pinned and announced, and the task gets
  the CID. An HTTP error names the URL and the status (``UserError``);
* a registry handle (``dh…``, ``p2pcompute data register``) is resolved by
  the registry service (its own records, else the DHT, verified against the
  handle) to its ``DataRef``: an ``ipfs://CID`` as it is (the executing peers
  fetch it by bitswap, as any ``ipfs://`` input), anything else (a URL, a
  path under a CID, a byte range) fetched here as above. The record's dtype
  and shape become the input's shape hint when the job declares none;
* ``ipfs://CID/path`` is resolved through the directories of CID (fetched).

The result maps each source's text to a ``Remote``: its CID, size when known,
where it came from (``url``, ``handle`` or ``cid``) and the record's hint.
Distinct sources are fetched at most ``parallel`` at a time; the same URL or
handle named twice is fetched once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import trio

from ..errors import P2PComputeError, UserError

MAX_BYTES = 4 << 30            # one URL's bytes
TIMEOUT_S = 30.0               # without a byte from the server
DEADLINE_S = 600.0             # one source in all
PARALLEL = 4


@dataclass(frozen=True)
class Remote:
    cid: str
    size: int | None = None
    origin: str = "url"                          # "url", "handle" or "cid"
    shape: tuple[int, ...] | None = None         # a registry record's metadata
    dtype: str | None = None


def remote_sources(spec: Any) -> list[Any]:
    """The distinct sources of ``spec``'s inputs that ``resolve_remote`` resolves (in the job's order)."""
    seen: dict[str, Any] = {}
    for inp in spec.inputs.values():
        for src in inp.sources:
            if src.kind == "handle" or (src.kind == "uri" and _needs_fetch(src.text)):
                seen.setdefault(src.text, src)
    return list(seen.values())


def _needs_fetch(uri: str) -> bool:
    """An ``ipfs://CID`` alone is used as it is; any other URI is brought here."""
    return not (uri.startswith("ipfs://") and "/" not in uri.removeprefix("ipfs://").rstrip("/"))


async def resolve_remote(spec: Any, node: Any, *, max_bytes: int = MAX_BYTES, timeout_s: float = TIMEOUT_S,
                         deadline_s: float = DEADLINE_S, parallel: int = PARALLEL) -> dict[str, Remote]:
    sources = remote_sources(spec)
    out: dict[str, Remote] = {}
    if not sources:
        return out
    from ..storage.sources import Limits

    limits = Limits(max_bytes=max_bytes, timeout=timeout_s)
    limiter = trio.CapacityLimiter(parallel)
    errors: list[str] = []

    async def one(src: Any) -> None:
        async with limiter:
            try:
                with trio.fail_after(deadline_s):
                    out[src.text] = await (_handle(src.text, node, limits) if src.kind == "handle" else _fetch_uri(
                        src.text, node, limits, "cid" if src.text.startswith("ipfs://") else "url"))
            except trio.TooSlowError:
                errors.append(f"{src.text[:200]}: not fetched within {deadline_s:g} s")
            except P2PComputeError as exc:
                errors.append(str(exc) if src.text[:60] in str(exc) else f"{src.text[:200]}: {exc}")

    async with trio.open_nursery() as nursery:
        for src in sources:
            nursery.start_soon(one, src)
    if errors:
        raise UserError("input " + "; input ".join(sorted(errors)))
    return out


async def _fetch_uri(uri: str, node: Any, limits: Any, origin: str, ref: Any = None) -> Remote:
    """Bring what a URI (or a registry record's ``ref``) names into the blockstore, pinned and announced."""
    from ..storage import exporter
    from ..storage.dataref import DataRef
    from ..storage.sources import fetch

    storage = node.services["storage"]
    ref = ref or DataRef.parse(uri)

    async def network(cid: Any) -> None:
        await storage.fetch(cid, pin=False, timeout=limits.timeout)

    result = await fetch(ref, storage.blockstore, data_dir=node.data_dir, limits=limits, network=network)
    cid = result.cid
    if ref.range is not None and ref.kind not in ("http", "file"):
        cid = await trio.to_thread.run_sync(_cut, storage.blockstore, cid, ref, limits.max_bytes)
    await storage.pin(cid)
    size = (await trio.to_thread.run_sync(exporter.stat, storage.blockstore.get, cid)).size
    return Remote(str(cid), size, origin)


def _cut(store: Any, cid: Any, ref: Any, max_bytes: int) -> Any:
    """A byte range of a file under a CID as a file of its own (what a task reads)."""
    from ..storage.importer import import_bytes
    from ..storage.sources import read_ref

    data = read_ref(store, cid, ref)
    if len(data) > max_bytes:
        raise UserError(f"{ref.uri} range {ref.range}: over the size limit of {max_bytes} bytes")
    with store.session():
        result = import_bytes(data, store.put)
        store.pin(result.cid)
    return result.cid


async def _handle(handle: str, node: Any, limits: Any) -> Remote:
    from ..node.api import HttpError

    registry = node.services.get("registry")
    if registry is None:
        raise UserError(f"{handle}: this daemon runs no registry service to resolve a handle")
    try:
        signed, _ = await registry.resolve(handle)
    except HttpError as exc:
        raise UserError(f"handle {handle}: {exc}") from None
    ref, meta = signed.record.ref, signed.record.meta
    if ref.kind == "ipfs" and not ref.path and ref.range is None and ref.expect is None:
        got = Remote(str(ref.cid), None, "handle")
    else:
        try:
            got = await _fetch_uri(ref.uri, node, limits, "handle", ref)
        except P2PComputeError as exc:
            raise UserError(f"handle {handle} ({ref.uri[:200]}): {exc}") from None
    shape = tuple(meta.shape) if meta.shape is not None and meta.dtype is not None else None
    return Remote(got.cid, got.size, "handle", shape, meta.dtype if shape is not None else None)


def origins(spec: Any, resolved: dict[str, tuple[Any, ...]], remote: dict[str, Remote]) -> tuple:
    """(input, "file" | "url" | "handle" | "cid", source, CID) of the first ``MAX_SOURCES`` input items, for
    ``describe`` (``JobPlan.sources``)."""
    from .model import MAX_SOURCE_TEXT, MAX_SOURCES

    out = []
    for name, inp in spec.inputs.items():
        for src, r in zip(inp.sources, resolved.get(name, ())):
            kind = "file" if src.kind == "file" else remote[src.text].origin if src.text in remote else "cid"
            out.append((name, kind, src.text[:MAX_SOURCE_TEXT], r.cid))
            if len(out) == MAX_SOURCES:
                return tuple(out)
    return tuple(out)
