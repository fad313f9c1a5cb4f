"""Task stderr across the network: kept as a CID by the executing peer, read back for ``logs JOB [TASK]``.

Theory of operation. The executor captures each run's stderr (a WebAssembly
program's; a graph has none: ops/taskrun.py), its last ``STDERR_MAX`` bytes,
also when the run is killed (wall time).
A mapped task runs once per item: ``joined`` puts the items' captures
together, each under a ``--- item LABEL ---`` line, and keeps the last
``STDERR_MAX`` bytes. ``keep`` imports that text into the executing peer's
blockstore and pins it, like an output: the attempt's ``TaskDone`` or
``TaskFailure`` carries only its CID and size (``log``, ``log_bytes``), and
the coordinator writes them into the attempt (job_state.py). So the job
record grows by a CID per attempt, never by the text: a job of 100,000 tasks
keeps a bounded record, and the text moves only when someone asks for it.
(A short tail inline would have cost up to kilobytes per attempt in every
replicated record; a failed wasm run's message already carries 2000
characters of its stderr.) ``read`` brings a log here by bitswap when it is
asked for, bounded: a CID that turns out to be larger than ``STDERR_MAX``
(plus slack) is refused, and the fetch is stopped as soon as it goes past.
The log lives as long as the executing peer keeps it: ``read`` says so when
nobody has it any more.
"""

from __future__ import annotations

from typing import Any

import trio

from ..errors import P2PComputeError
from ..ops.tasks import STDERR_MAX

MAX_LOG_BYTES = STDERR_MAX + 4096         # what a log CID may hold (the item headers add a little)


class NotALog(P2PComputeError):
    """The CID names more bytes than a log holds."""


def joined(parts: list[tuple[str | None, str]]) -> str:
    """One task's stderr from its items' (label or None, stderr): the last ``STDERR_MAX`` bytes."""
    if len(parts) == 1:
        data = parts[0][1].encode()
    else:
        data = "".join(f"--- item {label} ---\n{text}" + ("" if text.endswith("\n") else "\n")
                       for label, text in parts if text).encode()
    return data[-STDERR_MAX:].decode("utf-8", "replace")


async def keep(storage: Any, text: str) -> tuple[str, int]:
    """Import ``text`` into the blockstore and pin it (and so announce it); (CID, bytes)."""
    from ..storage.importer import import_bytes

    data = text.encode()

    def add() -> Any:
        with storage.blockstore.session():      # no GC between the import and the pin
            return import_bytes(data, storage.blockstore.put)

    result = await trio.to_thread.run_sync(add)
    await storage.pin(result.cid)
    return str(result.cid), len(data)


async def read(storage: Any, cid_text: str, timeout: float) -> str:
    """The text of a log CID, from here or fetched (bounded); ``P2PComputeError`` saying why not."""
    from ..storage import exporter
    from ..storage.cid import Cid

    try:
        cid = Cid.parse(cid_text)
    except (P2PComputeError, ValueError) as exc:
        raise P2PComputeError(f"not a CID: {exc}") from None

    def local() -> bytes:
        size = exporter.stat(storage.blockstore.get, cid).size
        if size > MAX_LOG_BYTES:
            raise NotALog(f"{size} bytes: a log holds at most {MAX_LOG_BYTES}")
        return exporter.read_file(storage.blockstore.get, cid)

    try:
        return (await trio.to_thread.run_sync(local)).decode("utf-8", "replace")
    except NotALog:
        raise
    except P2PComputeError:
        pass                                  # not (wholly) here: fetch it
    with trio.CancelScope() as scope:
        def progress(event: dict) -> None:
            if event.get("bytes", 0) > 2 * MAX_LOG_BYTES:
                scope.cancel()
        await storage.fetch(cid, pin=False, timeout=timeout, progress=progress)
    if scope.cancelled_caught:
        raise NotALog(f"over {2 * MAX_LOG_BYTES} bytes: not a log")
    return (await trio.to_thread.run_sync(local)).decode("utf-8", "replace")
