"""The compute service of a daemon: operator graphs run on its sandboxed executor.

``POST /v1/compute`` takes a CBOR body ``{"graph": <canonical graph CBOR>,
"inputs": {name: {"data": <tensor bytes>} | {"cid": "<CID>"}}, "limits": {...}}``
and answers CBOR ``{"status", "message", "outputs": {name: {"data": ...} |
{"cid": ...}}, "wall_seconds", "cpu_seconds"}``. Small tensors travel inline
(at most ``graph.INLINE_LIMIT``); large ones only as CIDs of UnixFS files
holding the tensor bytes, in the daemon's blockstore (the storage service):
inputs are read from it, outputs are imported into it and pinned. This is
what ``tensor.compute(client)`` calls; the network scheduler will submit the
same task shape to other peers.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import cbor2
import trio

from ..errors import P2PComputeError, UserError
from ..node.api import HttpError
from .executor import open_executor
from .graph import INLINE_LIMIT
from .tasks import InputFile, Limits, Task

MAX_BODY_INPUTS = 64


class ComputeService:
    name = "compute"

    def __init__(self, cpus: int | None = None) -> None:
        self._cpus = cpus
        self.node: Any = None
        self.executor: Any = None
        self.counts = {"ok": 0, "failed": 0}

    def attach(self, node: Any) -> None:
        self.node = node
        if "storage" not in node.services:
            raise UserError("the compute service needs the storage service attached first")

    @property
    def storage(self) -> Any:
        return self.node.services["storage"]

    @property
    def blockstore(self) -> Any:
        return self.storage.blockstore

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        cpus = self._cpus or max(1, int(self.node.resources.cpus))
        async with open_executor(cpus=cpus) as executor:
            self.executor = executor
            task_status.started()
            await trio.sleep_forever()

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"tasks": dict(self.counts)}
        if self.executor is not None:
            out["workers"] = self.executor.status()
        return out

    def api_routes(self) -> dict:
        return {("POST", "/v1/compute"): self._compute}

    async def _compute(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        if self.executor is None:
            raise HttpError(503, "the executor is starting")
        request = _parse(body)
        scratch = Path(tempfile.mkdtemp(prefix="p2pcompute-compute-"))
        try:
            inputs = {name: await self._input(name, ref, scratch) for name, ref in request["inputs"].items()}
            task = Task("graph", inputs=inputs, graph=request["graph"],
                        limits=Limits.from_wire(request.get("limits", {})))
            out_dir = scratch / "out"
            result = await self.executor.run(task, out_dir)
            self.counts["ok" if result.ok else "failed"] += 1
            outputs = {}
            if result.ok:
                for name, info in result.outputs.items():
                    outputs[name] = await self._output(info, out_dir)
            reply = {"status": result.status, "message": result.message, "resource": result.resource,
                     "outputs": outputs, "wall_seconds": result.wall_seconds, "cpu_seconds": result.cpu_seconds}
            return 200, "application/cbor", cbor2.dumps(reply)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    async def _input(self, name: str, ref: Any, scratch: Path) -> InputFile:
        if not isinstance(ref, dict) or len(ref) != 1:
            raise HttpError(400, f"input {name!r}: give {{'data': bytes}} or {{'cid': str}}")
        if "data" in ref:
            if not isinstance(ref["data"], bytes) or len(ref["data"]) > INLINE_LIMIT + 1024:
                raise HttpError(400, f"input {name!r}: inline data must be tensor bytes of at most {INLINE_LIMIT}")
            return InputFile(data=ref["data"])
        from ..storage.cid import Cid

        cid_text = str(ref.get("cid", ""))
        path = scratch / f"{_safe(name)}.tensor"
        try:
            cid = Cid.parse(cid_text)
            await self.storage.pin(cid)  # inputs of live jobs are pinned (and announced)
            await trio.to_thread.run_sync(self._export, cid, path)
        except P2PComputeError as exc:
            raise UserError(f"input {cid_text}: {exc}") from None
        return InputFile(path=str(path))

    def _export(self, cid: Any, path: Path) -> None:
        from ..storage.exporter import iter_file

        with open(path, "wb") as fh:
            for chunk in iter_file(self.blockstore.get, cid):
                fh.write(chunk)

    async def _output(self, info: dict, out_dir: Path) -> dict:
        if "data" in info:
            return {"data": info["data"]}

        from ..storage.importer import import_path

        result = await trio.to_thread.run_sync(import_path, out_dir / info["file"], self.blockstore.put)
        await self.storage.pin(result.cid)  # results of jobs are pinned (and announced)
        return {"cid": str(result.cid), "bytes": info["bytes"]}


def _parse(body: bytes) -> dict:
    try:
        request = cbor2.loads(body)
    except Exception:
        raise HttpError(400, "body is not CBOR") from None
    if not isinstance(request, dict) or not isinstance(request.get("graph"), bytes):
        raise HttpError(400, "body must be a CBOR map with 'graph' (bytes) and 'inputs'")
    inputs = request.get("inputs", {})
    if not isinstance(inputs, dict) or len(inputs) > MAX_BODY_INPUTS:
        raise HttpError(400, f"'inputs' must be a map of at most {MAX_BODY_INPUTS} entries")
    request["inputs"] = inputs
    return request


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in str(name))[:64] or "input"
