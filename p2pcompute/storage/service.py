"""The storage service of a daemon: its blockstore, and add/cat over the control API.

The blockstore lives in ``<data dir>/blocks``; other services (compute,
bitswap) reach it as ``node.services["storage"].blockstore``. Writes are
atomic files, so a local client of the same user may also import into the
same blockstore directly (``p2pcompute add`` and ``tensor.compute(client)``
do), the way a second process reads a kubo repo's blocks.

Routes:
    POST /v1/add?cid-version=0|1&raw-leaves=0|1&pin=1   body: the bytes -> {"cid", "size"} (raw leaves: for v1)
    GET  /v1/cat?cid=CID[&offset=N&length=N]            the file's bytes
    POST /v1/fetch {"cid": CID, "pin": true}            bring a DAG here from the network
    POST /v1/pin {"cid": CID}                           pin a DAG already here and announce it

Fetching asks the DHT for providers of the root (and uses connected peers
too), then bitswap fetches the DAG, every block verified. The daemon is the
one writer of the pin set; every root it pins it announces in the DHT, and
every ``announce_every`` seconds it re-reads the pin set (a local ``add``
may have pinned more) and announces what is new.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import trio

from ..errors import BlockNotFound, P2PComputeError, RequestFailed, UserError
from ..node.api import HttpError, json_response, parse_json_body
from ..node.identity import PeerId
from .blockstore import Blockstore
from .cid import Cid
from .exporter import read_file
from .importer import import_bytes

log = logging.getLogger(__name__)
MAX_ADD_BYTES = 64 << 20  # larger files: `p2pcompute add` imports straight into the blockstore


class StorageService:
    name = "storage"

    def __init__(self, blockstore: Blockstore | None = None, *, max_bytes: int | None = None,
                 announce_every: float = 30.0) -> None:
        self.blockstore = blockstore
        self._max_bytes = max_bytes
        self._announce_every = announce_every
        self._announced: set[Cid] = set()
        self.node: Any = None
        self.unannounced_timeout = 10.0

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

    async def _announce(self, root: Cid) -> None:
        dht = self.node.services.get("dht") if self.node else None
        self._announced.add(root)
        if dht is None:
            return
        try:
            await dht.provide(root.multihash)
        except P2PComputeError as exc:
            log.info("could not announce %s: %s", root, exc)

    async def fetch(self, root: Cid, *, pin: bool = True) -> dict[str, Any]:
        """Bring the DAG of ``root`` here: providers from the DHT and connected peers, then bitswap."""
        started = trio.current_time()
        providers: list[str] = []
        dht = self.node.services.get("dht")
        if dht is not None:
            with trio.move_on_after(30):
                for row in await dht.find_providers(root.multihash, want=8):
                    peer = PeerId.from_string(row["peer_id"])
                    if peer != self.node.peer_id:
                        self.node.transport.add_addresses(peer, row["addresses"])
                        providers.append(str(peer))
        bitswap = self.node.services.get("bitswap")
        if bitswap is None:
            raise UserError("this daemon runs no bitswap service: it cannot fetch blocks")
        connected = [str(p) for p in self.node.transport.connected_peers()]
        # with no provider announced, only connected peers might have it: give up sooner
        config = None if providers else replace(bitswap.session_config, idle_timeout=self.unannounced_timeout)
        try:
            last = await bitswap.fetch(root, list(dict.fromkeys(providers + connected)) or None, config=config)
        except RequestFailed as exc:
            where = f"{len(providers)} provider(s) from the DHT" if providers else "no provider in the DHT"
            raise RequestFailed(f"{exc} ({where}, {len(connected)} connected peer(s) asked)") from None
        if pin:
            await self.pin(root)
        return {"cid": str(root), "providers": providers, "blocks": last.blocks, "bytes": last.bytes,
                "seconds": round(trio.current_time() - started, 3), "pinned": pin}

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

    async def _fetch(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        request = parse_json_body(body)
        root = _cid_arg(request)
        return json_response(await self.fetch(root, pin=bool(request.get("pin", True))))

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
