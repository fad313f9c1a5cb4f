"""Long tasks and idle workers: the figures of issue 9's "long task" note.

    python bench/bench_long_task.py [--task-seconds 120] [--idle-seconds 300] [--daemon] [--json]

Prints:
  * a long task: chained 2048x2048 float32 matmuls (by the identity, so the
    values stay put), as many as take about ``--task-seconds`` here
    (calibrated first with short runs; on a loaded machine the figure
    drifts), submitted with its wall and CPU
    limits at four times that; its status, attempts, wall and CPU seconds, and
    whether its worker process is the one that was warm before it started;
  * the idle executor: its worker PIDs sampled every second for
    ``--idle-seconds`` (stable = the same set throughout), and the CPU seconds
    the workers and the executor's own process used meanwhile.

By default the executor runs in this process (``open_executor(cpus=1)``).
With ``--daemon`` a real daemon (``p2pcompute join``, its own data dir, on
loopback) runs the task through ``POST /v1/compute``; its workers are its
child processes, and the CPU figures are the daemon's and its workers'.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from p2pcompute import tensor as t

N = 2048
CALIBRATION_MATMULS = 4
TICKS = os.sysconf("SC_CLK_TCK")


def matmul_chain(k: int):
    """(graph, feeds): x @ I @ I ... (k times), then reduce_sum (x is all positive)."""
    x = t.input("x", "float32", [N, N])
    eye = t.input("eye", "float32", [N, N])
    y = x
    for _ in range(k):
        y = y.matmul(eye)
    graph, _ = t.to_graph(y.reduce_sum())
    feeds = {"x": np.random.default_rng(1).random((N, N), dtype=np.float32), "eye": np.eye(N, dtype=np.float32)}
    return graph, feeds


def limits_for(seconds: float) -> dict:
    return {"wall_seconds": 4 * seconds + 60, "cpu_seconds": 4 * seconds + 60, "memory": 1 << 30}


# --- processes --------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a live process (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(entry))
    return sorted(out)


class IdleWatch:
    """Worker PIDs sampled over a period; CPU used by the workers and by ``own_pid`` meanwhile."""

    def __init__(self, pids: list[int], own_pid: int) -> None:
        self.start, self.first, self.previous = time.monotonic(), pids, pids
        self.cpu0 = {p: cpu_seconds(p) for p in pids}
        self.own_pid, self.own0 = own_pid, cpu_seconds(own_pid)
        self.samples = self.changes = 0

    def sample(self, pids: list[int]) -> None:
        self.samples += 1
        self.changes += pids != self.previous
        for p in pids:
            self.cpu0.setdefault(p, 0.0)
        self.previous = pids

    def figures(self) -> dict:
        worker_cpu = sum(max(0.0, cpu_seconds(p) - c) for p, c in self.cpu0.items())
        return {"idle_seconds": round(time.monotonic() - self.start, 1), "samples": self.samples,
                "pids_at_start": self.first, "pids_at_end": self.previous, "distinct_pids": len(self.cpu0),
                "changes": self.changes, "stable": self.changes == 0 and self.previous == self.first,
                "worker_cpu_seconds": round(worker_cpu, 3),
                "own_cpu_seconds": round(cpu_seconds(self.own_pid) - self.own0, 3)}


# --- in this process ------------------------------------------------------------------


def bench_executor(task_seconds: float, idle_seconds: float) -> dict:
    import trio

    from p2pcompute.ops.executor import open_executor
    from p2pcompute.ops.tasks import InputFile, Limits, Task

    tmp = Path(tempfile.mkdtemp(prefix="bench-long-"))

    def task(k: int, seconds: float) -> Task:
        graph, feeds = matmul_chain(k)
        inputs = {}
        for name, array in feeds.items():
            np.save(tmp / f"{name}.npy", array)
            inputs[name] = InputFile(str(tmp / f"{name}.npy"))
        return Task("graph", inputs=inputs, graph=graph.to_cbor(), limits=Limits(**limits_for(seconds)))

    async def main() -> dict:
        async with open_executor(cpus=1, warm=1) as executor:
            await executor.wait_ready()
            calibration = await executor.run(task(CALIBRATION_MATMULS, 60))
            assert calibration.ok, calibration.message
            per = calibration.wall_seconds / CALIBRATION_MATMULS
            k = max(1, round(task_seconds / per))
            before = executor.worker_pids()
            start = time.monotonic()
            result = await executor.run(task(k, task_seconds))
            wall = time.monotonic() - start
            busy_pid = before[0] if before else None
            out = {"matmuls": k, "seconds_per_matmul": round(per, 4), "status": result.status,
                   "message": result.message, "attempts": result.attempts, "wall_seconds": round(wall, 2),
                   "task_wall_seconds": round(result.wall_seconds, 2), "task_cpu_seconds": round(result.cpu_seconds, 2),
                   "same_worker": busy_pid in executor.worker_pids()}
            watch = IdleWatch(sorted(executor.worker_pids()), os.getpid())
            end = trio.current_time() + idle_seconds
            while trio.current_time() < end:
                await trio.sleep(1.0)  # in trio, not a thread: no trio thread is kept alive
                watch.sample(sorted(executor.worker_pids()))
            return {"task": out, "idle": watch.figures()}

    try:
        return trio.run(main)
    finally:
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()


# --- a real daemon -------------------------------------------------------------------


def bench_daemon(task_seconds: float, idle_seconds: float) -> dict:
    from p2pcompute.node.client import ControlClient
    from p2pcompute.ops.remote import compute_on

    data_dir = Path(tempfile.mkdtemp(prefix="bench-long-daemon-"))
    log = open(data_dir.parent / f"{data_dir.name}.log", "w")
    daemon = subprocess.Popen([sys.executable, "-m", "p2pcompute", "join", "--data-dir", str(data_dir),
                               "--listen", "/ip4/127.0.0.1/tcp/0", "--cpus", "1", "--memory", "2GiB"],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (data_dir / "api").exists() or not children(daemon.pid):
            if time.monotonic() > deadline or daemon.poll() is not None:
                raise SystemExit(f"the daemon did not start; see {log.name}")
            time.sleep(0.2)
        client = ControlClient(data_dir, timeout=8 * task_seconds + 300)

        def timed(k: int, seconds: float) -> float:
            graph, feeds = matmul_chain(k)
            start = time.monotonic()
            [total] = compute_on(client, graph, feeds, limits=limits_for(seconds))
            assert float(total) > 0
            return time.monotonic() - start

        small = timed(CALIBRATION_MATMULS, 60)  # also stores the inputs: later runs find them
        per = max(1e-3, (timed(2 * CALIBRATION_MATMULS, 60) - small) / CALIBRATION_MATMULS)
        k = max(1, round(task_seconds / per))
        before = children(daemon.pid)
        cpu0 = {p: cpu_seconds(p) for p in before}
        status, message = "ok", ""
        try:
            wall = timed(k, task_seconds)
        except Exception as exc:  # reported, not raised: it is the figure
            status, message, wall = "failed", str(exc), float("nan")
        out = {"matmuls": k, "seconds_per_matmul": round(per, 4), "status": status, "message": message,
               "wall_seconds": round(wall, 2), "workers_before": before,
               "workers_after": children(daemon.pid),
               "task_cpu_seconds": round(sum(cpu_seconds(p) - c for p, c in cpu0.items()), 2)}
        watch = IdleWatch(children(daemon.pid), daemon.pid)
        end = time.monotonic() + idle_seconds
        while time.monotonic() < end:
            time.sleep(1.0)
            watch.sample(children(daemon.pid))
        return {"task": out, "idle": watch.figures()}
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
        log.close()
        subprocess.run(["rm", "-rf", str(data_dir), log.name], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task-seconds", type=float, default=120.0)
    parser.add_argument("--idle-seconds", type=float, default=300.0)
    parser.add_argument("--daemon", action="store_true", help="run the task on a real daemon")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    where = "daemon" if args.daemon else "executor"
    figures = (bench_daemon if args.daemon else bench_executor)(args.task_seconds, args.idle_seconds)
    figures["where"] = where
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    task, idle = figures["task"], figures["idle"]
    print(f"long task on the {where}: {task['matmuls']} chained {N}x{N} float32 matmuls "
          f"({task['seconds_per_matmul']} s each when calibrated), aiming at {args.task_seconds:g} s")
    print(f"  status {task['status']}{': ' + task['message'] if task['message'] else ''}, "
          f"wall {task['wall_seconds']} s, " + (
              f"attempts {task['attempts']}, in worker {task['task_wall_seconds']} s wall / "
              f"{task['task_cpu_seconds']} s CPU, same warm worker: {task['same_worker']}" if where == "executor"
              else f"workers' CPU {task['task_cpu_seconds']} s, workers before {task['workers_before']} "
                   f"after {task['workers_after']}"))
    print(f"idle {where} over {idle['idle_seconds']:g} s ({idle['samples']} samples): worker PIDs "
          f"{'stable' if idle['stable'] else 'CHANGED'} {idle['pids_at_start']} -> {idle['pids_at_end']} "
          f"({idle['distinct_pids']} distinct, {idle['changes']} changes); CPU while idle: workers "
          f"{idle['worker_cpu_seconds']} s, {'executor process' if where == 'executor' else 'daemon'} "
          f"{idle['own_cpu_seconds']} s")


if __name__ == "__main__":
    main()
