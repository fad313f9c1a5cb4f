"""An executing peer runs one granted task: inputs by CID, the node's executor, outputs as pinned CIDs.

Theory of operation. ``run_granted`` gets the grant's full payload
(``plan.full_payload``) and its inputs as (name, CID) pairs. It decodes the
payload (``decode_payload``: anything malformed is the job's fault,
``failed``), brings every input CID here (already in the blockstore, or
fetched through the storage service: bitswap asks the connected peers, the
coordinator among them, while the DHT looks for providers; none within
``fetch_timeout`` is ``input_not_found``) and exports each to a scratch file
named by what its bytes are (``.tensor``, ``.npy``, ``.tif``: the loaders
choose by suffix). A mapped task runs once per item (``bind_item``), on the
compute service's sandboxed executor. Each output file is imported into the
blockstore and pinned (and so announced): the coordinator pulls it by
bitswap. An output of one element is also carried inline, as a float, for
the conditions of later stages. The outcome is an ``Outcome``: outputs and
inline values, or a failure kind of ``events.FAILURE_KINDS`` and a message;
either way with the run's stderr (task_logs.py).
"""

from __future__ import annotations

import math
import re
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import trio

from ..errors import BlockNotFound, P2PComputeError
from ..ops import tensor_format
from . import events as ev
from .model import PlanError
from .plan import bind_item, decode_payload, item_output
from .task_logs import joined

STATUS_KIND = {"resource_exceeded": ev.RESOURCE_EXCEEDED, "failed": ev.FAILED, "rejected": ev.REJECTED}


@dataclass
class Outcome:
    kind: str = ""                                 # "" when it succeeded, else a failure kind
    message: str = ""
    outputs: dict[str, str] = field(default_factory=dict)
    inline: dict[str, Any] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    stderr: str = ""                               # the run's stderr (task_logs.joined), on success or failure


def suffix_of(head: bytes) -> str:
    """The loaders' suffix for a file starting with ``head``."""
    if head.startswith(tensor_format.MAGIC):
        return ".tensor"
    if head.startswith(b"\x93NUMPY"):
        return ".npy"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return ".tif"
    return ".bin"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:64] or "input"


async def run_granted(storage: Any, executor: Any, payload: bytes, inputs: tuple[tuple[str, str], ...],
                      fetch_timeout: float = 60.0) -> Outcome:
    try:
        task, items, per_item = decode_payload(payload)
    except PlanError as exc:
        return Outcome(ev.FAILED, f"bad payload: {exc}")
    scratch = Path(tempfile.mkdtemp(prefix="p2pcompute-task-"))
    try:
        if task.kind == "wasm":
            try:
                task = replace(task, program=await _program(storage, task.program, scratch, fetch_timeout))
            except P2PComputeError as exc:
                return Outcome(ev.INPUT_NOT_FOUND if task.program.startswith("ipfs://") else ev.FAILED,
                               f"program {task.program}: {exc}")
        paths: dict[str, str] = {}
        for i, (name, cid) in enumerate(inputs):
            try:
                paths[name] = await _bring(storage, cid, scratch / f"{i}-{_safe(name)}", fetch_timeout)
            except P2PComputeError as exc:
                return Outcome(ev.INPUT_NOT_FOUND, missing_input(name, cid, exc))
        out, logs = Outcome(), []
        for n, label in enumerate(items or [None]):
            try:
                bound = bind_item(task, label, per_item, paths)
            except PlanError as exc:
                return Outcome(ev.FAILED, str(exc))
            out_dir = scratch / f"out-{n}"
            result = await executor.run(bound, out_dir)
            logs.append((label, result.stderr))
            if not result.ok:
                return Outcome(STATUS_KIND.get(result.status, ev.FAILED), result.message or result.status,
                               stderr=joined(logs))
            for name, info in result.outputs.items():
                key = item_output(name, label)
                path = Path(info.get("path") or out_dir / info["file"])
                cid, size = await _keep(storage, path)
                out.outputs[key], out.sizes[key] = cid, size
                scalar = _scalar(info.get("value"))
                if scalar is not None:
                    out.inline[key] = scalar
        out.stderr = joined(logs)
        return out
    finally:
        await trio.to_thread.run_sync(lambda: shutil.rmtree(scratch, ignore_errors=True))


def missing_input(name: str, cid: str, exc: Exception) -> str:
    """The failure message of an input not brought here, the same on every peer (without how many peers
    this one asked), so that the same missing input on two peers fails the task at once (job_state.py)."""
    return f"input {name} ({cid}): " + re.sub(r", \d+ connected peer\(s\) asked\)$", ")", str(exc))


async def _bring(storage: Any, cid_text: str, stem: Path, timeout: float) -> str:
    from ..storage.cid import Cid
    from ..storage.exporter import iter_file

    cid = Cid.parse(cid_text)

    def export() -> str:
        tmp = stem.with_suffix(".part")
        with open(tmp, "wb") as fh:
            for chunk in iter_file(storage.blockstore.get, cid):
                fh.write(chunk)
        with open(tmp, "rb") as fh:
            head = fh.read(8)
        path = stem.with_name(stem.name + suffix_of(head))
        tmp.rename(path)
        return str(path)

    try:
        return await trio.to_thread.run_sync(export)
    except BlockNotFound:
        await storage.fetch(cid, pin=True, timeout=timeout)
        return await trio.to_thread.run_sync(export)


async def _program(storage: Any, ref: str, scratch: Path, timeout: float) -> str:
    """A wasm task's program as a local file: ``builtin:NAME.wat`` ships with us, ``ipfs://CID`` is fetched."""
    from ..ops.jobfile import builtin_program

    if ref.startswith("builtin:"):
        return str(builtin_program(ref))
    if ref.startswith("ipfs://"):
        path = Path(await _bring(storage, ref.removeprefix("ipfs://").split("/")[0], scratch / "program", timeout))
        with open(path, "rb") as fh:
            wasm = fh.read(4) == b"\0asm"
        return str(path.rename(path.with_suffix(".wasm" if wasm else ".wat")))
    raise P2PComputeError("a program is builtin:NAME.wat or ipfs://CID on the network")


async def _keep(storage: Any, path: Path) -> tuple[str, int]:
    from ..storage.importer import import_path

    def add() -> Any:
        with storage.blockstore.session():      # no GC between the import and the pin
            return import_path(path, storage.blockstore.put)

    result = await trio.to_thread.run_sync(add)
    await storage.pin(result.cid)
    return str(result.cid), path.stat().st_size


def _scalar(value: Any) -> float | None:
    """A one-element output's value as a finite float (for conditions); None otherwise."""
    while isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None
