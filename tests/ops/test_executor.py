"""The sandboxed executor with real worker processes: limits, isolation, retries, cleanup."""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import trio

from p2pcompute import tensor as t
from p2pcompute.ops import tensor_format
from p2pcompute.ops.executor import open_executor
from p2pcompute.ops.tasks import InputFile, Limits, Task

from wat_programs import LOOP, WRITE_OUTPUT, WRITE_THEN_LOOP


def inline(array: np.ndarray) -> InputFile:
    return InputFile(data=tensor_format.encode(array))


def outer_product_task(memory: int) -> Task:
    """Needs 128 MiB for its output, from two 32 KiB inputs."""
    x, y = t.input("x", "float64", [4096, 1]), t.input("y", "float64", [1, 4096])
    graph, _ = t.to_graph(x.matmul(y).reduce_max())
    return Task("graph", inputs={"x": inline(np.ones((4096, 1))), "y": inline(np.ones((1, 4096)))},
                graph=graph.to_cbor(), limits=Limits(memory=memory))


def small_task(value: float) -> Task:
    graph, _ = t.to_graph((t.input("x", "float32", [8]) * 2.0).reduce_sum())
    return Task("graph", inputs={"x": inline(np.full(8, value, np.float32))}, graph=graph.to_cbor())


def program_task(tmp_path, source: str, **limits) -> Task:
    path = tmp_path / "program.wat"
    path.write_text(source)
    return Task("wasm", program=str(path), limits=Limits(**limits))


async def run_all(executor, tasks: dict[str, Task]) -> dict:
    results: dict = {}

    async def one(name: str, task: Task) -> None:
        results[name] = await executor.run(task)

    async with trio.open_nursery() as nursery:
        for name, task in tasks.items():
            nursery.start_soon(one, name, task)
    return results


async def test_memory_hog_is_stopped_while_a_parallel_task_completes():
    async with open_executor(cpus=2) as executor:
        results = await run_all(executor, {"hog": outer_product_task(64 << 20), "small": small_task(1.5)})
        hog = results["hog"]
        assert (hog.status, hog.resource, hog.limit) == ("resource_exceeded", "memory", 64 << 20)
        assert results["small"].ok and results["small"].outputs["out0"]["value"] == 24.0
        roomy = await executor.run(outer_product_task(1 << 30))  # it was the limit, not the graph
        assert roomy.ok and roomy.outputs["out0"]["value"] == 1.0


async def test_infinite_loop_is_killed_at_its_cpu_limit_while_others_carry_on(tmp_path):
    async with open_executor(cpus=2) as executor:
        await executor.wait_ready()
        loop = program_task(tmp_path, LOOP, fuel=10**15, cpu_seconds=1, wall_seconds=30)
        results = await run_all(executor, {"loop": loop, "small": small_task(2.0)})
        assert (results["loop"].status, results["loop"].resource, results["loop"].limit) == \
            ("resource_exceeded", "cpu_time", 1)
        assert results["small"].ok
        assert (await executor.run(small_task(3.0))).outputs["out0"]["value"] == 48.0


async def test_wall_clock_limit_and_out_of_fuel(tmp_path):
    async with open_executor(cpus=2) as executor:
        results = await run_all(executor, {
            "wall": program_task(tmp_path, LOOP, fuel=10**15, cpu_seconds=60, wall_seconds=0.5),
            "fuel": program_task(tmp_path, LOOP, fuel=2_000_000)})
        wall, fuel = results["wall"], results["fuel"]
        assert (wall.status, wall.resource, wall.limit) == ("resource_exceeded", "wall_time", 0.5)
        assert (fuel.status, fuel.resource, fuel.limit) == ("resource_exceeded", "fuel", 2_000_000)
        assert fuel.fuel_used == 2_000_000 and "ran out of fuel" in fuel.message


async def test_a_worker_killed_from_outside_is_replaced_and_its_task_retried(tmp_path):
    async with open_executor(cpus=1) as executor:
        await executor.wait_ready()
        [victim] = executor.worker_pids()
        os.kill(victim, signal.SIGSTOP)  # it cannot finish the task before it is killed
        task = program_task(tmp_path, LOOP, fuel=300_000_000)
        async with trio.open_nursery() as nursery:
            results: list = []
            nursery.start_soon(lambda: _append(results, executor.run(task)))
            with trio.fail_after(60):
                while executor.status()["busy"] == 0:  # the task went to the victim
                    await trio.sleep(0.01)
            os.kill(victim, signal.SIGKILL)  # as the kernel's OOM killer would
        [result] = results
        assert (result.status, result.resource, result.attempts) == ("resource_exceeded", "fuel", 2)
        assert executor.worker_pids() and victim not in executor.worker_pids()


async def _append(results: list, awaitable) -> None:
    results.append(await awaitable)


TRIO_THREAD_IDLE_LIFE = 2.0  # seconds before trio retires an idle worker thread (its default 10, patched here)


