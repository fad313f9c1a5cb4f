"""The executor's workers as processes: they follow the executor's process, not its threads
or the terminal (a real executor in a child process, stopped as a user or the kernel would)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

CHILD = """
import json, sys, tempfile, trio
from p2pcompute.ops.executor import open_executor
from p2pcompute.ops.tasks import Limits, Task

LOOP = '(module (memory (export "memory") 1) (func (export "_start") (loop br 0)))'

async def main(busy):
    async with open_executor(cpus=2, warm=2) as executor, trio.open_nursery() as nursery:
        await executor.wait_ready()
        if busy:  # one worker runs a task that never ends by itself
            program = tempfile.mkdtemp() + "/loop.wat"
            open(program, "w").write(LOOP)
            task = Task("wasm", program=program, limits=Limits(fuel=10**15, cpu_seconds=600, wall_seconds=600))
            nursery.start_soon(executor.run, task)
            while executor.status()["busy"] == 0:
                await trio.sleep(0.01)
        print(json.dumps(executor.worker_pids()), flush=True)
        await trio.sleep_forever()

try:
    trio.run(main, sys.argv[1] == "busy")
except* KeyboardInterrupt:
    print("stopped", flush=True)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except OSError:
        return False


def _wait_gone(pids: list[int], deadline: float = 60.0) -> list[int]:
    """The pids still alive after ``deadline`` s (killed then, so that a failure leaves no orphan)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end and any(_alive(p) for p in pids):
        time.sleep(0.05)
    left = [p for p in pids if _alive(p)]
    for p in left:
        os.kill(p, signal.SIGKILL)
    return left


def _start_child(busy: bool = False) -> tuple[subprocess.Popen, list[int]]:
    # a session of its own, as a shell gives a foreground job its own process group
    child = subprocess.Popen([sys.executable, "-c", CHILD, "busy" if busy else "idle"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
    line = child.stdout.readline()
    if not line:
        child.kill()
        pytest.fail(f"the executor did not start: {child.stderr.read()}")
    pids = json.loads(line)
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    return child, pids


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "mid-task"])
def test_ctrl_c_reaches_only_the_executor_which_stops_its_workers_quietly(busy):
    child, pids = _start_child(busy)
    try:
        os.killpg(child.pid, signal.SIGINT)  # what Ctrl-C in a terminal does to the foreground group
        out, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert out.strip() == "stopped" and child.returncode == 0
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert _wait_gone(pids) == []


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "mid-task"])
def test_workers_die_with_the_executors_process(busy):
    child, pids = _start_child(busy)
    child.kill()  # SIGKILL: no clean-up code runs in the executor
    child.wait()
    assert _wait_gone(pids) == []
