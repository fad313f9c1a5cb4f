"""``RegistryService``: the data registry on a daemon's control API (node service "registry").

Routes:
    POST /data/register  {"ref": CID|URI|DataRef, "dtype", "shape", "partitioning",
                          "checksums": {...}, "meta": {...}}            -> {"handle", "record", "dht"}
    GET  /data/{handle}  the verified record (local, else from the DHT)  -> {"handle", "record", "source"}
    POST /data/sign      {"handle" | "cid", "ttl": s, "range": "a-b"}   -> {"token", "path", "expires"}
    GET  /data/link?token=...   (no API token: the link is the authority)
         the file's bytes; ``Range: bytes=a-b`` gives 206 + Content-Range;
         expired or altered tokens 403; ranges outside the link 403; bad ranges 416

Records (``registry.py``) are signed by this peer's identity and kept in
``<data dir>/registry/<handle>`` (bounded count); when the node runs a
``DhtService`` ("dht") they are also published with ``put_value`` under
``/p2pc/<owner>/data/<digest>``, and a handle this peer does not hold is
resolved with ``get_value`` and verified against the handle before use.
Signed links use an HMAC key in ``<data dir>/link.key`` (0600; memory only
without a data dir); they serve blocks of the storage service's blockstore,
at most ``max_serve`` bytes per answer (a longer span gets a 206 for its
first ``max_serve`` bytes, as a Range client expects), streamed a block at a
time. Wall-clock time
comes from ``wall_clock`` (injected in tests).
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import trio

from ..dht.records import record_key
from ..errors import BlockNotFound, P2PComputeError, TransportError, UserError, WireError
from ..node.api import HttpError, json_response, parse_json_body, public_route
from . import exporter
from .cid import Cid
from .dataref import ByteRange, DataRef
from .registry import (Grant, Metadata, SignedRecord, dht_name, link_span, make_record, open_link, open_record,
                       parse_handle, parse_range_header, sign_link)

log = logging.getLogger(__name__)

LINK_KEY_FILE = "link.key"
RECORDS_DIR = "registry"


class RegistryService:
    name = "registry"

    def __init__(self, *, wall_clock: Callable[[], float] = time.time, link_key: bytes | None = None,
                 default_ttl: int = 600, max_ttl: int = 7 * 86400, max_records: int = 10_000,
                 max_serve: int = 64 << 20, dht_timeout: float = 30.0) -> None:
        self._wall = wall_clock
        self._link_key = link_key
        self.default_ttl, self.max_ttl = default_ttl, max_ttl
        self.max_records, self.max_serve, self.dht_timeout = max_records, max_serve, dht_timeout
        self._records: OrderedDict[str, SignedRecord] = OrderedDict()
        self._dir: Path | None = None
        self.node: Any = None
        self.counts: Counter = Counter()

    # --- Service protocol ---------------------------------------------------------------------

    def attach(self, node: Any) -> None:
        self.node = node
        if node.data_dir is not None:
            self._dir = Path(node.data_dir) / RECORDS_DIR
            self._dir.mkdir(parents=True, exist_ok=True)
            if self._link_key is None:
                self._link_key = _load_or_create_key(Path(node.data_dir) / LINK_KEY_FILE)
        if self._link_key is None:
            self._link_key = secrets.token_bytes(32)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    def status(self) -> dict[str, Any]:
        return {"records_cached": len(self._records), "dht": self._dht() is not None, **self.counts}

    def api_routes(self) -> dict:
        return {("POST", "/data/register"): self._api_register, ("GET", "/data/{handle}"): self._api_show,
                ("POST", "/data/sign"): self._api_sign, ("GET", "/data/link"): self._api_link}

    # --- public operations ------------------------------------------------------------------------

    async def register(self, ref: DataRef, meta: Metadata) -> tuple[SignedRecord, dict]:
        """Sign and keep a record; publish it in the DHT when there is one. (record, DHT outcome)."""
        if ref.kind == "file":
            raise UserError("a local file cannot be shared by reference: import it (`p2pcompute add FILE`) "
                            "and register its CID")
        signed = make_record(self.node.identity, ref, meta, self._wall())
        self._keep(signed)
        self.counts["registered"] += 1
        return signed, await self._publish(signed)

    async def resolve(self, handle: str) -> tuple[SignedRecord, str]:
        """The verified record a handle names, and where it came from ("local" or "dht")."""
        owner, _ = parse_handle(handle)
        held = self._load(handle)
        if held is not None:
            return held, "local"
        dht = self._dht()
        if dht is None:
            raise HttpError(404, f"no record for {handle} here, and this node runs no DHT to ask")
        with trio.move_on_after(self.dht_timeout):
            try:
                value = await dht.get_value(record_key(owner, dht_name(handle)))
            except (TransportError, WireError) as exc:
                raise HttpError(502, f"DHT lookup of {handle} failed: {exc}") from None
            if value is not None:
                try:
                    signed = open_record(value.value, handle)
                except WireError as exc:
                    raise HttpError(502, f"the DHT holds an invalid record for {handle}: {exc}") from None
                self._keep(signed)
                return signed, "dht"
        raise HttpError(404, f"no record for {handle} in the DHT")

    def sign(self, cid: Cid, ttl: int, rng: ByteRange | None, handle: str | None = None) -> tuple[str, int]:
        if not 0 < ttl <= self.max_ttl:
            raise UserError(f"ttl must be 1 to {self.max_ttl} seconds")
        expires = int(self._wall()) + ttl
        return sign_link(self._link_key, Grant(cid, expires, rng, handle)), expires

    # --- records -------------------------------------------------------------------------------------

    def _dht(self) -> Any:
        dht = (self.node.services.get("dht") if self.node is not None else None)
        return dht if dht is not None and getattr(dht, "table", None) is not None else None

    async def _publish(self, signed: SignedRecord) -> dict:
        dht = self._dht()
        if dht is None:
            return {"published": False, "reason": "no DHT service on this node; the record is local"}
        try:
            with trio.fail_after(self.dht_timeout):
                answer = await dht.put_value(dht_name(signed.handle), signed.encoded)
        except (TransportError, WireError, trio.TooSlowError) as exc:
            log.info("publishing %s in the DHT failed: %s", signed.handle, exc)
            return {"published": False, "reason": str(exc) or "timeout"}
        return {"published": True, "stored_on": answer.get("stored_on", 0)}

    def _keep(self, signed: SignedRecord) -> None:
        self._records[signed.handle] = signed
        self._records.move_to_end(signed.handle)
        while len(self._records) > self.max_records:
            old, _ = self._records.popitem(last=False)
            if self._dir is not None:
                (self._dir / old).unlink(missing_ok=True)
        if self._dir is not None:
            tmp = self._dir / f".{signed.handle}.tmp"
            tmp.write_bytes(signed.encoded)
            os.replace(tmp, self._dir / signed.handle)

    def _load(self, handle: str) -> SignedRecord | None:
        if handle in self._records:
            return self._records[handle]
        if self._dir is None:
            return None
        try:
            data = (self._dir / handle).read_bytes()
        except OSError:
            return None
        try:
            signed = open_record(data, handle)
        except WireError as exc:
            log.warning("dropping bad registry record %s: %s", handle, exc)
            (self._dir / handle).unlink(missing_ok=True)
            return None
        self._records[handle] = signed
        return signed

    def _store(self) -> Any:
        storage = self.node.services.get("storage") if self.node is not None else None
        if storage is None or storage.blockstore is None:
            raise HttpError(503, "this node has no storage service to serve data from")
        return storage.blockstore

    # --- control API -----------------------------------------------------------------------------------

    async def _api_register(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        req = parse_json_body(body)
        ref = _ref_arg(req.get("ref"))
        meta = Metadata.from_json({k: req[k] for k in ("dtype", "shape", "partitioning", "checksums", "meta")
                                   if req.get(k) is not None})
        signed, dht = await self.register(ref, meta)
        return json_response({"handle": signed.handle, "record": signed.record.to_json(), "dht": dht})

    async def _api_show(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        signed, source = await self.resolve(query["handle"])
        return json_response({"handle": signed.handle, "record": signed.record.to_json(), "source": source,
                              "verified": True})

    async def _api_sign(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        req = parse_json_body(body)
        handle = req.get("handle")
        if handle is not None:
            signed, _ = await self.resolve(str(handle))
            ref = signed.record.ref
            if ref.kind != "ipfs" or ref.path:
                raise HttpError(400, f"{handle} names {ref.uri}: links serve data by CID; fetch it first "
                                "(`p2pcompute fetch URI`) and register the CID")
            cid = ref.cid
        else:
            cid = _cid_arg(req.get("cid"))
        ttl = req.get("ttl", self.default_ttl)
        if type(ttl) is not int:
            raise HttpError(400, "ttl must be an integer number of seconds")
        rng = req.get("range")
        if rng is not None and not isinstance(rng, str):
            raise HttpError(400, "range must be text FIRST-LAST")
        store = self._store()
        if not store.has(cid):
            raise HttpError(404, f"{cid} is not in this peer's block store: fetch it first")
        token, expires = self.sign(cid, ttl, None if rng is None else ByteRange.parse(rng), handle)
        self.counts["links_signed"] += 1
        path = "/data/link?token=" + quote(token)
        public = getattr(self.node, "public_url", None)
        return json_response({"token": token, "path": path, "url": (public + path) if public else None,
                              "expires": expires, "cid": str(cid)})

    @public_route
    async def _api_link(self, body: bytes, query: dict, headers: dict) -> tuple:
        try:
            grant = open_link(self._link_key, query.get("token", ""), self._wall())
        except WireError as exc:
            self.counts["links_refused"] += 1
            raise HttpError(403, str(exc)) from None
        store = self._store()
        try:
            size = await trio.to_thread.run_sync(lambda: exporter.stat(store.get, grant.cid).size)
        except BlockNotFound:
            raise HttpError(404, f"{grant.cid} is no longer in this peer's block store") from None
        try:
            asked = parse_range_header(headers.get("range"), size)
        except UserError as exc:
            return 416, "application/json", _error(exc), [("content-range", f"bytes */{size}")]
        try:
            offset, length = link_span(grant, asked, size)
        except UserError as exc:
            self.counts["links_refused"] += 1
            raise HttpError(403, str(exc)) from None
        length = min(length, self.max_serve)
        self.counts["links_served"] += 1
        extra = [("accept-ranges", "bytes"), ("cache-control", "no-store"), ("content-length", str(length))]
        body = _stream(store, grant.cid, offset, length)  # a block at a time: memory does not grow with length
        if (offset, length) == (0, size):
            return 200, "application/octet-stream", body, extra
        last = offset + length - 1
        return 206, "application/octet-stream", body, extra + [("content-range", f"bytes {offset}-{last}/{size}")]


def _stream(store: Any, cid: Cid, offset: int, length: int) -> Callable[[Any], Awaitable[None]]:
    async def body(write: Any) -> None:
        pieces = exporter.iter_file(store.get, cid, offset, length)
        while (piece := await trio.to_thread.run_sync(next, pieces, None)) is not None:
            await write(piece)
    return body


def _error(exc: Exception) -> bytes:
    import json

    return json.dumps({"error": str(exc)}).encode()


def _ref_arg(value: Any) -> DataRef:
    if isinstance(value, str):
        text = value.strip()
        try:
            return DataRef(f"ipfs://{Cid.parse(text)}")
        except P2PComputeError:
            pass
        if "://" not in text:
            raise HttpError(400, f"ref {text[:100]!r}: give a CID, ipfs://CID[/path] or an http(s) URL")
        return DataRef.parse(text)
    if isinstance(value, dict):
        return DataRef.from_json(value)
    raise HttpError(400, "give {\"ref\": CID, URI or data reference object}")


def _cid_arg(value: Any) -> Cid:
    try:
        return Cid.parse(str(value or ""))
    except P2PComputeError as exc:
        raise HttpError(400, f"give {{\"handle\": ...}} or {{\"cid\": ...}}: {exc}") from None


def _load_or_create_key(path: Path) -> bytes:
    from ..node.identity import check_private_file

    try:
        check_private_file(path)  # refused when others can read it, as identity.key is
        key = path.read_bytes()
        if len(key) == 32:
            return key
    except FileNotFoundError:
        pass
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key
