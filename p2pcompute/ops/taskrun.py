"""One task inside a worker: apply its limits, load inputs, run the graph or program, write outputs.

``run_task`` never raises: every outcome becomes a ``TaskResult``. A
``MemoryError`` (the RLIMIT_AS cap was hit) is reported as
``resource_exceeded: memory`` and asks the executor to recycle the worker, as
its heap may be fragmented. Outputs are written to ``<scratch>/outputs``; the
executor moves them to their destination only if the task succeeded. Small
tensor outputs of graphs travel inline in the result instead, and a graph task
that writes no file never creates its scratch dir: a tiny task does no file
system work at all.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..errors import P2PComputeError, UserError, WireError
from . import loaders, tensor_format
from .graph import INLINE_LIMIT, Graph
from .sandbox import TaskLimits, cpu_seconds
from .tasks import STDERR_MAX, InputFile, Task, TaskResult, tail
from .wasm import WasmRuntime

MAX_OUTPUT_FILES = 1000
STDERR_TAIL = 2000
GRAPH_CACHE = 32
_GRAPHS: OrderedDict[bytes, Graph] = OrderedDict()


def run_task(task: Task, scratch: Path, runtime: WasmRuntime) -> tuple[TaskResult, bool]:
    """(result, recycle the worker?)."""
    wall0, cpu0 = time.perf_counter(), cpu_seconds()
    outputs_dir = scratch / "outputs"
    recycle = False
    limits = TaskLimits(task.limits.memory, task.limits.cpu_seconds, task.limits.output_bytes)
    try:
        limits.apply()
        if task.kind == "graph":
            result = _run_graph(task, outputs_dir)
        else:
            _make_private(outputs_dir)
            os.chdir(scratch)
            result = _run_wasm(task, scratch, outputs_dir, runtime)
    except MemoryError:
        result, recycle = TaskResult.exceeded("memory", task.limits.memory,
                                              f"allocation beyond the {task.limits.memory}-byte memory limit"), True
    except OSError as exc:
        if exc.errno != errno.EFBIG:
            result = TaskResult("failed", f"{exc.strerror}: {exc.filename}")
        else:
            result = TaskResult.exceeded("output_size", task.limits.output_bytes)
    except P2PComputeError as exc:
        result = TaskResult("failed", str(exc))
    except Exception as exc:  # a kernel or parser bug must not take the worker down
        result = TaskResult("failed", f"internal error: {type(exc).__name__}: {exc}")
    finally:
        TaskLimits.restore()
        os.chdir("/")
    if result.ok:
        total = sum(o["bytes"] for o in result.outputs.values())
        if total > task.limits.output_bytes:
            result = TaskResult.exceeded("output_size", task.limits.output_bytes,
                                         f"outputs total {total} bytes")
    if task.kind == "wasm":          # a graph writes no stderr (its operators are silent: np.errstate)
        result.stderr = tail(scratch / "stderr.txt", STDERR_MAX)
    result.wall_seconds = time.perf_counter() - wall0
    result.cpu_seconds = cpu_seconds() - cpu0
    return result, recycle


def _run_graph(task: Task, outputs_dir: Path) -> TaskResult:
    graph = _parsed(task.graph)
    unknown = sorted(set(task.outputs) - set(graph.outputs))
    if unknown:
        raise UserError(f"output(s) {unknown} are not outputs of the graph ({graph.outputs})")
    cache: dict[Path, np.ndarray] = {}
    results = graph.run({name: _load(f, cache) for name, f in task.inputs.items()})
    del cache
    described = {}
    for name, array in results.items():
        fmt = task.outputs.get(name, "tensor")
        data = tensor_format.encode(array) if fmt == "tensor" and array.nbytes <= INLINE_LIMIT else None
        if data is not None and len(data) <= INLINE_LIMIT:
            described[name] = loaders.describe_bytes(f"{name}.tensor", data, array)
            continue
        _make_private(outputs_dir)
        path = loaders.write_output(outputs_dir, name, array, fmt)
        described[name] = loaders.describe(path, array)
    return TaskResult("ok", outputs=described)


def _load(f: InputFile, cache: dict[Path, np.ndarray]) -> np.ndarray:
    if f.data:
        try:
            return tensor_format.decode(f.data, max_bytes=INLINE_LIMIT)
        except WireError as exc:
            raise UserError(f"inline input: {exc}") from None
    return loaders.load_array(f.path, f.band, cache=cache)


def _parsed(cbor: bytes) -> Graph:
    """Parse a graph, reusing the parse of identical bytes (a small LRU, like compiled wasm)."""
    key = hashlib.sha256(cbor).digest()
    graph = _GRAPHS.get(key)
    if graph is None:
        graph = _GRAPHS[key] = Graph.from_cbor(cbor)
        if len(_GRAPHS) > GRAPH_CACHE:
            _GRAPHS.popitem(last=False)
    _GRAPHS.move_to_end(key)
    return graph


def _make_private(directory: Path) -> None:
    directory.parent.mkdir(mode=0o700, exist_ok=True)
    directory.mkdir(mode=0o700, exist_ok=True)


def _run_wasm(task: Task, scratch: Path, outputs_dir: Path, runtime: WasmRuntime) -> TaskResult:
    inputs_dir = scratch / "inputs"
    inputs_dir.mkdir(mode=0o700, exist_ok=True)
    cache: dict[Path, np.ndarray] = {}
    for name, f in task.inputs.items():
        if f.data:
            (inputs_dir / f"{name}.tensor").write_bytes(f.data)
        elif f.as_tensor:
            tensor_format.write_file(inputs_dir / f"{name}.tensor", _load(f, cache))
        else:
            _link_or_copy(Path(f.path), inputs_dir / name)
    cache.clear()
    module = runtime.load(task.program)
    outcome = runtime.run(module, inputs_dir=inputs_dir, outputs_dir=outputs_dir, args=list(task.args),
                          env=dict(task.env), fuel=task.limits.fuel, memory_limit=task.limits.wasm_memory,
                          log_dir=scratch, name=Path(task.program).stem)
    if outcome.out_of_fuel:
        result = TaskResult.exceeded("fuel", task.limits.fuel,
                                     f"ran out of fuel after {outcome.fuel_used} units")
    elif outcome.exit_code != 0:
        stderr = tail(scratch / "stderr.txt", STDERR_TAIL).strip()
        if outcome.memory_bytes + (1 << 16) > task.limits.wasm_memory:
            result = TaskResult.exceeded("wasm_memory", task.limits.wasm_memory,
                                         f"stopped at its memory limit; stderr: {stderr}")
        else:
            how = f"exit code {outcome.exit_code}" if outcome.exit_code is not None else outcome.trap
            result = TaskResult("failed", f"program failed ({how}); stderr: {stderr}",
                                exit_code=outcome.exit_code)
    else:
        result = TaskResult("ok", outputs=_collect(task, outputs_dir), exit_code=0)
    result.fuel_used = outcome.fuel_used
    return result


def _collect(task: Task, outputs_dir: Path) -> dict[str, dict]:
    described: dict[str, dict] = {}
    for name, fmt in task.outputs.items():
        if fmt == "raw":
            path = outputs_dir / name
            if not path.is_file():
                raise UserError(f"the program wrote no /outputs/{name}")
            described[name] = loaders.describe(path)
            continue
        source = outputs_dir / f"{name}.tensor"
        if not source.is_file():
            raise UserError(f"the program wrote no /outputs/{name}.tensor")
        array = tensor_format.read_file(source, max_bytes=task.limits.output_bytes)
        path = loaders.write_output(outputs_dir, name, np.asarray(array), fmt)
        if path != source:
            source.unlink()
        described[name] = loaders.describe(path, array)
    files = [p for p in outputs_dir.iterdir()]
    if len(files) > MAX_OUTPUT_FILES:
        raise UserError(f"the program wrote {len(files)} files, at most {MAX_OUTPUT_FILES} allowed")
    taken = {d["file"] for d in described.values()}
    for path in files:
        if path.name not in taken and path.is_file():
            described[path.name] = loaders.describe(path)
    return described


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