async def _feed_fifo(fifo, data: bytes, hold: float) -> None:
    """Once a reader (a worker's task) has ``fifo`` open, wait ``hold`` s, then write ``data``."""
    with trio.fail_after(120):
        while True:
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError as exc:
                if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                    raise
                await trio.sleep(0.05)
    try:
        await trio.sleep(hold)  # the task waits for its input meanwhile
        os.write(fd, data)  # small: fits the pipe buffer
    finally:
        os.close(fd)


async def test_a_task_outlives_a_trio_thread_and_idle_workers_are_not_restarted(tmp_path, monkeypatch):
    """A task runs as long as its own limits allow (here ~5 s, blocked on its input), past
    the idle life of the trio thread that spawned its worker; the idle worker beside it
    keeps its process too. Trio's idle life (10 s) is cut to 2 s: an idle thread reads it each time it waits."""
    import trio._core._thread_cache as thread_cache

    assert thread_cache.IDLE_TIMEOUT == 10   # the knob patched below still exists
    monkeypatch.setattr(thread_cache, "IDLE_TIMEOUT", TRIO_THREAD_IDLE_LIFE)
    fifo = tmp_path / "x.tensor"
    os.mkfifo(fifo)
    graph, _ = t.to_graph((t.input("x", "float32", [8]) * 2.0).reduce_sum())
    task = Task("graph", inputs={"x": InputFile(path=str(fifo))}, graph=graph.to_cbor(),
                limits=Limits(wall_seconds=600, cpu_seconds=600))
    async with open_executor(cpus=2, warm=2) as executor:
        await executor.wait_ready()
        pids = sorted(executor.worker_pids())
        assert len(pids) == 2
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_feed_fifo, fifo, tensor_format.encode(np.full(8, 1.5, np.float32)),
                               TRIO_THREAD_IDLE_LIFE + 3)
            result = await executor.run(task)
        assert result.ok, result.message
        assert result.outputs["out0"]["value"] == 24.0 and result.attempts == 1
        assert result.wall_seconds > TRIO_THREAD_IDLE_LIFE
        assert sorted(executor.worker_pids()) == pids


async def test_workers_start_on_demand_and_never_exceed_the_slots(tmp_path):
    """An executor offering 8 slots keeps one warm worker; three tasks waiting on their
    inputs grow it to three busy workers and a spare, not to eight."""
    graph, _ = t.to_graph((t.input("x", "float32", [8]) * 2.0).reduce_sum())
    fifos = [tmp_path / f"x{i}.tensor" for i in range(3)]
    for fifo in fifos:
        os.mkfifo(fifo)
    data = tensor_format.encode(np.full(8, 1.5, np.float32))
    async with open_executor(cpus=8) as executor:
        await executor.wait_ready()
        assert executor.status()["workers"] == 1
        results: list = []
        async with trio.open_nursery() as nursery:
            for fifo in fifos:
                task = Task("graph", inputs={"x": InputFile(path=str(fifo))}, graph=graph.to_cbor())
                nursery.start_soon(lambda task=task: _append(results, executor.run(task)))
            with trio.fail_after(120):
                while executor.status()["busy"] < 3:
                    await trio.sleep(0.05)
            assert executor.status()["workers"] <= 4
            for fifo in fifos:
                nursery.start_soon(_feed_fifo, fifo, data, 0)
        assert [r.outputs["out0"]["value"] for r in results] == [24.0] * 3


async def test_outputs_move_to_their_dir_and_nothing_else_survives(tmp_path):
    root = tmp_path / "scratch"
    async with open_executor(cpus=1, scratch_root=root) as executor:
        ok = await executor.run(program_task(tmp_path, WRITE_OUTPUT), output_dir=tmp_path / "out")
        assert ok.ok, ok.message
        assert tensor_format.read_file(tmp_path / "out" / "x.tensor").tolist() == [7, 8, 9]
        assert ok.outputs["x.tensor"]["path"] == str(tmp_path / "out" / "x.tensor")
        failed = await executor.run(program_task(tmp_path, WRITE_THEN_LOOP, fuel=100_000),
                                    output_dir=tmp_path / "out2")
        assert failed.resource == "fuel" and not (tmp_path / "out2").exists()
        assert list(root.iterdir()) == []  # every scratch dir is gone


async def test_workers_have_no_network():
    async with open_executor(cpus=1) as executor:
        await executor.wait_ready()
        if os.geteuid() == 0:
            assert executor.network_isolation == "netns"
        assert executor.network_isolation != "unknown"


def test_a_confined_process_cannot_reach_a_listening_socket():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    probe = ("import socket, sys\n"
             "from p2pcompute.ops.sandbox import isolate_network\n"
             "isolated = sys.argv[1] == '1' and isolate_network()\n"
             f"try:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2); print(isolated, 'connected')\n"
             "except OSError as e:\n    print(isolated, 'refused', e.errno)\n")
    try:
        plain = subprocess.run([sys.executable, "-c", probe, "0"], capture_output=True, text=True, timeout=30)
        confined = subprocess.run([sys.executable, "-c", probe, "1"], capture_output=True, text=True,
                                  timeout=30)
    finally:
        server.close()
    assert plain.stdout.split()[1] == "connected"
    outcome, verdict = confined.stdout.split()[:2]
    if outcome != "none":
        assert verdict == "refused", confined.stdout
