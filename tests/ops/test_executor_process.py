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
import json, sys, trio
from p2pcompute.ops.executor import open_executor

async def main():
    async with open_executor(cpus=2, warm=2) as executor:
        await executor.wait_ready()
        print(json.dumps(executor.worker_pids()), flush=True)
        await trio.sleep_forever()

try:
    trio.run(main)
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
    end = time.monotonic() + deadline
    while time.monotonic() < end and any(_alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


def _start_child() -> tuple[subprocess.Popen, list[int]]:
    # a session of its own, as a shell gives a foreground job its own process group
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
    line = child.stdout.readline()
    if not line:
        child.kill()
        pytest.fail(f"the executor did not start: {child.stderr.read()}")
    pids = json.loads(line)
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    return child, pids


def test_ctrl_c_reaches_only_the_executor_which_stops_its_workers_quietly():
    child, pids = _start_child()
    try:
        os.killpg(child.pid, signal.SIGINT)  # what Ctrl-C in a terminal does to the foreground group
        out, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert out.strip() == "stopped" and child.returncode == 0
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert _wait_gone(pids) == []


def test_workers_die_with_the_executors_process():
    child, pids = _start_child()
    child.kill()  # SIGKILL: no clean-up code runs in the executor
    child.wait()
    assert _wait_gone(pids) == []
