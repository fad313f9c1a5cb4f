"""The executor's decisions as a pure state machine: queue, workers, deadlines, retries.

Theory of operation
-------------------
The machine owns a bounded FIFO of waiting tasks and a pool of at most
``cpus`` worker processes (the slots). Workers are started on demand: it
keeps ``warm`` spare workers (idle or starting) beside the busy ones, and
grows up to the slot count while tasks wait; a worker idle for
``idle_timeout`` beyond the warm spares is stopped. An idle executor thus
holds ``warm`` processes, whatever number of slots it offers. Each call takes an event and the current time and returns
commands for the driver (executor.py) to carry out; it never blocks, sleeps,
reads a clock or touches a process.

Worker life: ``StartWorker`` -> (driver spawns it) -> ``worker_ready`` ->
idle <-> busy -> exits. A busy worker has a wall-clock deadline; ``tick``
past it emits ``KillWorker`` and remembers why, so that when the driver
reports ``worker_exited`` the task is delivered as ``resource_exceeded:
wall_time``. A worker that exits on SIGXCPU was stopped by its CPU rlimit
(``cpu_time``). A worker that exits for any other reason while busy has
crashed: its task goes back to the front of the queue, at most
``max_attempts`` times in all, then it is delivered as failed. A worker that
asks to be recycled (after a memory error) or has served
``recycle_after`` tasks is stopped and replaced. After every event the pool
is topped up to ``min(cpus, busy + waiting + warm)`` while the machine is
open. Workers that die before
becoming ready count as start failures: after ``max_start_failures`` in a
row the waiting tasks are failed rather than left to hang, and no worker is
started again until the next task arrives (one more attempt per task).

Deliveries name the task and carry a verdict: ``reply`` (use the worker's
result), or a status, resource and limit made here.
"""

from __future__ import annotations

import signal
from collections import deque
from dataclasses import dataclass, field

SIGXCPU = int(signal.SIGXCPU)


# --- commands ---------------------------------------------------------------


@dataclass(frozen=True)
class StartWorker:
    wid: int


@dataclass(frozen=True)
class SendTask:
    wid: int
    tid: int


@dataclass(frozen=True)
class KillWorker:
    wid: int


@dataclass(frozen=True)
class StopWorker:
    """Ask an idle worker to leave (close its stdin)."""

    wid: int


@dataclass(frozen=True)
class Deliver:
    tid: int
    verdict: str                 # "reply", or a TaskResult status
    resource: str | None = None
    limit: float | None = None
    message: str = ""
    attempts: int = 1


Command = StartWorker | SendTask | KillWorker | StopWorker | Deliver


# --- state ----------------------------------------------------------------------


@dataclass
class _Worker:
    wid: int
    state: str = "starting"          # starting, idle, busy, leaving
    task: int | None = None
    deadline: float | None = None
    kill_reason: tuple[str, float] | None = None
    served: int = 0


@dataclass
class _Task:
    tid: int
    wall_seconds: float
    cpu_seconds: float
    attempts: int = 0


