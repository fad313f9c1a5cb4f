"""The storage service of a daemon: its blockstore, and add/cat over the control API.

The blockstore lives in ``<data dir>/blocks``; other services (compute,
bitswap) reach it as ``node.services["storage"].blockstore``. Writes are
atomic files, so a local client of the same user may also import into the
same blockstore directly (``p2pcompute add`` and ``tensor.compute(client)``
do), the way a second process reads a kubo repo's blocks.

Routes:
    POST /v1/add?cid-version=0|1&raw-leaves=0|1&pin=1   body: the bytes -> {"cid", "size"}
    GET  /v1/cat?cid=CID[&offset=N&length=N]            the file's bytes
"""

from __future__ import annotations

from typing import Any

import trio

from ..errors import P2PComputeError, UserError
from ..node.api import HttpError, json_response
from .blockstore import Blockstore
from .cid import Cid
from .exporter import read_file
from .importer import import_bytes

MAX_ADD_BYTES = 64 << 20  # larger files: `p2pcompute add` imports straight into the blockstore


class StorageService:
    name = "storage"

    def __init__(self, blockstore: Blockstore | None = None, *, max_bytes: int | None = None) -> None:
        self.blockstore = blockstore
        self._max_bytes = max_bytes

    def attach(self, node: Any) -> None:
        if self.blockstore is None:
            if node.data_dir is None:
                raise UserError("the storage service needs a data dir or a blockstore")
            self.blockstore = Blockstore.for_data_dir(node.data_dir, max_bytes=self._max_bytes)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    def status(self) -> dict[str, Any]:
        return {"blocks_bytes": self.blockstore.total_bytes, "pins": len(self.blockstore.pins())}

    def api_routes(self) -> dict:
        return {("POST", "/v1/add"): self._add, ("GET", "/v1/cat"): self._cat}

    async def _add(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        if len(body) > MAX_ADD_BYTES:
            raise HttpError(413, f"over {MAX_ADD_BYTES} bytes: use `p2pcompute add FILE` for large files")
        options = {"cid_version": int(query.get("cid-version", "0")),
                   "raw_leaves": query.get("raw-leaves", "0") in ("1", "true")}
        result = await trio.to_thread.run_sync(lambda: import_bytes(body, self.blockstore.put, **options))
        if query.get("pin", "1") in ("1", "true"):
            self.blockstore.pin(result.cid)
        return json_response({"cid": str(result.cid), "size": result.size})

    async def _cat(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        try:
            cid = Cid.parse(query.get("cid", ""))
        except P2PComputeError as exc:
            raise HttpError(400, f"cid: {exc}") from None
        offset = int(query.get("offset", "0"))
        length = int(query["length"]) if "length" in query else None
        data = await trio.to_thread.run_sync(lambda: read_file(self.blockstore.get, cid, offset, length))
        return 200, "application/octet-stream", data
