"""The executor's worker process: ``python -m p2pcompute.ops.worker``.

Protocol on the worker's stdin/stdout (which it takes over at start: task
code sees /dev/null as stdin and stderr as stdout): frames of a 4-byte
big-endian length and a CBOR map.

    worker -> executor   {"hello": {"pid": int, "network": str}}     once, when warm
    executor -> worker   {"id": int, "scratch": str, "task": Task.to_wire()}
    worker -> executor   {"id": int, "result": TaskResult.to_wire(), "recycle": bool}

The executor starts it as ``python -m p2pcompute.ops.worker FD`` where FD is
the read end of its lifeline pipe (see ``sandbox.follow_parent``), in a new
session of its own. One task at a time. The worker leaves after replying
with ``recycle`` true, or when its stdin closes. Start-up order matters: the network namespace is
entered before numpy starts any thread (``unshare`` requires it for user
namespaces), then the heavy imports happen once, so each task finds a warm
process.
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path
from typing import Any, BinaryIO

from . import sandbox

MAX_FRAME = 64 << 20
THREAD_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
              "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


def read_frame(stream: BinaryIO) -> Any | None:
    import cbor2

    head = _read_exact(stream, 4)
    if head is None:
        return None
    (size,) = struct.unpack(">I", head)
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes exceeds {MAX_FRAME}")
    body = _read_exact(stream, size)
    if body is None:
        return None
    return cbor2.loads(body)


def _read_exact(stream: BinaryIO, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        chunk = stream.read(n - got)
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def encode_frame(obj: Any) -> bytes:
    import cbor2

    body = cbor2.dumps(obj)
    return struct.pack(">I", len(body)) + body


def _take_pipes() -> tuple[BinaryIO, BinaryIO]:
    proto_in = os.fdopen(os.dup(0), "rb", buffering=0)
    proto_out = os.fdopen(os.dup(1), "wb", buffering=0)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    os.close(devnull)
    return proto_in, proto_out


def main(argv: list[str]) -> int:
    network = sandbox.isolate_network()
    if argv:
        sandbox.follow_parent(int(argv[0]))
    for name in THREAD_ENV:
        os.environ[name] = "1"
    proto_in, proto_out = _take_pipes()
    sandbox.set_static_limits()

    from .taskrun import run_task  # the heavy imports: numpy, wasmtime, tifffile
    from .tasks import Task, TaskResult
    from .wasm import WasmRuntime

    runtime = WasmRuntime()
    proto_out.write(encode_frame({"hello": {"pid": os.getpid(), "network": network}}))
    while True:
        message = read_frame(proto_in)
        if message is None:
            return 0
        try:
            task = Task.from_wire(message["task"])
        except Exception as exc:  # a malformed request fails its task, not the worker
            result, recycle = TaskResult("failed", f"malformed task: {exc}"), False
        else:
            result, recycle = run_task(task, Path(message["scratch"]), runtime)
        proto_out.write(encode_frame({"id": message.get("id"), "result": result.to_wire(),
                                      "recycle": recycle}))
        if recycle:
            return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