@dataclass
class ExecutorState:
    cpus: int
    warm: int = 1
    idle_timeout: float = 60.0
    max_queue: int = 1000
    max_attempts: int = 2
    recycle_after: int = 500
    start_timeout: float = 60.0
    max_start_failures: int = 3
    workers: dict[int, _Worker] = field(default_factory=dict)
    queue: deque[_Task] = field(default_factory=deque)
    tasks: dict[int, _Task] = field(default_factory=dict)
    closed: bool = False
    start_failures: int = 0
    _next_wid: int = 0

    def __post_init__(self) -> None:
        if self.cpus < 1:
            raise ValueError("cpus must be at least 1")
        if self.warm < 0:
            raise ValueError("warm must not be negative")

    # --- events --------------------------------------------------------------------

    def open(self, now: float) -> list[Command]:
        return self._grow(now)

    def submit(self, tid: int, wall_seconds: float, cpu_seconds: float, now: float) -> list[Command]:
        if self.closed:
            return [Deliver(tid, "rejected", message="the executor is shutting down")]
        if len(self.queue) >= self.max_queue:
            return [Deliver(tid, "rejected", message=f"queue full ({self.max_queue} tasks waiting)")]
        task = _Task(tid, wall_seconds, cpu_seconds)
        self.tasks[tid] = task
        self.queue.append(task)
        out: list[Command] = []
        if self.start_failures >= self.max_start_failures:  # try again, once per new task
            self.start_failures = self.max_start_failures - 1
        return out + self._dispatch(now)

    def cancel(self, tid: int, now: float) -> list[Command]:
        """The submitter went away: drop the task, killing its worker if it runs."""
        task = self.tasks.pop(tid, None)
        if task is None:
            return []
        if task in self.queue:
            self.queue.remove(task)
            return []
        for w in self.workers.values():
            if w.task == tid:
                w.kill_reason, w.task = ("cancelled", 0.0), None
                return [KillWorker(w.wid)]
        return []

    def worker_ready(self, wid: int, now: float) -> list[Command]:
        w = self.workers.get(wid)
        if w is None or w.state != "starting":
            return []
        w.state, w.deadline = "idle", now + self.idle_timeout
        self.start_failures = 0
        return self._dispatch(now)

    def task_finished(self, wid: int, recycle: bool, now: float) -> list[Command]:
        w = self.workers.get(wid)
        if w is None or w.state != "busy":
            return []
        out: list[Command] = []
        task = self.tasks.pop(w.task, None) if w.task is not None else None
        if task is not None:
            out.append(Deliver(task.tid, "reply", attempts=task.attempts))
        w.task, w.deadline, w.served = None, None, w.served + 1
        if recycle or w.served >= self.recycle_after or self.closed:
            w.state = "leaving"
            out.append(StopWorker(wid))
        else:
            w.state, w.deadline = "idle", now + self.idle_timeout
        return out + self._dispatch(now)

    def worker_exited(self, wid: int, signal_number: int | None, now: float) -> list[Command]:
        w = self.workers.pop(wid, None)
        if w is None:
            return []
        out: list[Command] = []
        if w.state == "starting":
            self.start_failures += 1
        if w.task is not None:
            out += self._task_lost(w, signal_number)
        if self.start_failures >= self.max_start_failures:
            out += self._fail_waiting("workers fail to start (see the daemon's log)")
        return out + self._dispatch(now)

    def tick(self, now: float) -> list[Command]:
        out: list[Command] = []
        for w in self.workers.values():
            if w.deadline is None or now < w.deadline or w.kill_reason is not None:
                continue
            if w.state == "idle":
                out += self._retire_if_spare(w)
                continue
            if w.state == "busy":
                task = self.tasks[w.task] if w.task is not None else None
                w.kill_reason = ("wall_time", task.wall_seconds if task else 0.0)
            else:
                w.kill_reason = ("start_timeout", self.start_timeout)
            out.append(KillWorker(w.wid))
        return out

    def close(self, now: float) -> list[Command]:
        self.closed = True
        out: list[Command] = self._fail_waiting("the executor is shutting down", verdict="rejected")
        for w in self.workers.values():
            if w.state == "idle":
                w.state = "leaving"
                out.append(StopWorker(w.wid))
            elif w.state == "starting":
                out.append(KillWorker(w.wid))
        return out

    # --- queries ---------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        times = [w.deadline for w in self.workers.values()
                 if w.deadline is not None and w.kill_reason is None]
        return min(times) if times else None

    def counts(self) -> dict[str, int]:
        out = {"slots": self.cpus, "workers": len(self.workers), "queued": len(self.queue)}
        for state in ("starting", "idle", "busy", "leaving"):
            out[state] = sum(1 for w in self.workers.values() if w.state == state)
        return out

    def finished(self) -> bool:
        """Closed and every worker gone."""
        return self.closed and not self.workers

    # --- internals ----------------------------------------------------------------------

    def _spawn(self, now: float) -> StartWorker:
        wid = self._next_wid
        self._next_wid += 1
        self.workers[wid] = _Worker(wid, deadline=now + self.start_timeout)
        return StartWorker(wid)

    def _dispatch(self, now: float) -> list[Command]:
        """Send waiting tasks to idle workers, then top the pool up."""
        out: list[Command] = []
        idle = [w for w in self.workers.values() if w.state == "idle"]
        while self.queue and idle:
            w, task = idle.pop(), self.queue.popleft()
            task.attempts += 1
            w.state, w.task, w.deadline = "busy", task.tid, now + task.wall_seconds
            out.append(SendTask(w.wid, task.tid))
        return out + self._grow(now)

    def _wanted(self) -> int:
        busy = sum(1 for w in self.workers.values() if w.state == "busy")
        return min(self.cpus, busy + len(self.queue) + self.warm)

    def _grow(self, now: float) -> list[Command]:
        if self.closed or self.start_failures >= self.max_start_failures:
            return []
        active = sum(1 for w in self.workers.values() if w.state != "leaving")
        count = min(self._wanted() - active, self.cpus - len(self.workers))
        return [self._spawn(now) for _ in range(count)]

    def _retire_if_spare(self, w: _Worker) -> list[Command]:
        """An idle worker past its idle timeout leaves if the pool has more than it wants."""
        w.deadline = None
        active = sum(1 for v in self.workers.values() if v.state != "leaving")
        if active <= self._wanted():
            return []  # one of the warm spares: it stays (until it next goes idle)
        w.state = "leaving"
        return [StopWorker(w.wid)]

    def _task_lost(self, w: _Worker, signal_number: int | None) -> list[Command]:
        task = self.tasks.get(w.task) if w.task is not None else None
        if task is None:
            return []
        reason = w.kill_reason
        if reason is not None and reason[0] == "wall_time":
            del self.tasks[task.tid]
            return [Deliver(task.tid, "resource_exceeded", "wall_time", reason[1],
                            f"killed after the {reason[1]:g} s wall-clock limit", task.attempts)]
        if signal_number == SIGXCPU:
            del self.tasks[task.tid]
            return [Deliver(task.tid, "resource_exceeded", "cpu_time", task.cpu_seconds,
                            f"killed after the {task.cpu_seconds:g} s CPU-time limit", task.attempts)]
        if task.attempts >= self.max_attempts:
            del self.tasks[task.tid]
            how = f"signal {signal_number}" if signal_number else "an unexpected exit"
            return [Deliver(task.tid, "failed", message=f"worker crashed ({how}) on each of "
                            f"{task.attempts} attempts", attempts=task.attempts)]
        self.queue.appendleft(task)
        return []

    def _fail_waiting(self, message: str, verdict: str = "failed") -> list[Command]:
        out: list[Command] = []
        while self.queue:
            task = self.queue.popleft()
            self.tasks.pop(task.tid, None)
            out.append(Deliver(task.tid, verdict, message=message, attempts=task.attempts))
        return out
