"""The storage service of a daemon: its blockstore, and add/cat over the control API.

The blockstore lives in ``<data dir>/blocks``; other services (compute,
bitswap) reach it as ``node.services["storage"].blockstore``. Writes are
atomic files, so a local client of the same user may also import into the
same blockstore directly (``p2pcompute add`` and ``tensor.compute(client)``
do), the way a second process reads a kubo repo's blocks.

Routes:
    POST /v1/add?cid-version=0|1&raw-leaves=0|1&pin=1   body: the bytes -> {"cid", "size"} (raw leaves: for v1)
    GET  /v1/cat?cid=CID[&offset=N&length=N]            the file's bytes
    POST /v1/fetch {"cid": CID, "pin": true, "timeout": 60, "progress": false}
                                                        bring a DAG here from the network; with
                                                        "progress": JSON lines of progress, then the result
                                                        (the fetch stops if the client goes away)
    POST /v1/pin {"cid": CID}                           pin a DAG already here and announce it

Fetching asks the connected peers over bitswap at once while the DHT finds
providers of the root, which are dialled and asked too; every block is
verified; no block for ``timeout`` seconds fails it ("not found within").
A fetch does not pin unless asked (``get``/``cat`` do not). The daemon is the
one writer of the pin set; every root it pins it announces in the DHT, and
every ``announce_every`` seconds it re-reads the pin set (a local ``add``
may have pinned more) and announces what is new.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import replace
from typing import Any

import trio

from ..errors import BlockNotFound, P2PComputeError, RequestFailed, RequestTimeout, UserError
from ..node.api import HttpError, json_response, parse_json_body
from ..node.identity import PeerId
from .blockstore import Blockstore
from .cid import Cid
from .exporter import read_file
from .importer import import_bytes

log = logging.getLogger(__name__)
MAX_ADD_BYTES = 64 << 20  # larger files: `p2pcompute add` imports straight into the blockstore
FETCH_TIMEOUT = 60.0  # no block for this long: not found (a DHT lookup alone may take 30 s)
MAX_FETCH_TIMEOUT = 86400.0


class StorageService:
    name = "storage"

    def __init__(self, blockstore: Blockstore | None = None, *, max_bytes: int | None = None,
                 announce_every: float = 30.0) -> None:
        self.blockstore = blockstore
        self._max_bytes = max_bytes
        self._announce_every = announce_every
        self._announced: set[Cid] = set()
        self.node: Any = None

    def attach(self, node: Any) -> None:
        self.node = node
        if self.blockstore is None:
            if node.data_dir is None:
                raise UserError("the storage service needs a data dir or a blockstore")
            self.blockstore = Blockstore.for_data_dir(node.data_dir, max_bytes=self._max_bytes)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(self._announce_every)
            self.blockstore.reload_pins()
            for root in sorted(self.blockstore.pins - self._announced, key=str)[:256]:
                await self._announce(root)

    def status(self) -> dict[str, Any]:
        return {"blocks_bytes": self.blockstore.total_bytes, "pins": len(self.blockstore.pins),
                "announced": len(self._announced)}

    def api_routes(self) -> dict:
        return {("POST", "/v1/add"): self._add, ("GET", "/v1/cat"): self._cat,
                ("POST", "/v1/fetch"): self._fetch, ("POST", "/v1/pin"): self._pin}

    # --- pins, announcements, fetching -----------------------------------------------

    async def pin(self, root: Cid) -> None:
        """Pin ``root`` (its whole DAG is here) and announce it in the DHT."""
        await trio.to_thread.run_sync(self.blockstore.pin, root)
        await self._announce(root)

    async def announce(self, root: Cid) -> None:
        """Announce ``root`` (pinned here) in the DHT now; a failure is logged (the periodic pass retries)."""
        await self._announce(root)

    async def _announce(self, root: Cid) -> None:
        dht = self.node.services.get("dht") if self.node else None
        self._announced.add(root)
        if dht is None:
            return
        try:
            await dht.provide(root.multihash)
        except P2PComputeError as exc:
            log.info("could not announce %s: %s", root, exc)

    async def fetch(self, root: Cid, *, pin: bool = True, timeout: float = FETCH_TIMEOUT,
                    progress: Callable[[dict], None] | None = None) -> dict[str, Any]:
        """Bring the DAG of ``root`` here, every block verified.

        Bitswap asks the connected peers at once while the DHT looks for providers, which
        are dialled (every peer that connects meanwhile is asked too). ``timeout``: give up
        when no block arrives for this long, from the start and then between blocks (a long
        transfer that keeps moving never times out). ``progress(event)`` hears of providers
        found and blocks fetched. Cancelling the caller stops the fetch and withdraws its wants.
        """
        bitswap = self.node.services.get("bitswap")
        if bitswap is None:
            raise UserError("this daemon runs no bitswap service: it cannot fetch blocks")
        if not 0 < timeout <= MAX_FETCH_TIMEOUT:
            raise UserError(f"timeout must be over 0 and at most {MAX_FETCH_TIMEOUT:g} s")
        started = trio.current_time()
        report = progress or (lambda event: None)
        search: dict[str, Any] = {"providers": [], "done": False}
        config = replace(bitswap.session_config, idle_timeout=timeout)
        last, error = None, None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._find_providers, root, search, min(timeout, 30.0), report)
            try:
                async with aclosing(bitswap.fetch_dag(root, None, config=config, started=started)) as steps:
                    async for last in steps:
                        report({"phase": "fetching", "blocks": last.blocks, "bytes": last.bytes})
            except RequestFailed as exc:
                error = exc
            nursery.cancel_scope.cancel()
        if error is not None:
            raise self._explain(root, error, timeout, last, search) from None
        if pin:
            await self.pin(root)
        return {"cid": str(root), "providers": search["providers"], "blocks": last.blocks, "bytes": last.bytes,
                "seconds": round(trio.current_time() - started, 3), "pinned": pin}

    async def _find_providers(self, root: Cid, search: dict, limit: float, report: Callable) -> None:
        """Ask the DHT for providers of ``root`` and dial them (bitswap asks each peer that connects)."""
        dht = self.node.services.get("dht")
        rows: list[dict] = []
        if dht is not None:
            report({"phase": "searching", "providers": 0})
            with trio.move_on_after(limit):
                try:
                    rows = await dht.find_providers(root.multihash, want=8)
                except P2PComputeError as exc:
                    log.info("looking up providers of %s failed: %s", root, exc)
        transport = self.node.transport
        connected = set(transport.connected_peers())
        dials = []
        for row in rows:
            try:
                peer = PeerId.from_string(row["peer_id"])
            except (KeyError, TypeError, ValueError):
                continue
            if peer != self.node.peer_id:
                search["providers"].append(str(peer))
                if peer not in connected and row.get("addresses"):
                    dials.append(f"{row['addresses'][0]}/p2p/{peer}")
                    transport.add_addresses(peer, row["addresses"])
        search["done"] = True
        report({"phase": "searching", "providers": len(search["providers"]), "done": True})
        async with trio.open_nursery() as nursery:
            for address in dials:
                nursery.start_soon(self._dial, address)

    async def _dial(self, address: str) -> None:
        try:
            await self.node.transport.connect(address)
        except P2PComputeError as exc:
            log.debug("cannot reach provider %s: %s", address, exc)

    def _explain(self, root: Cid, exc: RequestFailed, timeout: float, last: Any, search: dict) -> RequestFailed:
        """The one-line error a user reads for a failed fetch."""
        found = len(search["providers"])
        where = (f"{found} provider(s) in the DHT" if found else
                 "no provider in the DHT" if search["done"] else "the DHT lookup had not finished")
        asked = f"{where}, {len(self.node.transport.connected_peers())} connected peer(s) asked"
        if isinstance(exc, RequestTimeout):
            if last is None or last.blocks == 0:
                return RequestTimeout(f"{root} not found within {timeout:g} s ({asked})")
            return RequestTimeout(f"fetching {root} stalled: nothing arrived for {timeout:g} s after "
                                  f"{last.blocks} block(s) ({asked})")
        return RequestFailed(f"{exc} ({asked})")

    async def _add(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        if len(body) > MAX_ADD_BYTES:
            raise HttpError(413, f"over {MAX_ADD_BYTES} bytes: use `p2pcompute add FILE` for large files")
        options = {"cid_version": _int_arg(query, "cid-version", 0, 0, 1),
                   "raw_leaves": _flag_arg(query, "raw-leaves", None)}  # None: as kubo (raw for v1)
        pin = _flag_arg(query, "pin", True)

        def add() -> Any:
            with self.blockstore.session():  # holds off GC until the new root is pinned
                result = import_bytes(body, self.blockstore.put, **options)
                if pin:
                    self.blockstore.pin(result.cid)
                return result

        result = await trio.to_thread.run_sync(add)
        if pin:
            await self._announce(result.cid)
        return json_response({"cid": str(result.cid), "size": result.size})

    async def _fetch(self, body: bytes, query: dict) -> tuple[int, str, Any]:
        request = parse_json_body(body)
        root = _cid_arg(request)
        pin, timeout = request.get("pin", True), request.get("timeout", FETCH_TIMEOUT)
        if type(pin) is not bool:
            raise HttpError(400, "\"pin\" must be true or false")
        if type(timeout) not in (int, float) or not 0 < timeout <= MAX_FETCH_TIMEOUT:
            raise HttpError(400, f"\"timeout\" must be a number of seconds, over 0 and at most {MAX_FETCH_TIMEOUT:g}")
        if not request.get("progress"):
            return json_response(await self.fetch(root, pin=pin, timeout=timeout))

        async def stream(write: Callable[[bytes], Awaitable[None]]) -> None:
            """One JSON object a line: progress events, then {"phase": "done", ...} or {"phase": "error"}."""
            send, receive = trio.open_memory_channel(64)

            def report(event: dict) -> None:
                try:
                    send.send_nowait(event)
                except trio.WouldBlock:
                    pass  # a slow reader misses some progress, never the transfer

            async def run() -> None:
                async with send:
                    try:
                        result = await self.fetch(root, pin=pin, timeout=timeout, progress=report)
                        await send.send({"phase": "done"} | result)
                    except P2PComputeError as exc:
                        await send.send({"phase": "error", "error": str(exc)})

            async with trio.open_nursery() as nursery:
                nursery.start_soon(run)
                async for event in receive:
                    await write(json.dumps(event).encode() + b"\n")

        return 200, "application/x-ndjson", stream

    async def _pin(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        root = _cid_arg(parse_json_body(body))
        try:
            await self.pin(root)
        except P2PComputeError as exc:
            raise HttpError(409, f"cannot pin {root}: {exc}") from None
        return json_response({"cid": str(root), "pinned": True,
                              "announced": "dht" in self.node.services})

    async def _cat(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        try:
            cid = Cid.parse(query.get("cid", ""))
        except P2PComputeError as exc:
            raise HttpError(400, f"cid: {exc}") from None
        offset = _int_arg(query, "offset", 0, 0, 1 << 62)
        length = _int_arg(query, "length", None, 0, 1 << 62)
        try:
            data = await trio.to_thread.run_sync(lambda: read_file(self.blockstore.get, cid, offset, length))
        except BlockNotFound as exc:
            raise HttpError(404, f"{cid} is not (wholly) here: {exc}; fetch it first (POST /v1/fetch)") from None
        return 200, "application/octet-stream", data


def _int_arg(query: dict, name: str, default: int | None, lo: int, hi: int) -> int | None:
    """A whole-number query parameter within [lo, hi], or HttpError 400."""
    text = query.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit() and len(text) <= 19 and lo <= int(text) <= hi):
        raise HttpError(400, f"{name}={text[:40]!r}: give a whole number from {lo} to {hi}")
    return int(text)


def _flag_arg(query: dict, name: str, default: bool | None) -> bool | None:
    text = query.get(name)
    if text is None:
        return default
    if text.lower() not in ("0", "1", "true", "false"):
        raise HttpError(400, f"{name}={text[:40]!r}: give 1, 0, true or false")
    return text.lower() in ("1", "true")


def _cid_arg(request: dict) -> Cid:
    try:
        return Cid.parse(str(request.get("cid", "")))
    except P2PComputeError as exc:
        raise HttpError(400, f"give {{\"cid\": \"Qm... or bafy...\"}}: {exc}") from None
