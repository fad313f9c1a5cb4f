"""The sandboxed executor: warm worker processes driven from trio.

    async with open_executor(cpus=2) as executor:
        result = await executor.run(task, output_dir=Path("out"))

This is the thin layer around ``ExecutorState`` (the decisions): it spawns
``python -m p2pcompute.ops.worker`` processes with trio's process API, feeds
the state machine their hellos, replies and exits, runs a timer for its
deadlines, and carries out its commands (start, send, kill, stop, deliver).

Each task gets a private scratch dir (mode 0700) under the executor's root,
which the worker creates when the task first needs it (a WebAssembly program
runs with it as working directory; a graph writes large outputs there). When the task
succeeds its output files are moved to ``output_dir``; in every case the
scratch dir is then removed, so nothing of a task survives it except its
outputs. Concurrency is at most ``cpus`` workers, started on demand: ``warm``
spare workers (default 1) wait beside the busy ones, more start while tasks
wait, and spares idle for ``idle_timeout`` seconds leave again; waiting
tasks queue (bounded) in the state machine. Cancelling a caller of ``run``
cancels its task (the worker is killed if it was running it).

Each worker runs in a session of its own (the terminal's Ctrl-C is the
daemon's to handle) and dies with the executor's process through a lifeline
pipe (``sandbox.follow_parent``), however that process ends.
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

import cbor2
import trio

from ..errors import P2PComputeError
from . import executor_state as es
from .tasks import STDERR_MAX, Task, TaskResult, tail
from .worker import MAX_FRAME, encode_frame

SHUTDOWN_GRACE = 5.0


@dataclass
class _Pending:
    task: Task
    output_dir: Path | None
    done: trio.Event = field(default_factory=trio.Event)
    scratch: Path | None = None
    reply: TaskResult | None = None
    result: TaskResult | None = None


@dataclass
class _Handle:
    process: trio.Process | None = None
    kill_requested: bool = False


class Executor:
    """Use ``open_executor``; see the module docstring."""

    def __init__(self, nursery: trio.Nursery, cpus: int, scratch_root: Path, **state_options: Any) -> None:
        self._nursery = nursery
        self._state = es.ExecutorState(cpus=cpus, **state_options)
        self._root = scratch_root
        self._pending: dict[int, _Pending] = {}
        self._handles: dict[int, _Handle] = {}
        self._ids = itertools.count(1)
        self._wakeup = trio.Event()
        self._ready = trio.Event()
        self._ready_count = 0
        if min(self._state.warm, cpus) == 0:
            self._ready.set()
        self.cpus = cpus
        self.network_isolation = "unknown"

    # --- public API ---------------------------------------------------------------

    async def run(self, task: Task, output_dir: Path | None = None) -> TaskResult:
        """Run ``task`` under its limits; its output files go to ``output_dir`` if it succeeds.

        Without ``output_dir`` only the result's metadata is kept (outputs of at most 16
        elements carry their values inline)."""
        tid = next(self._ids)
        pending = self._pending[tid] = _Pending(task, None if output_dir is None else Path(output_dir))
        try:
            self._apply(self._state.submit(tid, task.limits.wall_seconds, task.limits.cpu_seconds,
                                           trio.current_time()))
            await pending.done.wait()
        except BaseException:
            if not pending.done.is_set():
                self._apply(self._state.cancel(tid, trio.current_time()))
                _remove(pending.scratch)
            raise
        finally:
            self._pending.pop(tid, None)
        assert pending.result is not None
        return pending.result

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (for status pages and tests)."""
        return [h.process.pid for h in self._handles.values()
                if h.process is not None and h.process.returncode is None]

    def status(self) -> dict[str, int]:
        """Worker slots, live workers by state, and waiting tasks (for status pages and tests)."""
        return self._state.counts()

    async def wait_ready(self) -> None:
        """Wait until the first ``warm`` workers have started (they are then warm)."""
        await self._ready.wait()

    # --- commands ---------------------------------------------------------------------

    def _apply(self, commands: list[es.Command]) -> None:
        for cmd in commands:
            if isinstance(cmd, es.StartWorker):
                self._handles[cmd.wid] = _Handle()
                self._nursery.start_soon(self._worker_main, cmd.wid)
            elif isinstance(cmd, es.SendTask):
                self._send_task(cmd.wid, cmd.tid)
            elif isinstance(cmd, es.KillWorker):
                handle = self._handles.get(cmd.wid)
                if handle is not None:
                    handle.kill_requested = True
                    if handle.process is not None:
                        handle.process.kill()
            elif isinstance(cmd, es.StopWorker):
                handle = self._handles.get(cmd.wid)
                if handle is not None and handle.process is not None:
                    self._nursery.start_soon(_close_stdin, handle.process)
            elif isinstance(cmd, es.Deliver):
                self._deliver(cmd)
        self._wakeup.set()

    def _send_task(self, wid: int, tid: int) -> None:
        pending = self._pending[tid]
        _remove(pending.scratch)
        pending.scratch = self._root / f"task-{tid}-{next(self._ids)}"  # the worker creates it if needed
        frame = encode_frame({"id": tid, "scratch": str(pending.scratch), "task": pending.task.to_wire()})
        process = self._handles[wid].process
        assert process is not None and process.stdin is not None
        self._nursery.start_soon(_send_frame, process, frame)

    def _deliver(self, cmd: es.Deliver) -> None:
        pending = self._pending.get(cmd.tid)
        if pending is None:
            return
        if cmd.verdict == "reply" and pending.reply is not None:
            result = pending.reply
        else:
            result = TaskResult(cmd.verdict if cmd.verdict != "reply" else "failed",
                                cmd.message or "the worker sent no result", cmd.resource, cmd.limit)
        result.attempts = cmd.attempts
        pending.result = result
        self._nursery.start_soon(self._finish, pending)

    async def _finish(self, pending: _Pending) -> None:
        result = pending.result
        assert result is not None
        if result.ok and pending.output_dir is not None and pending.scratch is not None:
            try:
                await trio.to_thread.run_sync(_move_outputs, pending.scratch / "outputs",
                                              pending.output_dir, result)
            except OSError as exc:
                pending.result = TaskResult("failed", f"could not store outputs: {exc}")
        if not result.stderr and pending.scratch is not None:   # killed (wall time, crash): what it wrote
            pending.result.stderr = await trio.to_thread.run_sync(tail, pending.scratch / "stderr.txt", STDERR_MAX)
        _remove(pending.scratch)
        pending.done.set()

    # --- workers and the timer ----------------------------------------------------------

    async def _worker_main(self, wid: int) -> None:
        handle = self._handles[wid]
        signal_number = None
        watch_end, lifeline = os.pipe()  # the worker dies when ``lifeline`` closes (see sandbox.py)
        try:
            # its own session: the terminal's Ctrl-C goes to the daemon, which stops its workers
            handle.process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "p2pcompute.ops.worker", str(watch_end)], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, env=_worker_env(), pass_fds=(watch_end,), start_new_session=True)
        except OSError:
            self._handles.pop(wid, None)
            os.close(lifeline)
            self._apply(self._state.worker_exited(wid, None, trio.current_time()))
            return
        except BaseException:
            os.close(lifeline)
            raise
        finally:
            os.close(watch_end)
        process = handle.process
        try:
            if handle.kill_requested:
                process.kill()
            await self._read_replies(wid, process)
        finally:
            with trio.CancelScope(shield=True):
                if process.returncode is None:
                    process.kill()
                await process.wait()
            os.close(lifeline)
            if process.returncode is not None and process.returncode < 0:
                signal_number = -process.returncode
            self._handles.pop(wid, None)
            self._apply(self._state.worker_exited(wid, signal_number, trio.current_time()))

    async def _read_replies(self, wid: int, process: trio.Process) -> None:
        assert process.stdout is not None
        reader = _FrameReader(process.stdout)
        while True:
            try:
                message = await reader.next()
            except (ValueError, trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not isinstance(message, dict):
                return
            if "hello" in message:
                self.network_isolation = str(message["hello"].get("network", "unknown"))
                self._ready_count += 1
                if self._ready_count >= min(self._state.warm, self.cpus):
                    self._ready.set()
                self._apply(self._state.worker_ready(wid, trio.current_time()))
                continue
            pending = self._pending.get(message.get("id"))  # type: ignore[arg-type]
            if pending is not None:
                pending.reply = TaskResult.from_wire(message.get("result", {}))
            self._apply(self._state.task_finished(wid, bool(message.get("recycle")), trio.current_time()))

    async def _timer(self) -> None:
        while True:
            deadline = self._state.next_deadline()
            with trio.move_on_at(math.inf if deadline is None else deadline):
                await self._wakeup.wait()
            self._wakeup = trio.Event()
            commands = self._state.tick(trio.current_time())
            if commands:
                self._apply(commands)

    async def _shutdown(self) -> None:
        self._apply(self._state.close(trio.current_time()))
        with trio.move_on_after(SHUTDOWN_GRACE):
            while not self._state.finished():
                await trio.sleep(0.01)
        for handle in list(self._handles.values()):
            if handle.process is not None and handle.process.returncode is None:
                handle.process.kill()


@asynccontextmanager
async def open_executor(cpus: int = 1, scratch_root: Path | None = None,
                        **state_options: Any) -> AsyncIterator[Executor]:
    """An executor of ``cpus`` worker slots, shut down (workers gone) on exit.

    ``state_options`` go to ``ExecutorState``: ``warm`` (spare workers kept started),
    ``idle_timeout``, ``max_queue``, ``max_attempts``, ``recycle_after``..."""
    own_root = scratch_root is None
    root = Path(tempfile.mkdtemp(prefix="p2pcompute-exec-")) if own_root else Path(scratch_root)
    root.mkdir(parents=True, exist_ok=True)
    try:
        async with trio.open_nursery() as nursery:
            executor = Executor(nursery, cpus, root, **state_options)
            executor._apply(executor._state.open(trio.current_time()))
            nursery.start_soon(executor._timer)
            try:
                yield executor
            finally:
                with trio.CancelScope(shield=True):
                    await executor._shutdown()
                nursery.cancel_scope.cancel()
    finally:
        if own_root:
            shutil.rmtree(root, ignore_errors=True)


class _FrameReader:
    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buf = bytearray()

    async def _fill(self, n: int) -> bool:
        while len(self._buf) < n:
            chunk = await self._stream.receive_some(1 << 20)
            if not chunk:
                return False
            self._buf += chunk
        return True

    async def next(self) -> Any | None:
        if not await self._fill(4):
            return None
        (size,) = struct.unpack_from(">I", self._buf)
        if size > MAX_FRAME:
            raise ValueError(f"worker frame of {size} bytes")
        if not await self._fill(4 + size):
            return None
        body = bytes(self._buf[4:4 + size])
        del self._buf[:4 + size]
        try:
            return cbor2.loads(body)
        except Exception as exc:
            raise ValueError(f"bad worker frame: {exc}") from None


async def _send_frame(process: trio.Process, frame: bytes) -> None:
    try:
        assert process.stdin is not None
        await process.stdin.send_all(frame)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the worker died; its exit is reported by its reader


async def _close_stdin(process: trio.Process) -> None:
    if process.stdin is not None:
        await process.stdin.aclose()


def _worker_env() -> dict[str, str]:
    package_parent = str(Path(__file__).resolve().parents[2])
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "PYTHONHASHSEED": "0",
           "PYTHONPATH": os.pathsep.join(p for p in (package_parent, os.environ.get("PYTHONPATH")) if p)}
    return env


def _move_outputs(source: Path, dest: Path, result: TaskResult) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for info in result.outputs.values():
        target = dest / info["file"]
        if "data" in info:
            target.write_bytes(info["data"])
        else:
            shutil.move(str(source / info["file"]), str(target))
        info["path"] = str(target)


def _remove(path: Path | None) -> None:
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


def run_tasks(tasks: list[tuple[Task, Path | None]], cpus: int = 1) -> list[TaskResult]:
    """Run tasks to completion from synchronous code (the CLI's ``run --local``)."""
    async def main() -> list[TaskResult]:
        results: list[TaskResult | None] = [None] * len(tasks)
        async with open_executor(cpus=cpus) as executor:
            async with trio.open_nursery() as nursery:
                for i, (task, out) in enumerate(tasks):
                    async def one(i: int = i, task: Task = task, out: Path | None = out) -> None:
                        results[i] = await executor.run(task, out)
                    nursery.start_soon(one)
        return [r if r is not None else TaskResult("failed", "not run") for r in results]

    try:
        return trio.run(main)
    except OSError as exc:
        raise P2PComputeError(f"executor failed: {exc}") from exc
